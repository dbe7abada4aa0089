"""Real servers on loopback for tests: an HTTP platform that can misbehave, and an SFTP server.

Both bind 127.0.0.1 on a free port, run in a background thread, and are context managers::

    with FaultyHttpServer(token="t0k") as http:
        http.add_route("/api/340102", [[{"a": 1}], [{"a": 2}]], pagination="next")
        http.fail("/api/340102", "500", times=1)
        url = http.url("/api/340102")

    with SftpTestServer(root=tmp_path, username="county", password="pw") as sftp:
        sftp.port, sftp.write_known_hosts(tmp_path / "known_hosts")
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

# Faults a route can be told to produce, one per request, before it answers normally.
FAULTS = ("500", "503", "401", "403", "404", "hang", "truncate", "badjson", "trickle", "trickle_headers")


@dataclass
class _Route:
    pages: list[Any]  # one JSON-able body (usually a list of records) per page
    pagination: str = "none"  # none | next | page
    page_param: str = "page"
    last_modified: str | None = None
    faults: deque[str] = field(default_factory=deque)
    always: str | None = None  # a fault repeated forever


@dataclass(frozen=True)
class SeenRequest:
    path: str
    query: dict[str, list[str]]
    authorization: str | None


class FaultyHttpServer:
    """A JSON records platform on 127.0.0.1 that checks a bearer token and can misbehave.

    Routes serve pages of records:
    - ``pagination="none"``: the first page's body as is;
    - ``pagination="next"``: ``{"records": [...], "next": "<relative link>"|null}``, pages chained
      with ``?cursor=N``;
    - ``pagination="page"``: ``?page=N`` (1-based) returns page N as a JSON list, ``[]`` past the end.

    Faults (``fail``): ``500``/``503``/``401``/``403``/``404`` statuses, ``hang`` (no answer for
    ``hang_s`` seconds, then the connection is closed), ``truncate`` (Content-Length promises more
    than is sent), ``badjson`` (a 200 with a broken JSON body), ``trickle`` (a 200 whose body
    arrives one byte every ``trickle_s`` seconds), ``trickle_headers`` (the status line and headers
    themselves arrive one byte every ``trickle_s`` seconds: every read is quick, the response never
    ends).
    """

    def __init__(self, token: str | None = None, hang_s: float = 5.0, trickle_s: float = 0.2) -> None:
        self.token = token
        self.hang_s = hang_s
        self.trickle_s = trickle_s
        self.routes: dict[str, _Route] = {}
        self.requests: list[SeenRequest] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # configuration ------------------------------------------------------------------------
    def add_route(
        self,
        path: str,
        pages: list[Any],
        pagination: str = "none",
        page_param: str = "page",
        last_modified: str | None = None,
    ) -> None:
        with self._lock:
            self.routes[path] = _Route(list(pages), pagination, page_param, last_modified)

    def fail(self, path: str, fault: str, times: int | None = 1) -> None:
        """Make the next ``times`` requests to ``path`` fail with ``fault`` (None: every request)."""
        assert fault in FAULTS, fault
        with self._lock:
            route = self.routes.setdefault(path, _Route([[]]))
            if times is None:
                route.always = fault
            else:
                route.faults.extend([fault] * times)

    def hits(self, path: str) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.path == path)

    @property
    def port(self) -> int:
        assert self._httpd is not None
        return int(self._httpd.server_address[1])

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    # lifecycle ----------------------------------------------------------------------------
    def start(self) -> FaultyHttpServer:
        handler = _make_handler(self)
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="faulty-http", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FaultyHttpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # serving ------------------------------------------------------------------------------
    def _next_fault(self, route: _Route) -> str | None:
        with self._lock:
            if route.faults:
                return route.faults.popleft()
            return route.always


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # many counties connect at once; the default backlog of 5 drops them


def _make_handler(server: FaultyHttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet tests
            return

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            auth = self.headers.get("Authorization")
            with server._lock:
                server.requests.append(SeenRequest(parts.path, query, auth))
                route = server.routes.get(parts.path)
            if route is None:
                self._send(404, b'{"error":"not found"}')
                return
            if server.token is not None and auth != f"Bearer {server.token}":
                self._send(401, b'{"error":"token rejected"}')
                return
            fault = server._next_fault(route)
            body, headers = _page_body(route, query)
            if fault in ("500", "503", "401", "403", "404"):
                self._send(int(fault), b'{"error":"fault"}')
            elif fault == "hang":
                server._stop.wait(server.hang_s)
                self.close_connection = True
            elif fault == "truncate":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body) + 100))
                self.end_headers()
                self.wfile.write(body[: max(1, len(body) // 2)])
                self.wfile.flush()
                self.close_connection = True
            elif fault == "badjson":
                self._send(200, body[: max(1, len(body) // 2)] + b"\n<html>oops")
            elif fault == "trickle_headers":
                head = (
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    f"X-Padding: {'x' * 4096}\r\nContent-Length: {len(body)}\r\n\r\n"
                ).encode("ascii")
                for i in range(len(head)):
                    if server._stop.is_set():
                        break
                    try:
                        self.wfile.write(head[i : i + 1])
                        self.wfile.flush()
                    except OSError:
                        break
                    time.sleep(server.trickle_s)
                self.close_connection = True
            elif fault == "trickle":
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                for i in range(len(body)):
                    if server._stop.is_set():
                        break
                    try:
                        self.wfile.write(body[i : i + 1])
                        self.wfile.flush()
                    except OSError:
                        break
                    time.sleep(server.trickle_s)
                self.close_connection = True
            else:
                self._send(200, body, headers)

    return Handler


def _page_body(route: _Route, query: dict[str, list[str]]) -> tuple[bytes, dict[str, str]]:
    headers = {"Last-Modified": route.last_modified} if route.last_modified else {}
    if route.pagination == "next":
        cursor = int(query.get("cursor", ["0"])[0])
        records = route.pages[cursor] if cursor < len(route.pages) else []
        # a relative link that keeps the request's other parameters (as real platforms do)
        next_query = urlencode({**{k: v[0] for k, v in query.items()}, "cursor": cursor + 1})
        next_link = f"?{next_query}" if cursor + 1 < len(route.pages) else None
        payload: Any = {"records": records, "next": next_link}
    elif route.pagination == "page":
        page = int(query.get(route.page_param, ["1"])[0])
        payload = route.pages[page - 1] if 1 <= page <= len(route.pages) else []
    else:
        payload = route.pages[0] if route.pages else []
    return json.dumps(payload, ensure_ascii=False).encode("utf-8"), headers


# ------------------------------------------------------------------------------------------
# SFTP
# ------------------------------------------------------------------------------------------


class SftpTestServer:
    """An asyncssh SFTP server on 127.0.0.1 serving ``root`` (chrooted), password auth only."""

    def __init__(self, root: Path, username: str = "county", password: str = "secret") -> None:
        self.root = Path(root)
        self.username = username
        self.password = password
        self.port = 0
        self.host_key: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> SftpTestServer:
        import asyncssh

        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        ready = threading.Event()
        errors: list[BaseException] = []
        username, password, root = self.username, self.password, str(self.root)

        class _Server(asyncssh.SSHServer):
            def begin_auth(self, user: str) -> bool:
                return True

            def password_auth_supported(self) -> bool:
                return True

            def validate_password(self, user: str, pw: str) -> bool:
                return user == username and pw == password

        def sftp_factory(chan: Any) -> asyncssh.SFTPServer:
            return asyncssh.SFTPServer(chan, chroot=root.encode())

        async def serve() -> None:
            self._server = await asyncssh.listen(
                "127.0.0.1",
                0,
                server_host_keys=[self.host_key],
                server_factory=_Server,
                sftp_factory=sftp_factory,
                allow_scp=False,
            )
            self.port = self._server.sockets[0].getsockname()[1]

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(serve())
            except BaseException as exc:  # noqa: BLE001 - reported to start()
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="sftp-test", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def known_hosts_line(self) -> str:
        key = self.host_key.export_public_key("openssh").decode().strip()
        return f"[127.0.0.1]:{self.port} {key}\n"

    def write_known_hosts(self, path: Path) -> Path:
        path.write_text(self.known_hosts_line(), encoding="utf-8")
        return path

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        fut = asyncio.run_coroutine_threadsafe(close(), loop)
        try:
            fut.result(timeout=5)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=5)

    def __enter__(self) -> SftpTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
