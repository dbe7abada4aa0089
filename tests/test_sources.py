"""County sources: folder naming, the sources file, HTTP faults, SFTP, databases, fetch_all."""

from __future__ import annotations

import json
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gaibao.settings import Settings
from tasks.sources import (
    CombinedSource,
    CombinedSpec,
    DatabaseSource,
    DatabaseSpec,
    FolderSource,
    FolderSpec,
    HttpSource,
    HttpSpec,
    SftpSource,
    SftpSpec,
    SourceUnreachable,
    fetch_all,
    fetch_with_retry,
    kind_in_name,
    list_inbox_counties,
    load_source_config,
    period_in_name,
    periods_in_name,
    records_payload,
    source_for,
)
from tests.servers import FaultyHttpServer, SftpTestServer

PERIOD = "2018-12"


def make_settings(home: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "home": home,
        "sources": None,
        "fetch_timeout_s": 0.5,
        "fetch_backoff_s": 0.05,
        "fetch_retries": 2,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def write(path: Path, content: bytes | str, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


# --------------------------------------------------------------------------------------------
# File names
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("进展月报2018-12.xlsx", "2018-12"),
        ("340102_201812_progress.csv", "2018-12"),
        ("怀远县全面改薄项目进展月报（2018年12月）.xlsx", "2018-12"),
        ("资金2018年6月.csv", "2018-06"),
        ("资金 2018 年 06 月.csv", "2018-06"),
        ("progress_2018_12.csv", "2018-12"),
        ("progress-2018-6.csv", "2018-06"),
        ("201812.json", "2018-12"),
        ("340102-201812.csv", "2018-12"),
        # false matches: a longer digit run, a school code, a full date, no month, a bad month
        ("2018120.csv", None),
        ("3418201812.csv", None),  # a 10-digit school code that contains 201812
        ("school_3401201812_list.csv", None),
        ("进展2018-12-05.xlsx", None),
        ("进展20181205.xlsx", None),
        ("进展2018年报.xlsx", None),
        ("进展2018-13.xlsx", None),
        ("201813.csv", None),
        ("进展.xlsx", None),
        ("340102.csv", None),
        # two different periods: ambiguous
        ("2018年11月更正为2018年12月.xlsx", None),
    ],
)
def test_period_in_name(name: str, expected: str | None) -> None:
    assert period_in_name(name) == expected


def test_periods_in_name_lists_every_period_once() -> None:
    assert periods_in_name("2018年11月_2018-12_201812.xlsx") == ["2018-11", "2018-12"]


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("进展月报2018-12.xlsx", "progress"),
        ("340102_PROGRESS_201812.csv", "progress"),
        ("全面改薄资金与师资月报2018年12月.xlsx", "funding"),
        ("师资2018-12.csv", "funding"),
        ("funding_201812.json", "funding"),
        ("月报2018-12.xlsx", None),  # the name does not say
        ("进展与资金2018-12.xlsx", None),  # says both: the reader decides
    ],
)
def test_kind_in_name(name: str, kind: str | None) -> None:
    assert kind_in_name(name) == kind


# --------------------------------------------------------------------------------------------
# Folder source
# --------------------------------------------------------------------------------------------


def test_folder_source_picks_the_periods_files_with_mtime_and_order(tmp_path: Path) -> None:
    folder = tmp_path / "inbox" / "340102"
    t0 = datetime(2019, 1, 3, 8, 0, tzinfo=UTC).timestamp()
    write(folder / "进展2018-12.xlsx", b"first", mtime=t0)
    write(folder / "进展2018-12（更正）.xlsx", b"second", mtime=t0 + 3600)
    write(folder / "a_funding_201812.csv", b"funding", mtime=t0 + 60)
    write(folder / "b_201812.csv", b"same time, later name", mtime=t0 + 60)
    write(folder / "进展2018-11.xlsx", b"other period", mtime=t0)
    write(folder / "~$进展2018-12.xlsx", b"office lock file", mtime=t0)
    write(folder / ".进展2018-12.xlsx.swp", b"hidden", mtime=t0)
    write(folder / "进展2018-12.xlsx.part", b"upload in progress", mtime=t0)
    write(folder / "sub" / "进展2018-12.xlsx", b"in a subfolder", mtime=t0)

    before = datetime.now(UTC)
    received = FolderSource(folder).fetch("340102", PERIOD)

    assert [r.file_name for r in received] == [
        "进展2018-12.xlsx",
        "a_funding_201812.csv",
        "b_201812.csv",
        "进展2018-12（更正）.xlsx",
    ]
    assert [r.content for r in received] == [b"first", b"funding", b"same time, later name", b"second"]
    assert [r.kind for r in received] == ["progress", "funding", None, "progress"]
    first = received[0]
    # the file's mtime is kept for the record; received_at is when it was read (issue 16)
    assert first.file_mtime == datetime(2019, 1, 3, 8, 0, tzinfo=UTC)
    assert first.received_at.tzinfo is not None and before <= first.received_at <= datetime.now(UTC)
    assert [r.received_at for r in received] == sorted({r.received_at for r in received})
    assert first.county_code == "340102" and first.period == PERIOD
    assert first.source == f"folder:{folder}"
    assert (
        first.sha256 == "a7937b64b8caa58f03721bb6bacf5c78cb235febe0e70b1b84cd99541461a08e"
    )  # sha256(b"first")


