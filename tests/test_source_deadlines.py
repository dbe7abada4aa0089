"""Every source has a whole-request deadline, headers included (issue 16, item 3).

Real servers on loopback: an HTTP platform that trickles its status line and headers one byte at
a time (each read is quick, so httpx's per-read timeout never fires), a TCP server that trickles
an SSH banner, PostgreSQL and SQLite queries that run past the deadline. A county past its
deadline is unreachable; in the real nightly run the other counties load.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from tasks.sources import DatabaseSource, HttpSource, SftpSource, SourceUnreachable
from tests.filebuilders import progress_rows, write_return
from tests.servers import FaultyHttpServer

PERIOD = "2018-12"


def test_http_headers_trickled_a_byte_at_a_time_hit_the_deadline() -> None:
    with FaultyHttpServer(trickle_s=0.2) as http:
        http.add_route("/api/340321", [[{"project_id": "A"}]])
        http.fail("/api/340321", "trickle_headers", times=None)
        source = HttpSource(http.url("/api/340321"), timeout_s=1.0)
        started = time.monotonic()
        with pytest.raises(SourceUnreachable) as info:
            source.fetch("340321", PERIOD)
        elapsed = time.monotonic() - started
    assert info.value.retryable and "超时" in info.value.message_zh
    assert elapsed < 3.0, elapsed  # 4 KB of headers at 5 bytes a second would take 14 minutes


def test_http_body_trickled_still_hits_the_deadline() -> None:
    with FaultyHttpServer(trickle_s=0.2) as http:
        http.add_route("/api/340321", [[{"project_id": "A" * 200}]])
        http.fail("/api/340321", "trickle", times=None)
        started = time.monotonic()
        with pytest.raises(SourceUnreachable, match="超时"):
            HttpSource(http.url("/api/340321"), timeout_s=1.0).fetch("340321", PERIOD)
        assert time.monotonic() - started < 3.0


class _TrickleServer:
    """A TCP server on loopback that sends ``banner`` one byte every ``interval`` seconds."""

    def __init__(self, banner: bytes, interval: float = 0.3) -> None:
        self.banner, self.interval = banner, interval
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self._trickle, args=(conn,), daemon=True).start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            for i in range(len(self.banner)):
                if self.stop.is_set():
                    return
                try:
                    conn.sendall(self.banner[i : i + 1])
                except OSError:
                    return
                time.sleep(self.interval)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def test_sftp_server_trickling_its_banner_hits_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    server = _TrickleServer(b"SSH-2.0-" + b"x" * 200 + b"\r\n")
    monkeypatch.setenv("SFTP_PW_TEST", "pw")
    try:
        source = SftpSource(
            "127.0.0.1", port=server.port, username="county", password_env="SFTP_PW_TEST",
            check_host_key=False, timeout_s=1.0,
        )  # fmt: skip
        started = time.monotonic()
        with pytest.raises(SourceUnreachable) as info:
            source.fetch("340321", PERIOD)
        assert time.monotonic() - started < 4.0
        assert info.value.retryable
    finally:
        server.close()


@pytest.mark.postgres
def test_database_query_past_the_deadline_is_cancelled(pg_server_url: str) -> None:
    import sqlalchemy as sa

    source = DatabaseSource(
        pg_server_url, "SELECT 'A' AS project_id, pg_sleep(60) AS waited WHERE :period <> ''", timeout_s=1.0
    )
    started = time.monotonic()
    with pytest.raises(SourceUnreachable, match="超时") as info:
        source.fetch("340321", PERIOD)
    assert time.monotonic() - started < 5.0
    assert info.value.retryable
    engine = sa.create_engine(pg_server_url)
    try:
        deadline = time.monotonic() + 5
        while True:  # the server stopped the query: the cancel went through
            with engine.connect() as conn:
                running = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND state = 'active' AND pid <> pg_backend_pid()"
                    )
                ).scalar()
            if running == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert running == 0
    finally:
        engine.dispose()


def test_sqlite_query_past_the_deadline_is_interrupted(tmp_path: Path) -> None:
    db = tmp_path / "county.db"
    slow = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000000000) "
        "SELECT 'A' AS project_id, sum(i) AS s FROM n WHERE :period <> ''"
    )
    source = DatabaseSource(f"sqlite:///{db}", slow, timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(SourceUnreachable, match="超时"):
        source.fetch("340321", PERIOD)
    assert time.monotonic() - started < 3.0


def test_the_nightly_run_marks_the_trickling_county_unreachable_and_loads_the_others(
    prefect_harness: None, gaibao_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.nightly import nightly_ingest
    from gaibao.settings import get_settings
    from warehouse.store import Warehouse

    folder = gaibao_home / "inbox" / "340322"
    folder.mkdir(parents=True)
    write_return(
        folder / "五河县项目进展_2018年12月.csv", progress_rows(4, county_code="340322", period=PERIOD)
    )
    with FaultyHttpServer(trickle_s=1.0) as http:
        http.add_route("/api/340321", [[{"project_id": "A"}]])
        http.fail("/api/340321", "trickle_headers", times=None)
        sources = gaibao_home / "sources.yaml"
        sources.write_text(f'"340321":\n  type: http\n  url: {http.url("/api/340321")}\n', encoding="utf-8")
        monkeypatch.setenv("GAIBAO_SOURCES", str(sources))
        monkeypatch.setenv("GAIBAO_FETCH_TIMEOUT_S", "3")
        monkeypatch.setenv("GAIBAO_FETCH_RETRIES", "1")
        monkeypatch.setenv("GAIBAO_FETCH_BACKOFF_S", "0.1")
        get_settings.cache_clear()
        started = time.monotonic()
        summary = nightly_ingest(period=PERIOD, counties=["340321", "340322"])
        elapsed = time.monotonic() - started
    assert summary["unreachable"] == ["340321"]
    assert elapsed < 90, elapsed  # two attempts of 3 s, not 4 KB of headers at a byte a second
    wh = Warehouse.from_settings(get_settings())
    subs = wh.read_table("submission")
    assert list(subs["county_code"]) == ["340322"] and list(subs["status"]) == ["accepted"]
    assert len(wh.read_table("fact_progress", where={"county_code": "340322"})) == 4
    wh.close()
