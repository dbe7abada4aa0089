"""Delivery through a real SMTP server on loopback (aiosmtpd) and the .eml outbox."""

from __future__ import annotations

import email
import email.policy
import io
import re
import smtplib
import socket
import zipfile
from email.message import EmailMessage
from pathlib import Path

import openpyxl
import pytest
from aiosmtpd.controller import Controller

from gaibao.settings import Settings
from reports.config import ScoreWeights, Thresholds, load_recipients
from reports.delivery import deliver_pack, send_receipts
from reports.mail import Attachment, OutboxSender, SmtpSender, build_message, message_bytes
from reports.pack import build_pack
from reports.sample import HOSTILE_SCRIPT, load_into_warehouse, sample_inputs
from reports.schema import delivery_log
from warehouse.store import Warehouse

P = "2018-06"
XLSX = ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet")


class Inbox:
    """An aiosmtpd handler keeping what arrives; can answer 4xx/5xx to the first N messages."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []
        self.calls = 0
        self.fail_next: list[str] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001 - aiosmtpd's signature
        self.calls += 1
        if self.fail_next:
            return self.fail_next.pop(0)
        self.messages.append((list(envelope.rcpt_tos), bytes(envelope.original_content or envelope.content)))
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield inbox, controller.port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("deliveryhome")
    wh = Warehouse(f"sqlite:///{home / 'warehouse.db'}", home)
    wh.upgrade()
    inputs = sample_inputs(P)
    load_into_warehouse(wh, inputs)
    result = build_pack(wh.engine, P, home / "reports" / P, Thresholds(), ScoreWeights())
    settings = Settings(
        home=home, warehouse_url=f"sqlite:///{home / 'warehouse.db'}", mail_from="改薄办 <gaibao@example.org>"
    )
    yield wh, inputs, result, settings
    wh.close()


@pytest.fixture
def wh_fresh_log(built):
    """The shared warehouse with an empty delivery log (each test starts as if nothing was sent)."""
    wh = built[0]
    with wh.engine.begin() as conn:
        conn.execute(delivery_log.delete())
    return built


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)


def readable_text(msg: EmailMessage) -> str:
    """The body parts and every attachment as text (XLSX: its XML parts)."""
    chunks = [str(msg["Subject"])]
    for part in msg.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True) or b""
        if part.get_content_type() == "/".join(XLSX):
            with zipfile.ZipFile(io.BytesIO(payload)) as z:
                chunks += [z.read(n).decode("utf-8", "replace") for n in z.namelist() if n.endswith(".xml")]
        elif part.get_content_maintype() == "text":
            chunks.append(part.get_content())
    return "\n".join(chunks)


def test_chinese_attachment_name_is_rfc2231_and_survives_a_parse() -> None:
    name = "蚌埠市全面改薄联席会议材料2018年12月.xlsx"
    msg = build_message(
        "a@example.org",
        ["b@example.org"],
        "主题：联席会议材料",
        "<p>正文</p>",
        [Attachment(name, b"PK\x03\x04", *XLSX)],
    )
    raw = message_bytes(msg)
    assert raw.isascii()  # 7bit on the wire: any server takes it
    assert b"filename*" in raw and b"utf-8''" in raw
    back = parse(raw)
    assert [a.get_filename() for a in back.iter_attachments()] == [name]
    assert back["Subject"] == "主题：联席会议材料"


def test_pack_and_letters_arrive_scoped_over_real_smtp(wh_fresh_log, smtp_server, tmp_path: Path) -> None:
    wh, inputs, result, settings = wh_fresh_log
    inbox, port = smtp_server
    recipients_file = tmp_path / "recipients.yaml"
    recipients_file.write_text(
        "meeting:\n"
        "  - {name: 联席会议办公室, email: office@example.org}\n"
        "  - {name: 教育厅, email: [jyt@example.org]}\n"
        "counties:\n"
        '  "340102": {name: 瑶海区教育局, email: yaohai@example.org}\n'
        'county_address_pattern: "jyj-{county_code}@example.org"\n',
        encoding="utf-8",
    )
    sender = SmtpSender("127.0.0.1", port, attempts=2, backoff_s=0.01)
    report = deliver_pack(result, wh, settings, sender=sender, recipients=load_recipients(recipients_file))
    assert report.failed == []
    assert len(report.sent) == 2 + 6 and len(inbox.messages) == 8
    by_rcpt = {tuple(r): parse(raw) for r, raw in inbox.messages}
    assert set(by_rcpt) == {("office@example.org",), ("jyt@example.org",), ("yaohai@example.org",)} | {
        (f"jyj-{c}@example.org",) for c in inputs.divisions["county_code"] if c != "340102"
    }

    pack = by_rcpt[("office@example.org",)]
    assert pack["Subject"] == "全面改薄联席会议材料（2018年6月）"
    names = {a.get_filename(): a for a in pack.iter_attachments()}
    assert {
        "全面改薄联席会议材料2018年6月.xlsx",
        "全面改薄项目进展公示2018年6月.csv",
        "全面改薄联席会议材料2018年6月.html",
    } <= set(names)
    wb = openpyxl.load_workbook(io.BytesIO(names["全面改薄联席会议材料2018年6月.xlsx"].get_content()))
    assert "县区排名" in wb.sheetnames
    html = pack.get_body(("html",))
    assert "cid:county-chart" in html.get_content() and HOSTILE_SCRIPT not in html.get_content()
    inline = [p for p in pack.walk() if p["Content-ID"] == "<county-chart>"]
    assert (
        inline
        and inline[0].get_content_type() == "image/png"
        and inline[0].get_content_disposition() == "inline"
    )

    div = inputs.divisions
    facts = inputs.facts
    for code, name in zip(div["county_code"], div["county_name"], strict=True):
        rcpt = ("yaohai@example.org",) if code == "340102" else (f"jyj-{code}@example.org",)
        letter = by_rcpt[rcpt]
        assert name in letter["Subject"]
        files = [a.get_filename() for a in letter.iter_attachments()]
        assert files == [f"{name}全面改薄核查通知2018年6月.xlsx"]
        openpyxl.load_workbook(io.BytesIO(next(letter.iter_attachments()).get_content()))
        text = readable_text(letter)
        others = div[div["county_code"] != code]
        words = [
            *others["county_code"],
            *others["county_name"],
            *facts.loc[facts["county_code"] != code, "project_id"],
            *facts.loc[facts["county_code"] != code, "school_name"],
        ]
        leaked = [w for w in set(words) if w in text]
        assert leaked == [], (code, leaked)


def test_rerun_sends_nothing_twice_unless_resend(wh_fresh_log, smtp_server) -> None:
    wh, _, result, settings = wh_fresh_log
    inbox, port = smtp_server
    sender = SmtpSender("127.0.0.1", port, attempts=1)
    recipients = load_recipients(None)  # the demo default: 2 meeting members, every county by pattern
    first = deliver_pack(result, wh, settings, sender=sender, recipients=recipients)
    n = len(first.sent)
    assert n == 2 + 6
    second = deliver_pack(result, wh, settings, sender=sender, recipients=recipients)
    assert second.sent == [] and len(second.skipped) == n
    third = deliver_pack(result, wh, settings, sender=sender, recipients=recipients, resend=True)
    assert len(third.sent) == n
    assert len(inbox.messages) == 2 * n
    logged = wh.query("SELECT count(*) AS n FROM delivery_log WHERE resent = :t", {"t": True})
    assert int(logged["n"].iloc[0]) >= n


def test_transient_smtp_errors_are_retried_permanent_ones_are_not(smtp_server) -> None:
    inbox, port = smtp_server
    msg = build_message("a@example.org", ["b@example.org"], "测试", "<p>正文</p>")
    inbox.fail_next = ["451 4.3.0 try again later", "421 4.7.0 busy"]
    SmtpSender("127.0.0.1", port, attempts=4, backoff_s=0.01).send(msg, ["b@example.org"], "t/1")
    assert inbox.calls == 3 and len(inbox.messages) == 1
    inbox.fail_next = ["550 5.7.1 rejected"]
    with pytest.raises(smtplib.SMTPDataError):
        SmtpSender("127.0.0.1", port, attempts=4, backoff_s=0.01).send(msg, ["b@example.org"], "t/2")
    assert inbox.calls == 4


def test_connection_refused_is_retried_then_reported(wh_fresh_log) -> None:
    wh, _, result, settings = wh_fresh_log
    port = free_port()  # nothing listens here
    sender = SmtpSender("127.0.0.1", port, attempts=2, backoff_s=0.01, timeout_s=2)
    report = deliver_pack(result, wh, settings, sender=sender, recipients=load_recipients(None), resend=True)
    assert report.sent == [] and len(report.failed) == 2 + 6
    assert "Connection refused" in report.failed[0]["error"] or "refused" in report.failed[0]["error"].lower()


def test_receipts_to_the_outbox_once_per_set_of_files(wh_fresh_log, tmp_path: Path) -> None:
    wh, inputs, _, settings = wh_fresh_log
    outbox = tmp_path / "outbox"
    sender = OutboxSender(outbox)
    report = send_receipts(P, wh, settings, sender=sender, recipients=load_recipients(None))
    codes = {s["county_code"] for s in report.sent}
    missing, refused = inputs.divisions["county_code"].iloc[-1], inputs.divisions["county_code"].iloc[-2]
    assert missing not in codes and refused in codes and len(codes) == 5
    emls = sorted(outbox.rglob("*.eml"))
    assert len(emls) == 5 and all(p.parent.name == refused or p.parent.parent.name == "receipt" for p in emls)
    texts = {}
    for path in emls:
        msg = parse(path.read_bytes())
        code = path.parent.name
        texts[code] = readable_text(msg)
        assert msg["To"] == f"jyj-{code}@example.org"
        for other in inputs.divisions["county_code"]:
            if other != code:
                assert other not in texts[code]
    assert "报告期与本次报送不符" in texts[refused] and "已退回" in texts[refused]
    first = inputs.divisions["county_code"].iloc[0]
    assert "NEGATIVE_INVEST" in texts[first] and "REGRESSION" in texts[first]
    again = send_receipts(P, wh, settings, sender=sender, recipients=load_recipients(None))
    assert again.sent == [] and len(again.skipped) == 5


def test_outbox_is_the_default_transport(wh_fresh_log, tmp_path: Path) -> None:
    wh, _, result, settings = wh_fresh_log
    local = settings.model_copy(update={"home": tmp_path})
    report = deliver_pack(result, wh, local, recipients=load_recipients(None), resend=True)
    assert len(report.sent) == 8
    paths = [Path(s["location"]) for s in report.sent]
    assert all(p.is_file() and p.is_relative_to(tmp_path / "outbox") for p in paths)
    msg = parse(paths[0].read_bytes())
    assert msg["X-Gaibao-Recipients"] == report.sent[0]["recipient"]


# -- TLS and login ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (IP SAN) and its key."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    d = tmp_path_factory.mktemp("tls")
    cert_path, key_path = d / "cert.pem", d / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class Login:
    """An aiosmtpd authenticator accepting one user and password."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user.encode(), password.encode()
        self.seen: list[bytes] = []

    def __call__(self, server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN204
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            self.user,
            self.password,
        )
        self.seen.append(auth_data.login)
        return AuthResult(success=ok, handled=False)