def test_folder_source_missing_folder_means_nothing_sent(tmp_path: Path) -> None:
    assert FolderSource(tmp_path / "nowhere").fetch("340102", PERIOD) == []


def test_folder_source_rejects_a_malformed_period(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        FolderSource(tmp_path).fetch("340102", "2018-13")


def test_folder_source_over_an_fsspec_url() -> None:
    import fsspec

    fs = fsspec.filesystem("memory")
    root = f"/gaibao-test-{uuid.uuid4().hex[:8]}/340102"
    fs.pipe(f"{root}/进展2018年12月.xlsx", b"xlsx bytes")
    fs.pipe(f"{root}/进展2018年11月.xlsx", b"older")
    try:
        received = FolderSource(f"memory://{root}").fetch("340102", PERIOD)
        assert [(r.file_name, r.content, r.kind) for r in received] == [
            ("进展2018年12月.xlsx", b"xlsx bytes", "progress")
        ]
        assert received[0].received_at.tzinfo is not None
        assert FolderSource(f"memory://{root}-missing").fetch("340102", PERIOD) == []
    finally:
        fs.rm(root.rsplit("/", 1)[0], recursive=True)


def test_list_inbox_counties(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert list_inbox_counties(settings) == []
    for name in ("340103", "340102", "notes", "3401020"):
        (settings.inbox_dir / name).mkdir(parents=True)
    write(settings.inbox_dir / "340104", b"a file, not a folder")
    assert list_inbox_counties(settings) == ["340102", "340103"]


def test_fetch_all_over_many_folder_counties_is_cheap(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    counties = [f"34{i:04d}" for i in range(300)]
    for code in counties[:250]:
        write(settings.inbox_dir / code / f"{code}_进展_201812.csv", f"county {code}".encode() * 100)
        write(settings.inbox_dir / code / f"{code}_进展_201811.csv", b"last month")
    started = time.monotonic()
    outcomes = fetch_all(counties, PERIOD, settings)
    elapsed = time.monotonic() - started
    assert [o.county_code for o in outcomes] == counties
    assert all(o.error is None and o.attempts == 1 for o in outcomes)
    assert sum(len(o.received) for o in outcomes) == 250
    assert outcomes[0].received[0].content == b"county 340000" * 100
    assert outcomes[-1].received == []  # no folder: nothing sent, not an error
    assert elapsed < 5, f"300 folder counties took {elapsed:.2f}s"


# --------------------------------------------------------------------------------------------
# The sources file
# --------------------------------------------------------------------------------------------

SOURCES_YAML = """
defaults:
  type: folder
  root: /srv/returns/{county_code}
340102:
  type: http
  url: https://platform.example/api/{county_code}/progress?period={period}
  token_env: GAIBAO_TOKEN_340102
  page_param: page
"340103":
  type: folder
"340104":
  type: database
  url: postgresql+psycopg://reader@db.example/county
  query: select * from progress where county = :county_code and period = :period
  kind: progress
  password_env: GAIBAO_DB_PASSWORD
"340105":
  type: sftp
  host: sftp.example
  username: county
  root: /returns/{county_code}
  password_env: GAIBAO_SFTP_340105
"340106":
  - type: http
    url: https://platform.example/api/{county_code}/progress?period={period}
  - type: database
    kind: funding
    url: sqlite:///funding.db
    query: select * from funding where county_code = :county_code and period = :period
"""


def test_load_source_config_and_source_for(tmp_path: Path) -> None:
    path = write(tmp_path / "sources.yaml", SOURCES_YAML)
    config = load_source_config(path)
    settings = make_settings(tmp_path)

    assert set(config) == {"340102", "340103", "340104", "340105", "340106"}  # county codes only
    assert config.defaults == FolderSpec(root="/srv/returns/{county_code}")
    http = config["340102"]
    assert (
        isinstance(http, HttpSpec) and http.token_env == "GAIBAO_TOKEN_340102" and http.page_param == "page"
    )
    # a listed folder county takes the defaults' root; an unlisted county uses the defaults
    assert config["340103"] == FolderSpec(root="/srv/returns/{county_code}")
    assert (
        isinstance(config["340104"], DatabaseSpec) and config["340104"].password_env == "GAIBAO_DB_PASSWORD"
    )
    assert isinstance(config["340105"], SftpSpec) and config["340105"].port == 22
    assert isinstance(config["340106"], CombinedSpec) and [p.type for p in config["340106"].parts] == [
        "http",
        "database",
    ]

    assert source_for("340103", settings, config).describe() == "folder:/srv/returns/340103"
    assert source_for("349999", settings, config).describe() == "folder:/srv/returns/349999"
    assert isinstance(source_for("340102", settings, config), HttpSource)
    assert isinstance(source_for("340104", settings, config), DatabaseSource)
    assert (
        source_for("340104", settings, config).describe()
        == "database:postgresql+psycopg://reader@db.example/county"
    )
    assert isinstance(source_for("340105", settings, config), SftpSource)
    assert isinstance(source_for("340106", settings, config), CombinedSource)
    # without a sources file every county uses its inbox folder
    assert load_source_config(None) == {}
    assert source_for("340102", settings, {}).describe() == f"folder:{settings.inbox_dir / '340102'}"


def test_a_sources_file_with_only_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path / "sources.yaml", "defaults: {type: folder, root: 'memory://returns/{county_code}'}\n"
    )
    config = load_source_config(path)
    assert dict(config) == {}
    assert (
        source_for("340102", make_settings(tmp_path), config).describe() == "folder:memory://returns/340102"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3401: {type: folder}", "6-digit county code"),
        ('"340102": {type: ftp}', "340102"),
        ('"340102": {type: http}', "url"),
        ('"340102": {type: http, url: "x", tokn_env: T}', "tokn_env"),
        ('"340102": {type: sftp, host: h, username: u, password: inline}', "password"),
        ('"340102": "folder"', "mapping"),
        ("- 340102", "top level"),
    ],
)
def test_load_source_config_refuses_a_bad_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "sources.yaml", text)
    with pytest.raises(ValueError, match=message):
        load_source_config(path)


