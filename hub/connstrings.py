"""Connection strings for the CLI, read from the hub's database."""

from __future__ import annotations

from hub.config import Settings
from hub.errors import DeviceNotFoundError, ServiceUnavailableError
from hub.storage.sql import SqlStore
from hub.wire.sas import ConnectionString

__all__ = ["ConnectionStringError", "lookup_connection_string"]


class ConnectionStringError(Exception):
    """The data dir or database has no such policy or device."""


async def lookup_connection_string(
    settings: Settings, *, policy: str | None = None, device_id: str | None = None
) -> str:
    url = settings.resolved_database_url
    if url.startswith("sqlite") and not (settings.data_dir / "fleethub.db").exists() and not settings.database_url:
        raise ConnectionStringError(
            f"no hub data in {settings.data_dir}: start `python -m hub serve --data-dir {settings.data_dir}` once first"
        )
    try:
        async with SqlStore.open(url) as store:
            if device_id is not None:
                try:
                    device = await store.get_device(device_id)
                except DeviceNotFoundError:
                    raise ConnectionStringError(f"no device {device_id!r} in the registry") from None
                return str(ConnectionString(settings.hostname, device.keys.primary, device_id=device_id))
            wanted = policy or "iothubowner"
            policies = {p.name: p for p in await store.list_policies()}
    except ServiceUnavailableError as exc:
        raise ConnectionStringError(f"database unavailable: {exc.message}") from None
    if not policies:  # the database exists but no start got as far as creating the policies
        raise ConnectionStringError(
            f"the hub in {settings.data_dir} has no access policies yet: start `python -m hub serve` once first"
        )
    if wanted not in policies:
        raise ConnectionStringError(f"no policy {wanted!r}; the hub has {', '.join(sorted(policies))}")
    return str(ConnectionString(settings.hostname, policies[wanted].primary_key, key_name=wanted))
