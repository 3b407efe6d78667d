"""Connection strings for the CLI, read from the hub's database."""

from __future__ import annotations

from hub.config import Settings
from hub.datadir import read_run_record
from hub.errors import DeviceNotFoundError, ServiceUnavailableError
from hub.storage.sql import SqlStore
from hub.wire.sas import ConnectionString

__all__ = ["ConnectionStringError", "hub_hostname", "lookup_connection_string"]


class ConnectionStringError(Exception):
    """The data dir or database has no such policy or device."""


def hub_hostname(settings: Settings) -> tuple[str, str | None]:
    """The HostName for connection strings, and a note when it is only a guess: ``--hostname``
    (or FLEETHUB_HOSTNAME) when given, else the name the hub last served as (``hub.json`` in
    its data dir), else the default."""
    if "hostname" in settings.model_fields_set:
        return settings.hostname, None
    recorded = read_run_record(settings.data_dir).get("hostname")
    if isinstance(recorded, str) and recorded:
        return recorded, None
    return settings.hostname, (
        f"HostName={settings.hostname} is the default: the hub in {settings.data_dir} has not recorded its host "
        "name yet; if it runs with --hostname NAME, pass --hostname NAME here too"
    )


async def lookup_connection_string(
    settings: Settings, *, policy: str | None = None, device_id: str | None = None
) -> str:
    hostname, _ = hub_hostname(settings)
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
                if device.keys is None:
                    raise ConnectionStringError(
                        f"device {device_id!r} authenticates with an X.509 certificate ({device.auth.kind.value}): "
                        "it has no keys, so no connection string; give the SDK its certificate instead"
                    )
                return str(ConnectionString(hostname, device.keys.primary, device_id=device_id))
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
    return str(ConnectionString(hostname, policies[wanted].primary_key, key_name=wanted))
