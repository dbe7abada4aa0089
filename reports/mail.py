"""Mail: building messages and the two senders behind one interface.

- :class:`SmtpSender` talks to an SMTP server (none / STARTTLS / SSL, optional login with the
  password as ``SecretStr``), retrying transient failures (4xx replies, dropped connections).
- :class:`OutboxSender` writes ``.eml`` files under ``$GAIBAO_HOME/outbox/`` (the default), so
  the demo needs no mail server.

Messages are built with the standard library's ``email`` package under ``policy.SMTP``: Chinese
subjects are RFC 2047 encoded and attachment names RFC 2231 encoded (``filename*=utf-8''...``),
so they survive a parse with ``email.policy.default``.
"""

from __future__ import annotations

import base64
import email.policy
import functools
import hashlib
import logging
import random
import re
import smtplib
import socket
import ssl
import sys
from dataclasses import dataclass
from email.header import Header
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from gaibao.settings import Settings
from reports.plaintext import plain_text

log = logging.getLogger(__name__)

# 7bit transfer encoding for every part (base64 / quoted-printable), CRLF line ends: any SMTP
# server takes it, 8BITMIME or not.
MESSAGE_POLICY = email.policy.SMTP.clone(cte_type="7bit")

COMPAT_POLICY = email.policy.compat32.clone(linesep="\r\n")

XLSX_MIME = ("application", "vnd.openxmlformats-officedocument.spreadsheetml.sheet")


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    maintype: str
    subtype: str

    @classmethod
    def for_file(cls, path: Path, filename: str | None = None) -> Attachment:
        name = filename or path.name
        suffix = path.suffix.lower()
        mime = {
            ".xlsx": XLSX_MIME,
            ".csv": ("text", "csv"),
            ".html": ("text", "html"),
            ".png": ("image", "png"),
            ".json": ("application", "json"),
        }.get(suffix, ("application", "octet-stream"))
        return cls(name, path.read_bytes(), *mime)


def _plain_text(html: str) -> str:
    """The text/plain alternative: tables as aligned columns (:mod:`reports.plaintext`)."""
    return plain_text(html)