def test_example_sources_file_is_valid() -> None:
    config = load_source_config(Path(__file__).parents[1] / "docs" / "sources.example.yaml")
    assert {spec.type for spec in config.values()} >= {"folder", "http", "sftp", "database", "combined"}
    assert config.defaults is not None and config.defaults.type == "folder"


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

RECORDS = [
    [
        {"project_id": "P-1", "status": "在建", "完成投资（万元）": "12.5"},
        {"project_id": "P-2", "status": "未开工"},
    ],
    [{"project_id": "P-3", "status": "已竣工"}],
]


@pytest.fixture
def http_server() -> FaultyHttpServer:
    with FaultyHttpServer(token="s3cret-token", hang_s=3.0, trickle_s=0.2) as server:
        yield server


@pytest.mark.parametrize("pagination", ["next", "page"])
def test_http_paginated_with_bearer_token(
    http_server: FaultyHttpServer, monkeypatch: pytest.MonkeyPatch, pagination: str
) -> None:
    monkeypatch.setenv("TEST_PLATFORM_TOKEN", "s3cret-token")
    http_server.add_route(
        "/api/340102/progress", RECORDS, pagination=pagination, last_modified="Thu, 03 Jan 2019 08:00:00 GMT"
    )
    source = HttpSource(
        http_server.url("/api/{county_code}/progress") + "?period={period}",
        token_env="TEST_PLATFORM_TOKEN",
        page_param="page" if pagination == "page" else None,
        timeout_s=2,
    )
    received = source.fetch("340102", PERIOD)

    assert len(received) == 1
    payload = received[0]
    assert json.loads(payload.content) == RECORDS[0] + RECORDS[1]
    assert payload.content == records_payload(RECORDS[0] + RECORDS[1])
    assert payload.kind == "progress" and payload.file_name == "340102_2018-12_progress.json"
    assert payload.file_mtime == datetime(2019, 1, 3, 8, 0, tzinfo=UTC)  # Last-Modified, for the record
    assert payload.received_at > payload.file_mtime  # when it was fetched
    assert payload.source == f"http:{http_server.url('/api/340102/progress')}?period={PERIOD}"
    assert "s3cret" not in payload.source and "s3cret" not in source.describe()
    # the server saw the token and the period on every page
    seen = [r for r in http_server.requests if r.path == "/api/340102/progress"]
    assert len(seen) == (2 if pagination == "next" else 3)  # page mode stops on an empty page
    assert all(r.authorization == "Bearer s3cret-token" and r.query["period"] == [PERIOD] for r in seen)
    # the same data gives the same bytes and the same sha256
    assert source.fetch("340102", PERIOD)[0].sha256 == payload.sha256


