"""Where and as whom a device connects: MQTT endpoint, TLS context, SAS or X.509 credentials."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from urllib.parse import urlsplit

from hub.wire.sas import SasTokenError, device_resource_uri, generate_sas_token, parse_connection_string

__all__ = [
    "MQTTS_PORT",
    "MQTT_PORT",
    "DeviceIdentity",
    "MqttEndpoint",
    "X509Credential",
    "split_hostname",
    "tls_context",
]

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
    ca_cert: str | None = None  # the trust root ``tls`` was built with, for per-device contexts

    def tls_for(self, identity: DeviceIdentity) -> ssl.SSLContext | None:
        """The TLS context ``identity`` connects with: the shared one, or for an X.509 device a
        context of its own that presents its certificate."""
        if self.tls is None or identity.certificate is None:
            return self.tls
        context = tls_context(self.ca_cert)
        context.load_cert_chain(identity.certificate.cert_file, identity.certificate.key_file)
        return context

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
            str(ca_cert) if ca_cert is not None else None,
        )


@dataclass(frozen=True, slots=True)
class X509Credential:
    """A device's TLS client certificate (PEM, with any intermediates after it) and its key."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """A device's id, its hub's HostName and how it logs in: the key that signs its SAS
    passwords, or an X.509 certificate (then it sends no password)."""

    hostname: str
    device_id: str
    key: str | None = field(default=None, repr=False)
    certificate: X509Credential | None = None

    def __post_init__(self) -> None:
        if (self.key is None) == (self.certificate is None):
            raise ValueError(f"device {self.device_id!r} needs a key or a certificate, not both or neither")

    @classmethod
    def from_connection_string(cls, connection_string: str) -> DeviceIdentity:
        """From ``HostName=..;DeviceId=..;SharedAccessKey=..``; raises ``SasTokenError`` otherwise."""
        parsed = parse_connection_string(connection_string)
        if parsed.device_id is None:
            raise SasTokenError("a device connection string (with DeviceId) is needed")
        return cls(parsed.hostname, parsed.device_id, parsed.shared_access_key)

    def username(self, api_version: str) -> str:
        return f"{self.hostname}/{self.device_id}/?api-version={api_version}"

    def password(self, ttl: int, now: float | None = None) -> str | None:
        """A fresh SAS token for ``{hostname}/devices/{device_id}``, valid ``ttl`` seconds
        (None for an X.509 device: its certificate logs it in)."""
        if self.key is None:
            return None
        return generate_sas_token(device_resource_uri(self.hostname, self.device_id), self.key, ttl=ttl, now=now)
