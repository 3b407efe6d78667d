"""Where and as whom a device connects: MQTT endpoint, TLS context, SAS credentials."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from os import PathLike
from urllib.parse import urlsplit

from hub.wire.sas import SasTokenError, device_resource_uri, generate_sas_token, parse_connection_string

__all__ = ["MQTTS_PORT", "MQTT_PORT", "DeviceIdentity", "MqttEndpoint", "split_hostname", "tls_context"]

MQTT_PORT = 1883
MQTTS_PORT = 8883


def split_hostname(hostname: str) -> tuple[str, int | None]:
    """``"hub.example:8443"`` -> ``("hub.example", 8443)``; also handles ``[::1]:8443``."""
    parts = urlsplit(f"//{hostname}")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in host name {hostname!r}") from exc
    return parts.hostname or hostname, port


def tls_context(ca_cert: str | PathLike[str] | None = None) -> ssl.SSLContext:
    """A client context that checks the certificate chain and host name; ``ca_cert`` adds a trust root."""
    return ssl.create_default_context(cafile=str(ca_cert) if ca_cert is not None else None)


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    """The broker address; ``tls`` (shared by every device of a fleet) turns on MQTT over TLS, whose
    certificate is checked against ``host``."""

    host: str
    port: int
    tls: ssl.SSLContext | None = None

    @classmethod
    def for_hub(
        cls,
        hostname: str,
        *,
        host: str | None = None,
        port: int | None = None,
        tls: bool = True,
        ca_cert: str | PathLike[str] | None = None,
    ) -> MqttEndpoint:
        """Defaults: host = the HostName without its port, port 8883 with TLS or 1883 without."""
        return cls(
            host or split_hostname(hostname)[0],
            port or (MQTTS_PORT if tls else MQTT_PORT),
            tls_context(ca_cert) if tls else None,
        )


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """A device's id, its hub's HostName and the key that signs its SAS passwords."""

    hostname: str
    device_id: str
    key: str = field(repr=False)

    @classmethod
    def from_connection_string(cls, connection_string: str) -> DeviceIdentity:
        """From ``HostName=..;DeviceId=..;SharedAccessKey=..``; raises ``SasTokenError`` otherwise."""
        parsed = parse_connection_string(connection_string)
        if parsed.device_id is None:
            raise SasTokenError("a device connection string (with DeviceId) is needed")
        return cls(parsed.hostname, parsed.device_id, parsed.shared_access_key)

    def username(self, api_version: str) -> str:
        return f"{self.hostname}/{self.device_id}/?api-version={api_version}"

    def password(self, ttl: int, now: float | None = None) -> str:
        """A fresh SAS token for ``{hostname}/devices/{device_id}``, valid ``ttl`` seconds."""
        return generate_sas_token(device_resource_uri(self.hostname, self.device_id), self.key, ttl=ttl, now=now)
