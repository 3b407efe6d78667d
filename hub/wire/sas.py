"""Shared access signatures and connection strings, exactly as IoT Hub forms them."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import time
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

__all__ = [
    "LOCAL_HOSTNAMES",
    "ConnectionString",
    "SasToken",
    "SasTokenError",
    "device_resource_uri",
    "generate_sas_token",
    "hub_hosts",
    "parse_connection_string",
    "parse_sas_token",
    "resource_host",
    "sign",
    "signature_matches",
]

_PREFIX = "SharedAccessSignature "


class SasTokenError(ValueError):
    """A token or connection string that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class SasToken:
    """A parsed ``SharedAccessSignature sr=..&sig=..&se=..[&skn=..]``; ``resource`` is url-decoded."""

    resource: str
    signature: str = field(repr=False)  # a bearer credential until it expires
    expiry: int
    key_name: str | None
    raw_resource: str

    def is_expired(self, now: float | None = None) -> bool:
        return self.expiry <= (time.time() if now is None else now)


def device_resource_uri(hostname: str, device_id: str) -> str:
    return f"{hostname}/devices/{device_id}"


def _decode_key(key_b64: str) -> bytes:
    try:
        return base64.b64decode(key_b64, validate=True)
    except (binascii.Error, ValueError) as exc:  # ValueError: non-ASCII text
        raise SasTokenError("key is not valid base64") from exc


def _signature(key: bytes, raw_resource: str, expiry: int) -> str:
    digest = hmac.new(key, f"{raw_resource}\n{expiry}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def sign(key_b64: str, raw_resource: str, expiry: int) -> str:
    """The base64 HMAC-SHA256 of ``raw_resource + "\\n" + expiry`` under the base64 key."""
    return _signature(_decode_key(key_b64), raw_resource, expiry)


def signature_matches(token: SasToken, *keys_b64: str) -> bool:
    """Whether the token was signed with any of ``keys_b64``, in constant time.

    SDKs differ in whether they sign the url-encoded or the plain resource, so the form on
    the wire, its canonical encoding and the plain form are all tried. Every key and every
    form is compared with ``hmac.compare_digest`` and none is skipped once one matches, so
    the time taken tells neither whether nor which key matched. A key that is not base64
    never matches.
    """
    given = token.signature.encode()
    resources = (token.raw_resource, quote(token.resource, safe=""), token.resource)
    ok = False
    for key_b64 in keys_b64:
        try:
            key = _decode_key(key_b64)
        except SasTokenError:
            continue
        for resource in resources:
            ok |= hmac.compare_digest(_signature(key, resource, token.expiry).encode(), given)
    return ok


def resource_host(resource: str) -> str | None:
    """The host a service token's url-decoded ``sr`` names, for comparing with the hub's names.

    ``sr`` may carry a ``:port`` (SDKs sign the connection string's HostName as it is) and an
    IPv6 address may be bracketed; the host comes back lower-cased, IP addresses in canonical
    form. ``None`` when ``sr`` is not a host with an optional port (a path, an empty host, a
    port that is not a number).
    """
    if resource.startswith("["):  # only an IPv6 address goes in brackets
        host, sep, rest = resource[1:].partition("]")
        if not sep or ":" not in host or (rest and not (rest.startswith(":") and _is_port(rest[1:]))):
            return None
    elif resource.count(":") == 1:
        host, _, port = resource.partition(":")
        if not _is_port(port):
            return None
    else:  # no port, or a bare IPv6 address
        host = resource
    if not host or any(c in host for c in "/?#@[] "):
        return None
    host = host.lower()
    try:
        return ipaddress.ip_address(host).compressed
    except ValueError:
        return host


LOCAL_HOSTNAMES = ("localhost", "127.0.0.1", "::1")
"""Names a hub answers to besides its hostname: those its generated TLS certificate carries."""


def hub_hosts(hostname: str) -> frozenset[str]:
    """What ``resource_host`` gives for every name of a hub called ``hostname``."""
    return frozenset(host for host in map(resource_host, (hostname, *LOCAL_HOSTNAMES)) if host)


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5 and int(text) <= 65535


def generate_sas_token(
    resource: str, key_b64: str, *, ttl: int = 3600, key_name: str | None = None, now: float | None = None
) -> str:
    expiry = int((time.time() if now is None else now) + ttl)
    raw = quote(resource, safe="")
    sig = quote(sign(key_b64, raw, expiry), safe="")
    token = f"{_PREFIX}sr={raw}&sig={sig}&se={expiry}"
    if key_name:
        token += f"&skn={quote(key_name, safe='')}"
    return token


def parse_sas_token(text: str) -> SasToken:
    if not text.startswith(_PREFIX):
        raise SasTokenError("token must start with 'SharedAccessSignature '")
    body = text[len(_PREFIX) :].strip()
    raw_fields: dict[str, str] = {}
    for part in body.split("&"):
        name, sep, value = part.partition("=")
        if not sep:
            raise SasTokenError(f"malformed token field {part!r}")
        raw_fields[name] = value
    missing = {"sr", "sig", "se"} - raw_fields.keys()
    if missing:
        raise SasTokenError(f"token lacks {', '.join(sorted(missing))}")
    # Plain ASCII digits only: int() would also take " 1", "1_0", "+1" and non-ASCII digits.
    se = raw_fields["se"]
    if not (se.isascii() and se.isdigit() and len(se) <= 18):
        raise SasTokenError("token expiry 'se' is not an integer")
    expiry = int(se)
    skn = raw_fields.get("skn")
    return SasToken(
        resource=unquote(raw_fields["sr"]),
        signature=unquote(raw_fields["sig"]),
        expiry=expiry,
        key_name=unquote(skn) if skn is not None else None,
        raw_resource=raw_fields["sr"],
    )


@dataclass(frozen=True, slots=True)
class ConnectionString:
    """``HostName=..;SharedAccessKeyName=..;SharedAccessKey=..`` (a service policy) or
    ``HostName=..;DeviceId=..;SharedAccessKey=..`` (a device)."""

    hostname: str
    shared_access_key: str = field(repr=False)  # a secret: keep it out of logs and tracebacks
    key_name: str | None = None
    device_id: str | None = None
    gateway_hostname: str | None = None

    def __str__(self) -> str:
        parts = [f"HostName={self.hostname}"]
        if self.device_id is not None:
            parts.append(f"DeviceId={self.device_id}")
        if self.key_name is not None:
            parts.append(f"SharedAccessKeyName={self.key_name}")
        parts.append(f"SharedAccessKey={self.shared_access_key}")
        if self.gateway_hostname:
            parts.append(f"GatewayHostName={self.gateway_hostname}")
        return ";".join(parts)


def parse_connection_string(text: str) -> ConnectionString:
    fields: dict[str, str] = {}
    for part in text.strip().split(";"):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise SasTokenError(f"malformed connection string field {part!r}")
        fields[name.strip()] = value.strip()
    if not fields.get("HostName") or not fields.get("SharedAccessKey"):
        raise SasTokenError("connection string needs HostName and SharedAccessKey")
    if ("DeviceId" in fields) == ("SharedAccessKeyName" in fields):
        raise SasTokenError("connection string needs exactly one of DeviceId or SharedAccessKeyName")
    return ConnectionString(
        hostname=fields["HostName"],
        shared_access_key=fields["SharedAccessKey"],
        key_name=fields.get("SharedAccessKeyName"),
        device_id=fields.get("DeviceId"),
        gateway_hostname=fields.get("GatewayHostName"),
    )
