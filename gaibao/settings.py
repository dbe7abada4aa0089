"""The one place that reads the environment.

Every setting has the ``GAIBAO_`` prefix. Secrets are ``SecretStr`` and are unwrapped only in
the adapter that needs them (the SMTP sender, an HTTP source).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GAIBAO_", env_file=".env", extra="ignore")

    home: Path = Field(default=Path("./var"), description="root of inbox/, archive/, lake/, reports/, outbox/")
    warehouse_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///$GAIBAO_HOME/warehouse.db"
    )
    sources: Path | None = Field(default=None, description="YAML file giving counties non-default sources")
    due_day: int = Field(default=5, ge=1, le=28, description="returns for month P are due by this day of P+1")
    timezone: str = "Asia/Shanghai"

    # fetching
    fetch_timeout_s: float = 30.0
    fetch_retries: int = 3
    fetch_backoff_s: float = 1.0

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

    # scale-out
    task_runner: Literal["default", "dask"] = "default"
    dask_address: str | None = None

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
    def lake_dir(self) -> Path:
        return self.home / "lake"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def outbox_dir(self) -> Path:
        return self.home / "outbox"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing the env."""
    return Settings()
