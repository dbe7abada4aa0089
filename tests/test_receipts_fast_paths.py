"""The receipts' fast paths give exactly what the general ones give: the same message bytes as the
``email`` package's objects and generator, the same HTML as sections rendered from pandas slices,
and every receipt logged (committed, seen from another connection) before the next goes out."""

from __future__ import annotations

import itertools
import random
from email.generator import BytesGenerator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

import reports.delivery as delivery
import reports.mail as mail
from gaibao.settings import Settings
from reports.config import load_recipients
from reports.mail import OutboxSender, build_html_message, html_message_bytes, message_bytes
from reports.render import ReceiptContext, render
from reports.sample import HOSTILE_SCRIPT, load_into_warehouse, sample_inputs
from reports.sections import Section
from warehouse.store import Warehouse

P = "2018-06"


def test_html_message_bytes_are_the_legacy_message_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Date and Message-ID come from the clock; fixed here. The Message-ID and both paths' boundaries
    # draw from one private, seeded generator (not the process-wide ``random``, which other threads
    # of a test worker may draw from meanwhile), so both paths draw the same numbers in the same
    # order (the boundary last).
    import email.generator

    draws = random.Random()
    monkeypatch.setattr(email.generator, "random", draws)
    monkeypatch.setattr(mail, "random", draws)
    monkeypatch.setattr(mail, "formatdate", lambda localtime=False: "Sat, 28 Nov 2026 08:56:47 -0000")
    monkeypatch.setattr(mail, "make_msgid", lambda domain=None: f"<{draws.getrandbits(64)}@{domain}>")
    subjects = [
        "模拟330202县全面改薄月报回执（2018年12月）",
        "short",
        "x" * 200,
        "混合 mixed 文本 " * 12,
        "",
        "a  b\tc",
    ]
    htmls = [
        "<p>你好</p>",
        "",
        "<html><title>" + "行" * 5000 + "</title></html>",
        "--===============\n" * 3,
        "<br>a\r\nb</p>\n\n\n<p>c &amp; d</p>",
        f"<p>{HOSTILE_SCRIPT}</p>",
    ]
    senders = ["gaibao@localhost", "改薄办 <gaibao@example.org>", "x"]
    tos = [["jyj-330202@example.org"], ["a@b.c", "名字 <d@e.f>"]]
    extras = [
        (None, None),
        ({"X-Gaibao-Pack": "abc"}, [("X-Gaibao-Recipients", "jyj-330202@example.org")]),
        ({"X-Note": "值值 note"}, [("X-Gaibao-Recipients", "名字 <d@e.f>"), ("X-Other", "1")]),
    ]
    cases = list(itertools.product(subjects, htmls, senders, tos, extras))
    for seed, (subject, html, sender, to, (headers, after)) in enumerate(cases):
        draws.seed(seed)
        msg = build_html_message(sender, to, subject, html, headers)
        for name, value in after or []:
            msg[name] = value
        expected = message_bytes(msg)
        draws.seed(seed)
        assert html_message_bytes(sender, to, subject, html, headers, set_after=after) == expected, (
            subject,
            html[:40],
            sender,
            to,
            headers,
        )
    assert len(cases) == 648


def test_boundary_is_drawn_and_checked_as_the_generator_does(monkeypatch: pytest.MonkeyPatch) -> None:
    import email.generator

    draws = random.Random()  # private and seeded: other threads' draws cannot interleave
    monkeypatch.setattr(email.generator, "random", draws)
    monkeypatch.setattr(mail, "random", draws)
    draws.seed(11)
    first = BytesGenerator._make_boundary()  # the boundary that seed draws first
    dash = b"--" + first.encode()
    clashing = b"x\n" + dash + b"\nmore\n" + dash + b".0--\n"  # the first two candidates clash
    inside = b"x " + dash + b" y\n"  # not on a line of its own: no clash
    crlf = b"x\r\n" + dash + b"\r\n"  # the generator's "$" is before a "\n" only: no clash either
    for text, expected in ((clashing, first + ".1"), (inside, first), (crlf, first), (b"", first)):
        draws.seed(11)
        assert BytesGenerator._make_boundary(text) == expected
        draws.seed(11)
        assert mail._make_boundary(text) == expected


