"""Hub settings: the only place that reads the environment (``FLEETHUB_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Every knob of ``hub serve``; each is a CLI flag and a ``FLEETHUB_<NAME>`` variable."""

    model_config = SettingsConfigDict(env_prefix="FLEETHUB_", extra="ignore")

    data_dir: Path = Path("./fleethub-data")
    hostname: str = "localhost"
    bind_address: str = "0.0.0.0"
    http_port: int = Field(8080, ge=0, le=65535)
    https_port: int = Field(8443, ge=0, le=65535)
    mqtt_port: int = Field(1883, ge=0, le=65535)
    mqtts_port: int = Field(8883, ge=0, le=65535)
    database_url: str | None = None
    owner_key: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    log_level: str = "INFO"

    # Limits and timings.
    max_active_jobs: int = Field(10, ge=1)
    job_retention_days: int = Field(30, ge=1)
    presence_flush_seconds: float = Field(0.2, gt=0)
    session_expiry_seconds: int = Field(3600, ge=1)
    max_token_lifetime_seconds: int = Field(365 * 24 * 3600, ge=60)

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'fleethub.db').resolve()}"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"
