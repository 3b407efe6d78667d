"""Hub settings: the only place that reads the environment (``FLEETHUB_*``)."""

from __future__ import annotations

import base64
import binascii
import logging
import socket
from pathlib import Path
from typing import Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]

_DATABASE_SCHEMES = {"sqlite", "sqlite+aiosqlite", "postgres", "postgresql", "postgresql+asyncpg"}


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
    device_ca: Path | None = None
    """PEM file of CA certificates that admit certificateAuthority devices, besides those
    registered with ``PUT /certificates/{name}``."""
    log_level: str = "INFO"

    # Limits and timings.
    max_active_jobs: int = Field(10, ge=1)
    job_retention_days: int = Field(30, ge=1)
    job_call_window: int = Field(1000, ge=1)
    """How many direct-method calls one job keeps in flight at once."""
    continuous_job_interval_seconds: float = Field(10.0, gt=0)
    """The longest a continuous job goes without looking for devices that came to match its
    query; changes made through this hub make it look at once."""
    schedule_grace_seconds: int = Field(600, ge=0)
    """How late a schedule's run may still start (after downtime): one catch-up run at most."""
    schedule_run_history: int = Field(30, ge=1, le=1000)
    """How many runs ``GET /schedules/{id}/runs`` lists when ``top`` is not given."""
    max_method_calls_per_device: int = Field(64, ge=1)
    """Direct-method calls in flight to one device; one more is refused with 429 ThrottlingException."""
    max_twin_gets_per_device: int = Field(32, ge=1)
    """Twin GETs one device may have in flight; more are answered ``$iothub/twin/res/429``."""
    # Hubs sharing one database need distinct node ids; a restarted hub with the same id
    # takes its unfinished jobs back at once instead of waiting for their leases to expire.
    node_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=128)
    presence_flush_seconds: float = Field(0.2, gt=0)
    session_expiry_seconds: int = Field(3600, ge=1)
    max_token_lifetime_seconds: int = Field(365 * 24 * 3600, ge=60)
    # REST clients: bodies over the limit get 413, bodies or headers slower than these get 408.
    http_max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    """Largest REST request body; 2 MiB holds a 1000-device bulk import (about 1 MB) with room to spare."""
    http_header_timeout_seconds: float = Field(10.0, gt=0)
    """Time a REST connection has to send a request's headers, from opening or the request's first byte."""
    http_body_timeout_seconds: float = Field(30.0, gt=0)
    """Time a REST request has to deliver its whole body once its headers are in."""

    @field_validator("owner_key")
    @classmethod
    def _owner_key_is_a_key(cls, value: str | None) -> str | None:
        # Checked here, before the hub creates anything, and again where policies are made.
        if value is None:
            return None
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):  # ValueError: non-ASCII text
            raise ValueError("not base64") from None
        if len(raw) < 16:
            raise ValueError("must decode to at least 16 bytes (base64 of 32 random bytes is usual)")
        return value

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str | None) -> str | None:
        # The URL itself is never echoed: it may carry a password.
        if value and value.partition("://")[0] not in _DATABASE_SCHEMES:
            raise ValueError(
                "use sqlite+aiosqlite:///path or postgresql+asyncpg://user@host:5432/db "
                "(sqlite:// and postgresql:// mean the same)"
            )
        return value or None

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        if not isinstance(logging.getLevelName(value.upper()), int):
            raise ValueError("log level must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
        return value.upper()

    @model_validator(mode="after")
    def _tls_cert_and_key_together(self) -> Self:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("give both --tls-cert and --tls-key (FLEETHUB_TLS_CERT, FLEETHUB_TLS_KEY), or neither")
        return self

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'fleethub.db').resolve()}"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"