def build_message(
    sender: str,
    to: list[str],
    subject: str,
    html: str,
    attachments: list[Attachment] | None = None,
    inline_images: dict[str, bytes] | None = None,
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    """A multipart message: text + HTML alternative (inline PNGs by Content-ID), then attachments."""
    msg = EmailMessage(policy=MESSAGE_POLICY)
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(localtime=False)
    domain = sender.rsplit("@", 1)[-1] if "@" in sender else "localhost"
    msg["Message-ID"] = make_msgid(domain=re.sub(r"[^A-Za-z0-9.-]", "", domain) or "localhost")
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(_plain_text(html), subtype="plain", charset="utf-8")
    msg.add_alternative(html, subtype="html", charset="utf-8")
    if inline_images:
        html_part = msg.get_payload()[1]
        for cid, png in inline_images.items():
            html_part.add_related(
                png,
                maintype="image",
                subtype="png",
                cid=f"<{cid}>",
                disposition="inline",
                filename=f"{cid}.png",
            )
    for att in attachments or []:
        msg.add_attachment(att.content, maintype=att.maintype, subtype=att.subtype, filename=att.filename)
    return msg


def build_html_message(
    sender: str, to: list[str], subject: str, html: str, headers: dict[str, str] | None = None
) -> Message:
    """A text + HTML alternative message without attachments, built with the standard library's
    legacy (``compat32``) classes: the same MIME (base64 UTF-8 parts, RFC 2047 subject) about
    three times quicker than :func:`build_message`, which matters for a night's thousands of
    receipts (measured 4.2 ms against 1.2 ms a message)."""
    msg = MIMEMultipart("alternative")
    msg["Subject"] = Header(subject, "utf-8").encode()
    msg["From"] = _ascii_address(sender)
    msg["To"] = ", ".join(_ascii_address(a) for a in to)
    msg["Date"] = formatdate(localtime=False)
    domain = sender.rsplit("@", 1)[-1] if "@" in sender else "localhost"
    msg["Message-ID"] = make_msgid(domain=re.sub(r"[^A-Za-z0-9.-]", "", domain) or "localhost")
    for k, v in (headers or {}).items():
        msg[k] = Header(v, "utf-8").encode() if not v.isascii() else v
    msg.attach(MIMEText(_plain_text(html), "plain", "utf-8"))
    msg.attach(MIMEText(html, "html", "utf-8"))
    return msg


def html_message_bytes(
    sender: str,
    to: list[str],
    subject: str,
    html: str,
    headers: dict[str, str] | None = None,
    set_after: list[tuple[str, str]] | None = None,
) -> bytes:
    """``message_bytes(build_html_message(sender, to, subject, html, headers))``, each
    ``(name, value)`` of ``set_after`` having been set on the message (``msg[name] = value``)
    before: the same bytes (same headers folded by the same policy, the same base64 parts, a
    random boundary drawn and checked as the standard generator does), written directly instead
    of through the ``email`` package's object tree and generator: a national night's receipts
    measured 0.55 ms a message against 1.7 ms (the largest part of a receipt's rendering)."""
    domain = sender.rsplit("@", 1)[-1] if "@" in sender else "localhost"
    fields = [
        ("Subject", Header(subject, "utf-8").encode()),
        ("From", _ascii_address(sender)),
        ("To", ", ".join(_ascii_address(a) for a in to)),
        ("Date", formatdate(localtime=False)),
        ("Message-ID", make_msgid(domain=re.sub(r"[^A-Za-z0-9.-]", "", domain) or "localhost")),
    ]
    fields += [(k, Header(v, "utf-8").encode() if not v.isascii() else v) for k, v in (headers or {}).items()]
    fields += set_after or []
    parts = [_text_part("plain", _plain_text(html)), _text_part("html", html)]
    boundary = _make_boundary(b"\r\n".join(parts))
    fold = COMPAT_POLICY.fold_binary
    out = [
        fold("Content-Type", f'multipart/alternative; boundary="{boundary}"'),
        _fold_repeated("MIME-Version", "1.0"),
    ]
    out += [_fold_repeated(k, v) if k in ("From", "Date") else fold(k, v) for k, v in fields]
    dash = b"--" + boundary.encode("ascii")
    out += [b"\r\n", dash, b"\r\n", parts[0], b"\r\n", dash, b"\r\n", parts[1], b"\r\n", dash, b"--\r\n"]
    return b"".join(out)


@functools.lru_cache(maxsize=64)
def _fold_repeated(name: str, value: str) -> bytes:
    """A header that repeats from one message to the next (sender, the date to the second)."""
    return COMPAT_POLICY.fold_binary(name, value)


@functools.lru_cache(maxsize=4)
def _text_part_head(subtype: str) -> bytes:
    """The headers of ``MIMEText(text, subtype, "utf-8")`` as the generator writes them."""
    part = MIMEText("", subtype, "utf-8")
    return b"".join(COMPAT_POLICY.fold_binary(k, v) for k, v in part.raw_items()) + b"\r\n"


def _text_part(subtype: str, text: str) -> bytes:
    """A base64 UTF-8 text part as the generator writes it: 76-character lines, CRLF ends
    (``base64.encodebytes`` cuts the lines as ``email.base64mime.body_encode`` does)."""
    return _text_part_head(subtype) + base64.encodebytes(text.encode("utf-8")).replace(b"\n", b"\r\n")


_BOUNDARY_DIGITS = len(repr(sys.maxsize - 1))


def _make_boundary(text: bytes) -> str:
    """A boundary drawn and checked against ``text`` as ``email.generator`` does."""
    boundary = "=" * 15 + f"{random.randrange(sys.maxsize):0{_BOUNDARY_DIGITS}d}" + "=="
    b, counter = boundary, 0
    # The generator's check is a regular expression compiled for each new boundary; a boundary
    # absent from the text (always, behind base64) passes it, and a substring test says so first.
    while f"--{b}".encode("ascii") in text and re.search(
        b"^--" + re.escape(b).encode("ascii") + b"(--)?$", text, re.MULTILINE
    ):
        b = f"{boundary}.{counter}"
        counter += 1
    return b


def _ascii_address(text: str) -> str:
    """``名字 <a@b>`` with the name RFC 2047 encoded (the legacy classes write headers as given)."""
    if text.isascii():
        return text
    name, addr = parseaddr(text)
    return formataddr((name, addr), charset="utf-8")


def message_bytes(msg: Message) -> bytes:
    """The message as sent on the wire (CRLF line ends, RFC 2047/2231 encoded headers)."""
    if isinstance(msg.policy, email.policy.EmailPolicy):
        return msg.as_bytes(policy=MESSAGE_POLICY)
    return msg.as_bytes(policy=COMPAT_POLICY)  # built by build_html_message: headers already encoded


class MailSender(Protocol):
    transport: str

    def send(self, msg: EmailMessage, recipients: list[str], key: str) -> str:
        """Send ``msg`` to ``recipients``; return where it went (a path or the server)."""
        ...


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, smtplib.SMTPResponseException):
        return 400 <= exc.smtp_code < 500
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return all(400 <= code < 500 for code, _ in exc.recipients.values())
    return isinstance(
        exc,
        smtplib.SMTPServerDisconnected
        | smtplib.SMTPConnectError
        | ConnectionError
        | socket.timeout
        | TimeoutError,
    )