@pytest.mark.filterwarnings(
    "ignore:Requiring AUTH while not requiring TLS"
)  # implicit TLS: aiosmtpd cannot tell
@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_smtp_over_tls_with_login(tls_files: tuple[Path, Path], security: str) -> None:
    import ssl

    from pydantic import SecretStr

    cert, key = tls_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    inbox, login = Inbox(), Login("gaibao", "pass-secret")
    port = free_port()
    if security == "starttls":
        controller = Controller(
            inbox,
            hostname="127.0.0.1",
            port=port,
            tls_context=server_ctx,
            require_starttls=True,
            authenticator=login,
            auth_required=True,
            auth_require_tls=True,
            auth_exclude_mechanism=["LOGIN"],
        )
    else:
        controller = Controller(
            inbox,
            hostname="127.0.0.1",
            port=port,
            ssl_context=server_ctx,
            authenticator=login,
            auth_required=True,
            auth_require_tls=False,
            auth_exclude_mechanism=["LOGIN"],
        )
    controller.start()
    try:
        client_ctx = ssl.create_default_context(cafile=str(cert))
        sender = SmtpSender(
            "127.0.0.1",
            port,
            security,
            user="gaibao",
            password=SecretStr("pass-secret"),
            ssl_context=client_ctx,
            attempts=1,
            timeout_s=10,
        )
        msg = build_message("a@example.org", ["b@example.org"], "加密发送", "<p>正文</p>")
        sender.send(msg, ["b@example.org"], "tls/1")
        assert len(inbox.messages) == 1 and login.seen == [b"gaibao"]
        wrong = SmtpSender(
            "127.0.0.1",
            port,
            security,
            user="gaibao",
            password=SecretStr("x"),
            ssl_context=client_ctx,
            attempts=1,
            timeout_s=10,
        )
        with pytest.raises(smtplib.SMTPAuthenticationError):
            wrong.send(msg, ["b@example.org"], "tls/2")
        assert len(inbox.messages) == 1
    finally:
        controller.stop()