@pytest.fixture(scope="module")
def sample_warehouse(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("receiptshome")
    wh = Warehouse(f"sqlite:///{home / 'warehouse.db'}", home)
    wh.upgrade()
    inputs = sample_inputs(P)
    load_into_warehouse(wh, inputs)
    yield wh, inputs
    wh.close()


def _section_receipts(job: delivery._ReceiptJob) -> dict[str, str]:
    """The receipts' HTML as rendered from a pandas slice per county and section (the reference)."""
    table, table_at = job.table
    rejected, rej_at = job.rejected
    warnings, warn_at = job.warnings
    out = {}
    for code, (start, end) in table_at.items():
        name = job.names[code]
        r0, r1 = rej_at.get(code, (0, 0))
        w0, w1 = warn_at.get(code, (0, 0))
        ctx = ReceiptContext(
            title=f"{name}全面改薄月报回执（{job.label}）",
            county_name=name,
            period_label=job.label,
            generated_at=job.generated,
            submissions=Section(
                "subs", "本期收到的文件", delivery.RECEIPT_SUB_COLUMNS, table.iloc[start:end]
            ),
            rejected=Section("rejected", "被拒收的数据行", delivery.LETTER_ROW_COLUMNS, rejected.iloc[r0:r1]),
            warnings=Section("warnings", "需要说明的预警", delivery.LETTER_ROW_COLUMNS, warnings.iloc[w0:w1]),
            list_limit=job.list_limit,
        )
        out[code] = render("receipt.html", ctx)
    return out


@pytest.mark.parametrize("list_limit", [0, 1, 50])
def test_receipts_from_display_cells_are_the_section_receipts(
    sample_warehouse, monkeypatch: pytest.MonkeyPatch, list_limit: int
) -> None:
    from tasks import readpool

    wh, inputs = sample_warehouse
    with wh.engine.connect() as conn:
        subs = pd.read_sql(sa.text("SELECT * FROM submission WHERE period = :p"), conn, params={"p": P})
        issues = pd.read_sql(sa.text("SELECT * FROM dq_issue WHERE period = :p"), conn, params={"p": P})
    jobs: list[delivery._ReceiptJob] = []
    monkeypatch.setattr(readpool, "imap_in_processes", lambda fn, items, processes: jobs.extend(items) or [])
    monkeypatch.setattr(delivery, "RECEIPTS_PER_CHUNK", 2)  # several chunks, each its own slices
    mail_spec = ("改薄办 <gaibao@example.org>", {}, True, None)
    list(delivery._receipt_chunks(P, subs, issues, inputs.divisions, list_limit, 0, mail_spec))
    assert len(jobs) > 1
    fast, reference = {}, {}
    for job in jobs:
        fast.update({code: html for code, (_, _, html, _) in delivery._render_receipts(job).items()})
        reference.update(_section_receipts(job))
    assert fast == reference and len(fast) == 5
    cut = [code for code, html in fast.items() if f"此处列出前{list_limit}条" in html]
    assert bool(cut) == (list_limit < 50)  # the short limits cut some county's list
    assert all(HOSTILE_SCRIPT not in html for html in fast.values())


def test_rows_section_refuses_a_limit_beyond_the_rows_it_kept() -> None:
    from reports.sections import RowsSection

    rows = [[("a", False)], [("b", False)]]
    section = RowsSection("k", "标题", ["列"], rows, n_rows=5)
    assert section.html_rows(2) == rows and section.html_rows(1) == rows[:1]
    for limit in (None, 3, -1):
        with pytest.raises(ValueError):
            section.html_rows(limit)
    whole = RowsSection("k", "标题", ["列"], rows, n_rows=2)
    assert whole.html_rows(None) == rows and whole.html_rows(-1) == rows[:-1]


def test_each_receipt_is_logged_before_the_next_goes_out(
    warehouse_url: str, gaibao_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL through the prepared INSERT of the log's own psycopg cursor, on SQLite through
    SQLAlchemy Core: at each send, another connection already sees every earlier receipt logged."""
    wh = Warehouse(warehouse_url, gaibao_home)
    wh.upgrade()
    load_into_warehouse(wh, sample_inputs(P))
    prepared_rows = []
    real_insert = delivery._PreparedLog.insert
    monkeypatch.setattr(
        delivery._PreparedLog, "insert", lambda self, row: prepared_rows.append(row) or real_insert(self, row)
    )

    class CheckingOutbox(OutboxSender):
        def __init__(self, outbox_dir: Path) -> None:
            super().__init__(outbox_dir)
            self.logged_before: list[int] = []

        def send_raw(self, raw: bytes, sender: str, recipients: list[str], key: str) -> str:
            with wh.engine.connect() as other:
                n = other.execute(
                    sa.text("SELECT count(*) FROM delivery_log WHERE kind = 'receipt'")
                ).scalar()
            self.logged_before.append(n)
            return super().send_raw(raw, sender, recipients, key)

    sender = CheckingOutbox(tmp_path / "outbox")
    settings = Settings(home=gaibao_home, warehouse_url=warehouse_url)
    try:
        report = delivery.send_receipts(P, wh, settings, sender=sender, recipients=load_recipients(None))
        assert len(report.sent) == 5 and not report.failed
        assert sender.logged_before == [0, 1, 2, 3, 4]
        assert len(prepared_rows) == (5 if wh.dialect == "postgresql" else 0)
        logged = wh.query(
            "SELECT message_key, recipient, period, kind, county_code, subject, transport, location, resent, "
            "sent_at FROM delivery_log WHERE kind = 'receipt' ORDER BY delivery_id"
        )
        assert logged["county_code"].tolist() == [s["county_code"] for s in report.sent]
        assert logged["recipient"].tolist() == [s["recipient"] for s in report.sent]
        assert logged["location"].tolist() == [s["location"] for s in report.sent]
        assert set(logged["period"]) == {P} and set(logged["transport"]) == {"outbox"}
        assert not logged["resent"].astype(bool).any() and logged["sent_at"].notna().all()
        assert all(s.endswith(f"全面改薄月报回执（{P[:4]}年{int(P[5:])}月）") for s in logged["subject"])
        assert all(
            k.startswith(f"{P}/receipt/{c}/")
            for k, c in zip(logged["message_key"], logged["county_code"], strict=True)
        )
        again = delivery.send_receipts(P, wh, settings, sender=sender, recipients=load_recipients(None))
        assert again.sent == [] and len(again.skipped) == 5
        if wh.dialect == "postgresql":
            with wh.engine.connect() as conn:  # the log connection went back to the pool as it came
                assert conn.exec_driver_sql("SHOW synchronous_commit").scalar() == "on"
    finally:
        wh.close()