class SmtpSender:
    """Send over SMTP; transient failures are retried (exponential back-off)."""

    transport = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        security: str = "none",
        user: str | None = None,
        password: SecretStr | None = None,
        timeout_s: float = 30.0,
        attempts: int = 4,
        backoff_s: float = 1.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if security not in ("none", "starttls", "ssl"):
            raise ValueError(f"smtp security must be none, starttls or ssl, got {security!r}")
        self.host, self.port, self.security = host, port, security
        self.user, self._password = user, password
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.ssl_context = ssl_context

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpSender:
        return cls(
            settings.smtp_host,
            settings.smtp_port,
            settings.smtp_security,
            settings.smtp_user,
            settings.smtp_password,
            settings.smtp_timeout_s,
        )

    def _send_once(self, raw: bytes, sender: str, recipients: list[str]) -> None:
        ctx = self.ssl_context or ssl.create_default_context()
        if self.security == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_s, context=ctx)
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        try:
            client.ehlo()
            if self.security == "starttls":
                client.starttls(context=ctx)
                client.ehlo()
            if self.user:
                password = self._password.get_secret_value() if self._password else ""
                client.login(self.user, password)
            client.sendmail(sender, recipients, raw)
        finally:
            try:
                client.quit()
            except smtplib.SMTPException:
                client.close()

    def send(self, msg: EmailMessage, recipients: list[str], key: str) -> str:
        return self.send_raw(message_bytes(msg), str(msg["From"]), recipients, key)

    def send_raw(self, raw: bytes, sender: str, recipients: list[str], key: str) -> str:
        """Send a message already in wire form (built in a worker process)."""
        retrying = retry(
            retry=retry_if_exception(_transient),
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.backoff_s, max=30),
            reraise=True,
            before_sleep=lambda rs: log.warning(
                "SMTP send %s failed (%s), retrying", key, rs.outcome.exception()
            ),
        )
        retrying(self._send_once)(raw, sender, recipients)
        return f"smtp://{self.host}:{self.port}"


class OutboxSender:
    """Write each message as an ``.eml`` file under ``outbox_dir`` (one folder per period)."""

    transport = "outbox"

    def __init__(self, outbox_dir: Path) -> None:
        self.outbox_dir = Path(outbox_dir)

    def send(self, msg: EmailMessage, recipients: list[str], key: str) -> str:
        if "X-Gaibao-Recipients" not in msg:
            msg["X-Gaibao-Recipients"] = ", ".join(recipients)
        return self.send_raw(message_bytes(msg), str(msg["From"]), recipients, key)

    def _folder(self, key: str) -> tuple[Path, str]:
        """The folder of ``key``'s messages and the start of their file names."""
        # the file name comes from our own key (period, kind, county code), never from county text
        parts = [re.sub(r"[^0-9A-Za-z_-]", "_", p)[:60] for p in key.split("/") if p]
        folder = self.outbox_dir.joinpath(*parts[:-1]) if len(parts) > 1 else self.outbox_dir
        return folder, parts[-1] if parts else "message"

    def prepare(self, key: str) -> None:
        """Create the folder of ``key``'s messages ahead of sending them (receipts: in the worker
        process that renders them, while the messages before are sent). Sends nothing."""
        self._folder(key)[0].mkdir(parents=True, exist_ok=True)

    def send_raw(self, raw: bytes, sender: str, recipients: list[str], key: str) -> str:
        """Write a message already in wire form (it carries its ``X-Gaibao-Recipients``)."""
        folder, stem = self._folder(key)
        digest = hashlib.sha256(",".join(sorted(recipients)).encode()).hexdigest()[:10]
        path = folder / f"{stem}-{digest}.eml"
        try:  # the folder usually exists (prepared, or an earlier message): no mkdir call then
            path.write_bytes(raw)
        except FileNotFoundError:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_bytes(raw)
        return str(path)


def sender_from_settings(settings: Settings) -> MailSender:
    """The one place the mail transport is chosen."""
    if settings.mail_mode == "smtp":
        return SmtpSender.from_settings(settings)
    return OutboxSender(settings.outbox_dir)


def address(name: str, email: str) -> str:
    return formataddr((name, email)) if name else email
