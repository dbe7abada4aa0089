"""Nothing fails silently: the monthly pack flow's failure notice, read from a real SMTP server on
loopback (GAIBAO_MAIL_MODE=smtp)."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gaibao.settings import get_settings
from reports.sample import load_into_warehouse, sample_inputs
from warehouse.store import Warehouse

ENGINEERS = ["de1@example.org", "de2@example.org"]
P = "2018-06"


class SmtpInbox:
    """An aiosmtpd handler keeping what arrives."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []
        self.arrived = threading.Event()

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001, N802 - aiosmtpd's names
        self.messages.append((list(envelope.rcpt_tos), bytes(envelope.original_content or envelope.content)))
        self.arrived.set()
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp(gaibao_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmtpInbox]:
    """A real SMTP server on loopback, and the settings that send the notices to it."""
    from aiosmtpd.controller import Controller

    inbox = SmtpInbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port())
    controller.start()
    monkeypatch.setenv("GAIBAO_MAIL_MODE", "smtp")
    monkeypatch.setenv("GAIBAO_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("GAIBAO_SMTP_PORT", str(controller.port))
    monkeypatch.setenv("GAIBAO_SMTP_SECURITY", "none")
    monkeypatch.setenv("GAIBAO_DATA_ENGINEERS", json.dumps(ENGINEERS))
    get_settings.cache_clear()
    try:
        yield inbox
    finally:
        controller.stop()
        get_settings.cache_clear()


def _messages(inbox: SmtpInbox) -> list[tuple[list[str], email.message.EmailMessage, str]]:
    out = []
    for rcpt, raw in inbox.messages:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        out.append((rcpt, msg, msg.get_body(("plain",)).get_content()))
    return out


@pytest.mark.slow
@pytest.mark.xdist_group("prefect")
def test_pack_flow_with_a_missing_recipients_file_pages_the_engineers(
    gaibao_home: Path, smtp: SmtpInbox, prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.pack import monthly_meeting_pack

    wh = Warehouse.from_settings(get_settings())
    wh.upgrade()
    load_into_warehouse(wh, sample_inputs(P, n_counties=4, projects_per_county=4))
    wh.close()
    missing = gaibao_home / "etc" / "recipients.yaml"
    monkeypatch.setenv("GAIBAO_RECIPIENTS", str(missing))
    get_settings.cache_clear()

    with pytest.raises(Exception) as raised:
        monthly_meeting_pack(period=P, send=True)

    assert smtp.arrived.wait(30), "no failure notice reached the SMTP server"
    (rcpt, msg, body), *others = _messages(smtp)
    assert not others, [m["Subject"] for _, m, _ in others]  # the notice only: no pack mail went out
    assert sorted(rcpt) == ENGINEERS and msg["X-Gaibao-Run-State"] == "Failed"
    assert msg["Subject"] == f"【gaibao】运行失败：monthly-meeting-pack {P}，步骤 deliver_pack"
    assert "失败步骤：deliver_pack（任务运行 deliver_pack-" in body
    assert f"报告期：{P}" in body
    assert f"错误：{type(raised.value).__name__}" in body and "recipients.yaml" in body
    assert "重跑本期材料" in body and "入库" not in body.split("-- English --")[0]


@pytest.mark.slow
@pytest.mark.xdist_group("prefect")
def test_unreachable_sources_page_the_engineers_once_per_run(
    gaibao_home: Path, smtp: SmtpInbox, prefect_harness: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two counties publish through an HTTP platform that answers 503 every time, a third through
    a port nobody listens on; a fourth sends its file to its inbox folder. After the retries, one
    message lists the three with their source and last error; the fourth county loads."""
    from filebuilders import progress_rows, write_return
    from servers import FaultyHttpServer

    from flows.nightly import nightly_ingest

    period, good = "2018-12", "340321"
    failing, refused_port = ["340302", "340303"], "340304"
    inbox = gaibao_home / "inbox" / good
    inbox.mkdir(parents=True)
    write_return(inbox / f"{good}_progress_{period}.csv", progress_rows(3, county_code=good, period=period))
    closed = _free_port()  # bound and released: nothing listens there
    with FaultyHttpServer() as platform:
        entries = []
        for county in failing:
            platform.add_route(f"/api/{county}", [[]])
            platform.fail(f"/api/{county}", "503", times=None)
            entries.append(
                f'"{county}":\n  type: http\n  url: "{platform.url("/api/{county_code}")}?period={{period}}"\n'
            )
        entries.append(
            f'"{refused_port}":\n  type: http\n  url: "http://127.0.0.1:{closed}/api/{{county_code}}"\n'
        )
        sources = gaibao_home / "sources.yaml"
        sources.write_text("".join(entries), encoding="utf-8")
        monkeypatch.setenv("GAIBAO_SOURCES", str(sources))
        monkeypatch.setenv("GAIBAO_FETCH_RETRIES", "2")
        monkeypatch.setenv("GAIBAO_FETCH_BACKOFF_S", "0.1")
        monkeypatch.setenv("GAIBAO_FETCH_TIMEOUT_S", "5")
        get_settings.cache_clear()
        summary = nightly_ingest(period=period, counties=[good, *failing, refused_port])
        hits = {county: platform.hits(f"/api/{county}") for county in failing}

    assert sorted(summary["unreachable"]) == sorted([*failing, refused_port])
    assert all(n == 3 for n in hits.values()), hits  # 1 + GAIBAO_FETCH_RETRIES attempts each
    assert smtp.arrived.wait(30)
    notices = _messages(smtp)
    alerts = [(r, m, b) for r, m, b in notices if m["X-Gaibao-Alert"] == "unreachable-sources"]
    assert len(alerts) == 1, [m["Subject"] for _, m, _ in notices]
    rcpt, msg, body = alerts[0]
    assert sorted(rcpt) == ENGINEERS
    assert msg["Subject"] == f"【gaibao】数据源无法访问：nightly-ingest {period}，3 个县区"
    for county in [*failing, refused_port]:
        assert f"县区：{county}　报告期：{period}" in body
    assert body.count(f"数据源：http:{platform.url('/api/{county_code}')}?period={{period}}") == len(failing)
    assert "尝试次数：3" in body and "503" in body
    assert f"127.0.0.1:{closed}" in body
    assert good not in body.split("-- English --")[0].split("gaibao ingest")[0]
    with Warehouse.from_settings(get_settings()) as wh:
        loaded = wh.query("SELECT county_code, status FROM submission")
    assert loaded.to_dict("records") == [{"county_code": good, "status": "accepted"}]
