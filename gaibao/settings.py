"""The one place that reads the environment.

Every setting has the ``GAIBAO_`` prefix. Secrets are ``SecretStr`` and are unwrapped only in
the adapter that needs them (the SMTP sender, an HTTP source, the archive's and the lake's
filesystems).
Validation errors never echo the values given (``hide_input_in_errors``): a bad secret must not
end up in a log.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GAIBAO_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    home: Path = Field(default=Path("./var"), description="root of inbox/, archive/, lake/, reports/, outbox/")
    warehouse_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///$GAIBAO_HOME/warehouse.db"
    )
    sources: Path | None = Field(default=None, description="YAML file giving counties non-default sources")
    archive_url: str | None = Field(
        default=None,
        description="the raw archive: a local folder or an fsspec URL (sftp://user@host:port/path, "
        "s3://bucket/prefix, memory://name, file:///path); default $GAIBAO_HOME/archive",
    )
    archive_storage_options: SecretStr | None = Field(
        default=None,
        description="fsspec storage options of the archive, a JSON or YAML mapping (password, keys, "
        "known_hosts, endpoint_url, ...): a secret, never in the repo",
    )
    lake_url: str | None = Field(
        default=None,
        description="the Parquet lake: a local folder or an fsspec URL (sftp://user@host:port/path, "
        "s3://bucket/prefix, memory://name, file:///path); default $GAIBAO_HOME/lake",
    )
    lake_storage_options: SecretStr | None = Field(
        default=None,
        description="fsspec storage options of the lake, a JSON or YAML mapping (password, keys, "
        "known_hosts, endpoint_url, ...): a secret, never in the repo",
    )
    archive_verify_max_bytes: int | None = Field(
        default=None,
        ge=0,
        description="an object already in the archive is re-hashed on put up to this size (0: size "
        "only); default 16 MiB on fsspec URLs, 0 on a local folder",
    )
    replay_file_times: bool = Field(
        default=False,
        description="take a folder file's mtime as its received_at (never later than the read): only "
        "for replaying files whose times are known to be their arrivals, such as the demo. Off: "
        "received_at is when gaibao read the bytes, whatever the file claims",
    )
    due_day: int = Field(default=5, ge=1, le=28, description="returns for month P are due by this day of P+1")
    timezone: str = "Asia/Shanghai"

    # fetching
    fetch_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="deadline of one request as a whole: an HTTP request from connect to the last byte "
        "(headers included), an SFTP connection and each listing and file, a database query and its rows",
    )
    fetch_retries: int = 3
    fetch_backoff_s: float = 1.0
    correction_months: int = Field(
        default=12,
        ge=0,
        le=120,
        description="the nightly run also takes new files for this many months before its period "
        "(late corrections); files for earlier periods are refused (0: last month only)",
    )
    read_processes: int | None = Field(
        default=None,
        ge=0,
        description="reader processes that parse county files in parallel (every file is parsed in one, "
        "under the wall-time and memory bounds), and the shards a large batch is judged in (default: "
        "one per CPU when there are two or more; 0: one reader, and judge in one batch)",
    )

    # reading one county file: past any of these bounds the file is refused alone (tasks.read)
    read_max_file_bytes: int = Field(default=64 * 1024 * 1024, ge=1, description="size of one file as received")
    read_max_unzipped_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1, description="an XLSX's members inflated, declared and actual"
    )
    read_max_rows: int = Field(default=100_000, ge=1, description="rows of a sheet, CSV or JSON file")
    read_max_columns: int = Field(default=256, ge=1, description="columns of a sheet or CSV row")
    read_max_cells: int = Field(default=5_000_000, ge=1, description="rows x columns of a sheet's used range")
    read_max_cell_chars: int = Field(default=32_767, ge=1, description="characters in one cell (Excel's own limit)")
    read_max_json_depth: int = Field(default=32, ge=2, description="nesting of arrays and objects in a JSON file")
    read_max_seconds: float = Field(
        default=60.0, gt=0, description="wall time for one file in a reader process (then it is stopped: READ_TIMEOUT)"
    )
    read_max_memory_mb: int = Field(
        default=2048, ge=64, description="resident memory of a reader process while it reads one file (READ_MEMORY)"
    )

    # reports and mail
    recipients: Path | None = Field(default=None, description="YAML file of pack and letter recipients")
    thresholds: Path | None = Field(default=None, description="YAML file overriding exception thresholds")
    score_weights: Path | None = Field(default=None, description="YAML file overriding scorecard weights")
    mail_mode: Literal["outbox", "smtp"] = "outbox"
    mail_from: str = "gaibao@localhost"
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_security: Literal["none", "starttls", "ssl"] = "none"
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_s: float = 30.0
    data_engineers: list[str] = Field(default_factory=list, description="addresses paged when a nightly run fails")

    # circulars (通报) and summons (约谈), reports/circular.py
    circular_office: str = Field(default="全面改薄工作领导小组办公室", description="the office that issues the circular")
    circular_number_prefix: str = Field(default="改薄办通", description="the circular's number: <prefix>〔YYYY〕M号")
    summons_lag_months: int = Field(default=3, ge=1, description="propose a summons after this many months behind (N)")
    summons_not_started_days: int = Field(
        default=180, ge=1, description="... or for a project not started this many days past its planned start (M)"
    )
    chromium: Path = Field(default=Path("/usr/bin/chromium"), description="headless Chromium, prints the circular's PDF")

    # scale-out
    task_runner: Literal["default", "dask"] = "default"
    dask_address: str | None = None

    # the web portal (portal/, ``gaibao serve``)
    portal_secret_key: SecretStr | None = Field(
        default=None,
        description="signs the portal's session cookies: a secret; unset, the embedded portal keeps a "
        "random key in $GAIBAO_HOME/portal/session.key",
    )
    portal_https_only: bool = Field(default=False, description="session cookie only over HTTPS (behind a proxy)")
    portal_upload_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="largest upload accepted")
    portal_unzip_max_bytes: int = Field(
        default=100 * 1024 * 1024, ge=1024, description="largest XLSX upload once unzipped"
    )
    portal_ingest_deployment: str | None = Field(
        default=None, description="Prefect deployment ('flow/deployment') run at once for a submitted return"
    )

    @field_validator("archive_url", "lake_url")
    @classmethod
    def _check_location_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        value = (value or "").strip()
        if not value:
            return None
        if "://" in value:
            name = f"GAIBAO_{info.field_name.upper()}"
            parts = urlsplit(value)
            _ = parts.port  # raises ValueError on a malformed port
            if parts.password is not None:
                raise ValueError(
                    f"{name} must not carry a password: put it in {name.removesuffix('_URL')}_STORAGE_OPTIONS"
                )
            import fsspec

            if parts.scheme.lower() not in fsspec.available_protocols():
                raise ValueError(f"{name}: {parts.scheme!r} is not an fsspec protocol")
        return value

    @field_validator("archive_storage_options", "lake_storage_options")
    @classmethod
    def _check_storage_options(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        # fail at start-up, not at the first write
        parse_storage_options(value, setting=f"GAIBAO_{info.field_name.upper()}")
        return value

    @model_validator(mode="after")
    def _default_warehouse(self) -> Settings:
        if not self.warehouse_url:
            self.warehouse_url = f"sqlite:///{(self.home / 'warehouse.db').resolve()}"
        return self

    # The layout under GAIBAO_HOME: one definition, used everywhere.
    @property
    def inbox_dir(self) -> Path:
        return self.home / "inbox"

    @property
    def archive_dir(self) -> Path:
        return self.home / "archive"

    @property
    def archive_location(self) -> str:
        """Where the archive lives: ``GAIBAO_ARCHIVE_URL``, else the local ``archive_dir``."""
        return self.archive_url or str(self.archive_dir)

    @property
    def lake_dir(self) -> Path:
        return self.home / "lake"

    @property
    def lake_location(self) -> str:
        """Where the lake lives: ``GAIBAO_LAKE_URL``, else the local ``lake_dir``."""
        return self.lake_url or str(self.lake_dir)

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def outbox_dir(self) -> Path:
        return self.home / "outbox"

    @property
    def portal_dir(self) -> Path:
        return self.home / "portal"


def parse_storage_options(
    value: SecretStr | str | None, *, setting: str = "GAIBAO_ARCHIVE_STORAGE_OPTIONS"
) -> dict[str, Any]:
    """fsspec storage options from their JSON or YAML text (``{}`` when none are given).

    Raises ``ValueError`` whose message names ``setting`` and says what is wrong and where, never
    the text itself (it holds credentials).
    """
    if value is None:
        return {}
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if not text.strip():
        return {}
    try:
        parsed = json.loads(text)
    except ValueError:
        import yaml

        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise ValueError(f"{setting} is neither JSON nor YAML{where}") from None
    if not isinstance(parsed, dict) or not all(isinstance(k, str) for k in parsed):
        raise ValueError(f"{setting} must be a mapping of option names to values")
    return parsed


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing the env."""
    return Settings()