def test_oversized_attachments_stay_on_disk_and_the_mail_says_so(
    wh_fresh_log, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import reports.delivery as delivery

    wh, _, result, settings = wh_fresh_log
    monkeypatch.setattr(delivery, "MAX_ATTACHMENT_BYTES", result.files["html"].stat().st_size - 1)
    sender = OutboxSender(tmp_path / "outbox")
    report = deliver_pack(result, wh, settings, sender=sender, recipients=load_recipients(None))
    pack = parse(Path(next(s for s in report.sent if s["kind"] == "pack")["location"]).read_bytes())
    names = {a.get_filename() for a in pack.iter_attachments()}
    assert result.files["html"].name not in names and result.files["xlsx"].name in names
    assert "过大未随邮件发送" in pack.get_body(("html",)).get_content()


def test_receipts_rendered_in_worker_processes_are_the_same_receipts(wh_fresh_log, monkeypatch) -> None:
    """At national scale receipts are rendered by chunks of counties in the worker processes:
    chunked and parallel rendering gives exactly the in-process receipts, each county's own."""
    import pandas as pd
    import sqlalchemy as sa

    import reports.delivery as delivery

    wh, inputs, _, _ = wh_fresh_log
    with wh.engine.connect() as conn:
        subs = pd.read_sql(sa.text("SELECT * FROM submission WHERE period = :p"), conn, params={"p": P})
        issues = pd.read_sql(sa.text("SELECT * FROM dq_issue WHERE period = :p"), conn, params={"p": P})
    here = delivery.receipt_messages(P, subs, issues, inputs.divisions, processes=0)
    monkeypatch.setattr(delivery, "RECEIPTS_PER_CHUNK", 2)  # several chunks even for a few counties
    pooled = delivery.receipt_messages(P, subs, issues, inputs.divisions, processes=2)
    from tasks import readpool

    assert readpool._pool is not None and not readpool._disabled  # the workers did the rendering
    assert len(here) == 5

    def strip_time(html: str) -> str:  # the generated-at minute may tick between the two calls
        return re.sub(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", "T", html)

    assert {c: (k, s, strip_time(h)) for c, (k, s, h) in pooled.items()} == {
        c: (k, s, strip_time(h)) for c, (k, s, h) in here.items()
    }
    for code, (_, _, html) in pooled.items():
        for other in here:
            if other != code:
                assert other not in html