def test_http_no_records_means_nothing_sent(http_server: FaultyHttpServer) -> None:
    http_server.token = None
    http_server.add_route("/api/340102", [[]])
    assert HttpSource(http_server.url("/api/340102"), timeout_s=2).fetch("340102", PERIOD) == []


def test_http_never_follows_a_next_link_to_another_host(
    http_server: FaultyHttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_PLATFORM_TOKEN", "s3cret-token")
    http_server.add_route("/api/340102", [{"records": [{"a": 1}], "next": "http://127.0.0.2:9/steal"}])
    source = HttpSource(http_server.url("/api/340102"), token_env="TEST_PLATFORM_TOKEN", timeout_s=2)
    with pytest.raises(SourceUnreachable, match="其他网站") as info:
        source.fetch("340102", PERIOD)
    assert not info.value.retryable and "127.0.0.2" in info.value.detail


def test_http_page_param_the_platform_ignores_is_detected(http_server: FaultyHttpServer) -> None:
    http_server.token = None
    http_server.add_route("/api/340102", [[{"a": 1}]], pagination="none")  # same body whatever the page
    source = HttpSource(http_server.url("/api/340102"), page_param="page", timeout_s=2)
    with pytest.raises(SourceUnreachable, match="分页参数无效"):
        source.fetch("340102", PERIOD)
    assert http_server.hits("/api/340102") == 2


def test_http_body_over_the_limit_is_refused(http_server: FaultyHttpServer) -> None:
    http_server.token = None
    http_server.add_route("/api/340102", [[{"note": "x" * 5000}]])
    with pytest.raises(SourceUnreachable, match="超出上限"):
        HttpSource(http_server.url("/api/340102"), timeout_s=2, max_bytes=1000).fetch("340102", PERIOD)


def test_http_faults_end_in_clear_outcomes_while_other_counties_are_fetched(
    http_server: FaultyHttpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TEST_PLATFORM_TOKEN", "s3cret-token")
    monkeypatch.setenv("TEST_WRONG_TOKEN", "not-the-token")
    monkeypatch.delenv("TEST_MISSING_TOKEN", raising=False)
    settings = make_settings(tmp_path, fetch_timeout_s=0.8, fetch_backoff_s=0.05, fetch_retries=2)
    records = [[{"project_id": "P-1", "note": "一个相当长的备注，让响应体足够长以便截断和慢速发送"}]]
    faults: dict[str, tuple[str | None, int | None]] = {
        "340102": (None, 0),  # healthy
        "340103": ("500", 1),  # 500 then success
        "340104": ("500", None),  # persistent 500
        "340105": ("hang", None),  # no answer past the timeout
        "340106": ("truncate", None),  # body cut short
        "340107": ("truncate", 1),  # cut short once, then fine
        "340108": ("badjson", None),  # not JSON
        "340109": (None, 0),  # wrong token: 401
        "340110": ("404", None),  # not found
        "340111": ("trickle", None),  # a body that never finishes in time
        "340112": (None, 0),  # token variable not set
    }
    config = {}
    for code, (fault, times) in faults.items():
        path = f"/api/{code}"
        http_server.add_route(path, records)
        if fault:
            http_server.fail(path, fault, times=times)
        token_env = {"340109": "TEST_WRONG_TOKEN", "340112": "TEST_MISSING_TOKEN"}.get(
            code, "TEST_PLATFORM_TOKEN"
        )
        config[code] = HttpSpec(
            type="http", url=http_server.url("/api/{county_code}") + "?period={period}", token_env=token_env
        )
    # a folder county in the same batch
    write(settings.inbox_dir / "340199" / "进展2018-12.csv", b"csv bytes")

    started = time.monotonic()
    outcomes = {
        o.county_code: o
        for o in fetch_all([*faults, "340199"], PERIOD, settings, config=config, max_workers=12)
    }
    elapsed = time.monotonic() - started

    def ok(code: str, attempts: int) -> None:
        outcome = outcomes[code]
        assert outcome.error is None, (code, outcome.error)
        assert outcome.attempts == attempts, code
        assert json.loads(outcome.received[0].content) == records[0]

    def failed(code: str, attempts: int, message_zh: str, detail: str) -> None:
        outcome = outcomes[code]
        assert outcome.received == [] and outcome.error is not None, code
        assert outcome.attempts == attempts, (code, outcome.error)
        assert message_zh in outcome.error.message_zh, (code, outcome.error)
        assert detail in outcome.error.detail, (code, outcome.error)
        assert "s3cret" not in str(outcome.error)

    ok("340102", 1)
    ok("340103", 2)
    ok("340107", 2)
    failed("340104", 3, "暂时无法提供数据", "HTTP 500")
    failed("340105", 3, "超时", "Timeout")
    failed("340106", 3, "传输中断", "RemoteProtocolError")
    failed("340108", 3, "不是有效的 JSON", "invalid JSON")
    failed("340109", 1, "令牌无效", "HTTP 401")
    failed("340110", 1, "未找到", "HTTP 404")
    failed("340111", 3, "超时", "not complete")
    failed("340112", 1, "令牌未配置", "TEST_MISSING_TOKEN")
    assert outcomes["340199"].received[0].content == b"csv bytes"
    assert (
        outcomes["340104"].error is not None
        and outcomes["340104"].error.to_refusal().code == "SOURCE_UNREACHABLE"
    )
    assert http_server.hits("/api/340104") == 3 and http_server.hits("/api/340109") == 1
    # every attempt was bounded: 3 attempts of <= ~2 timeouts each plus backoff, in parallel
    assert outcomes["340105"].seconds < 6 and elapsed < 10, (outcomes["340105"].seconds, elapsed)


def test_outcomes_survive_pickling(tmp_path: Path) -> None:
    import pickle

    settings = make_settings(tmp_path)
    write(settings.inbox_dir / "340102" / "进展2018-12.csv", b"bytes")
    outcome = fetch_all(["340102"], PERIOD, settings)[0]
    error = SourceUnreachable("数据平台响应超时", "ReadTimeout", retryable=True)
    copy, error_copy = pickle.loads(pickle.dumps((outcome, error)))
    assert copy.received == outcome.received and copy.received[0].sha256 == outcome.received[0].sha256
    assert (error_copy.message_zh, error_copy.detail, error_copy.retryable) == (
        "数据平台响应超时",
        "ReadTimeout",
        True,
    )


def test_fetch_with_retry_wraps_an_unexpected_error(tmp_path: Path) -> None:
    class Broken:
        def fetch(self, county_code: str, period: str) -> list:
            raise KeyError("a bug")

        def describe(self) -> str:
            return "broken"

    outcome = fetch_with_retry(Broken(), "340102", PERIOD, make_settings(tmp_path))
    assert outcome.attempts == 1 and outcome.error is not None
    assert "KeyError" in outcome.error.detail and outcome.error.message_zh


def test_fetch_all_reports_a_county_whose_source_cannot_be_built(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    write(settings.inbox_dir / "340102" / "进展2018-12.csv", b"ok")
    config = {"340103": SftpSpec(type="sftp", host="h", username="u")}  # neither password nor key
    outcomes = fetch_all(["340102", "340103"], PERIOD, settings, config=config)
    assert outcomes[0].received[0].content == b"ok"
    assert outcomes[1].error is not None and "password_env or key_path" in outcomes[1].error.detail


# --------------------------------------------------------------------------------------------
# SFTP
# --------------------------------------------------------------------------------------------


@pytest.fixture
def sftp_server(tmp_path: Path) -> SftpTestServer:
    pytest.importorskip("asyncssh", reason="asyncssh is in the scale extra")
    root = tmp_path / "sftp-root"
    root.mkdir()
    with SftpTestServer(root, username="county", password="pw-340102") as server:
        yield server


def test_sftp_source_fetches_the_periods_files(
    sftp_server: SftpTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SFTP_PASSWORD", "pw-340102")
    t0 = datetime(2019, 1, 4, 9, 30, tzinfo=UTC).timestamp()
    folder = sftp_server.root / "returns" / "340102"
    write(folder / "资金2018年12月.xlsx", b"funding", mtime=t0 + 10)
    write(folder / "进展_201812.csv", b"progress", mtime=t0)
    write(folder / "进展_201811.csv", b"older", mtime=t0)
    write(folder / "~$进展_201812.csv", b"lock", mtime=t0)
    known_hosts = sftp_server.write_known_hosts(tmp_path / "known_hosts")
    source = SftpSource(
        "127.0.0.1",
        port=sftp_server.port,
        username="county",
        root="/returns/{county_code}",
        password_env="TEST_SFTP_PASSWORD",
        known_hosts=str(known_hosts),
        timeout_s=5,
    )

    received = source.fetch("340102", PERIOD)

    assert [(r.file_name, r.content, r.kind) for r in received] == [
        ("进展_201812.csv", b"progress", "progress"),
        ("资金2018年12月.xlsx", b"funding", "funding"),
    ]
    assert received[0].file_mtime == datetime(2019, 1, 4, 9, 30, tzinfo=UTC)  # the file's mtime, kept
    assert received[0].received_at > received[0].file_mtime  # when it was read
    assert received[0].source == f"sftp://county@127.0.0.1:{sftp_server.port}/returns/340102"
    assert source.fetch("340103", PERIOD) == []  # no folder for that county


def test_sftp_wrong_password_and_unknown_host_key(
    sftp_server: SftpTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SFTP_PASSWORD", "wrong")
    known_hosts = sftp_server.write_known_hosts(tmp_path / "known_hosts")
    settings = make_settings(tmp_path, fetch_timeout_s=5)
    bad_password = SftpSpec(
        type="sftp",
        host="127.0.0.1",
        port=sftp_server.port,
        username="county",
        password_env="TEST_SFTP_PASSWORD",
        known_hosts=str(known_hosts),
    )
    other_host_key = tmp_path / "other_known_hosts"
    other_host_key.write_text(
        f"[127.0.0.1]:{sftp_server.port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGZpeGVkIGtleSBmb3IgdGVzdHMgMDEyMzQ1Njc4OQ==\n"
    )
    wrong_key = bad_password.model_copy(update={"known_hosts": str(other_host_key)})
    outcomes = fetch_all(
        ["340102", "340103"], PERIOD, settings, config={"340102": bad_password, "340103": wrong_key}
    )
    assert outcomes[0].error is not None and "拒绝登录" in outcomes[0].error.message_zh
    assert outcomes[0].attempts == 1  # not retried: a wrong password stays wrong
    assert outcomes[1].error is not None and "主机密钥" in outcomes[1].error.message_zh
    assert "wrong" not in str(outcomes[0].error)


# --------------------------------------------------------------------------------------------
# Databases
# --------------------------------------------------------------------------------------------

CREATE_AND_FILL = [
    """create table {t} (
        xmbh varchar(32), qhdm char(6), bgq char(7), project_type varchar(10),
        COMPLETED_INVEST_WAN decimal(12, 2), actual_start date, started_area_m2 double precision
    )""",
    """insert into {t} values
        ('P-2', '340102', '2018-12', '校舍改造', 120.50, '2018-03-01', 800.0),
        ('P-1', '340102', '2018-12', '设备购置', 30.00, null, 0.0),
        ('P-9', '340102', '2018-11', '校舍改造', 100.00, '2018-03-01', 700.0),
        ('P-5', '340103', '2018-12', '校舍改造', 10.00, '2018-05-01', 10.0)""",
]
QUERY = (
    "select xmbh, qhdm as county_code, bgq as period, project_type, COMPLETED_INVEST_WAN, actual_start,"
    " started_area_m2 from {t} where qhdm = :county_code and bgq = :period"
)
EXPECTED_ROWS = [
    {
        "actual_start": None,
        "completed_invest_wan": "30",
        "county_code": "340102",
        "period": "2018-12",
        "project_id": "P-1",
        "project_type": "设备购置",
        "started_area_m2": 0.0,
    },
    {
        "actual_start": "2018-03-01",
        "completed_invest_wan": "120.5",
        "county_code": "340102",
        "period": "2018-12",
        "project_id": "P-2",
        "project_type": "校舍改造",
        "started_area_m2": 800.0,
    },
]


def _check_database_source(url: str, table: str) -> None:
    source = DatabaseSource(
        url, QUERY.format(t=table), kind="progress", columns={"xmbh": "project_id"}, timeout_s=5
    )
    received = source.fetch("340102", PERIOD)
    assert len(received) == 1
    payload = received[0]
    assert payload.kind == "progress" and payload.file_name == "340102_2018-12_progress.json"
    assert json.loads(payload.content) == EXPECTED_ROWS
    assert source.fetch("340102", PERIOD)[0].sha256 == payload.sha256
    assert [json.loads(r.content)[0]["project_id"] for r in source.fetch("340103", PERIOD)] == ["P-5"]
    assert source.fetch("340104", PERIOD) == []


@pytest.mark.postgres
def test_database_source_on_postgresql(pg_server_url: str) -> None:
    import sqlalchemy as sa

    table = f"county_progress_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(pg_server_url)
    with engine.begin() as conn:
        for statement in CREATE_AND_FILL:
            conn.execute(sa.text(statement.format(t=table)))
    try:
        _check_database_source(pg_server_url, table)
        broken = DatabaseSource(
            pg_server_url, f"select no_such_column from {table} where qhdm = :county_code"
        )
        with pytest.raises(SourceUnreachable, match="查询失败") as info:
            broken.fetch("340102", PERIOD)
        assert not info.value.retryable
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"drop table if exists {table}"))
        engine.dispose()


def test_database_source_unreachable_server_is_retryable(tmp_path: Path) -> None:
    source = DatabaseSource("postgresql+psycopg://nobody@127.0.0.1:1/none", "select 1", timeout_s=1)
    with pytest.raises(SourceUnreachable, match="无法连接") as info:
        source.fetch("340102", PERIOD)
    assert info.value.retryable


MARIADB_URL = "mysql+pymysql://root@127.0.0.1:3306"


def _mariadb_or_skip() -> None:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 3306), timeout=0.5).close()
    except OSError as exc:
        pytest.skip(f"MariaDB not reachable at 127.0.0.1:3306: {exc}")
    try:
        import pymysql  # noqa: F401
    except ImportError:
        pytest.skip("pymysql not installed (the scale extra)")


def test_database_source_on_mariadb() -> None:
    _mariadb_or_skip()
    import sqlalchemy as sa

    name = f"gaibao_test_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(MARIADB_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"create database {name} character set utf8mb4"))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.skip(f"MariaDB refused root without a password: {exc}")
    url = f"{MARIADB_URL}/{name}?charset=utf8mb4"
    try:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            for statement in CREATE_AND_FILL:
                conn.execute(sa.text(statement.format(t="county_progress")))
        engine.dispose()
        _check_database_source(url, "county_progress")
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"drop database if exists {name}"))
        admin.dispose()


def test_database_source_on_sqlite_in_fetch_all(tmp_path: Path) -> None:
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'county.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for statement in CREATE_AND_FILL:
            conn.execute(sa.text(statement.format(t="county_progress")))
    engine.dispose()
    spec = DatabaseSpec(
        type="database",
        url=url,
        query=QUERY.format(t="county_progress"),
        kind="progress",
        columns={"xmbh": "project_id"},
    )
    outcomes = fetch_all(
        ["340102", "340104"], PERIOD, make_settings(tmp_path), config={"340102": spec, "340104": spec}
    )
    rows = json.loads(outcomes[0].received[0].content)
    # SQLite gives back floats for decimals; the record set and ordering are the same
    assert [r["project_id"] for r in rows] == ["P-1", "P-2"]
    assert rows[1]["actual_start"] == "2018-03-01"
    assert outcomes[1].received == [] and outcomes[1].error is None
