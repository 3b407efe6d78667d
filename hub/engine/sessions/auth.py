"""Device logins: SAS tokens checked with the device's keys, X.509 certificates checked
against the device's thumbprints or the registered CAs."""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence

from hub.domain.certificates import check_device_certificate, fingerprint_of
from hub.domain.clock import Clock
from hub.domain.devices import Device, DeviceStatus
from hub.engine.sessions.certificates import CertificateService
from hub.errors import DeviceNotFoundError, ServiceUnavailableError
from hub.ports import DeviceStore
from hub.wire.sas import SasTokenError, hub_hosts, parse_sas_token, resource_host, signature_matches

__all__ = ["DeviceAuthenticator"]

log = logging.getLogger(__name__)

_CACHE_SIZE = 100_000
# Real device tokens stay well under 1 KB (a 128-character id, a hostname, a signature).
_MAX_TOKEN_CHARS = 4096


def _username_names(username: str | None, client_id: str) -> bool:
    """IoT Hub usernames are ``{host}/{deviceId}/?api-version=..``; a bare device id is accepted too."""
    if username is None or username == client_id:
        return True
    path = username.split("/?", 1)[0].rstrip("/")
    return path.endswith(f"/{client_id}") or path == client_id


class DeviceAuthenticator:
    """Device logins: a SAS token (``password``) for sas devices, a TLS client certificate
    (``certificates``, the DER chain the device sent) for X.509 devices.

    SAS: an HMAC per new token, then a cache keyed by a digest of the token and the keys it was
    checked against (a re-key or a disable invalidates it by construction). Everything that
    needs no key is checked first (length, form, expiry, lifetime, the device the username and
    the token name, the hub ``hostname`` when given), so most bad logins cost neither a
    database read nor an HMAC.

    X.509: hub.domain.certificates decides, against the CAs of ``certificates``. Which CA
    admitted each certificateAuthority device is remembered, so that deleting or replacing
    that CA can drop the devices it no longer admits (``admitted_by``).
    """

    def __init__(
        self,
        store: DeviceStore,
        clock: Clock,
        *,
        max_token_lifetime: int,
        hostname: str | None = None,
        certificates: CertificateService | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._max_lifetime = max_token_lifetime
        self._hosts = hub_hosts(hostname) if hostname else None
        self._certificates = certificates
        self._verified: OrderedDict[tuple[bytes, str, str, str], bool] = OrderedDict()
        self._admitted_by: dict[str, str] = {}

    def admitted_by(self, fingerprint: str) -> list[str]:
        """The devices whose last certificate login the CA with this SHA-256 ``fingerprint``
        (hub.domain.certificates.fingerprint_of) admitted."""
        return [device_id for device_id, by in self._admitted_by.items() if by == fingerprint]

    async def authenticate(
        self, client_id: str, username: str | None, password: str | None, certificates: Sequence[bytes] = ()
    ) -> bool:
        if not client_id or not _username_names(username, client_id):
            return False
        if password:
            return await self._check_token(client_id, password)
        if certificates:
            return await self._check_certificate(client_id, certificates)
        return False

    async def _device(self, client_id: str) -> Device | None:
        try:
            device = await self._store.get_device(client_id)
        except DeviceNotFoundError:
            return None
        except ServiceUnavailableError:
            log.warning("login of %s refused: database unavailable", client_id)
            return None
        return device if device.status is DeviceStatus.ENABLED else None

    async def _check_certificate(self, client_id: str, chain: Sequence[bytes]) -> bool:
        device = await self._device(client_id)
        if device is None:
            return False
        if device.auth.uses_keys:
            log.info("refused certificate login of %s: the device authenticates with SAS tokens", client_id)
            return False
        try:
            authorities = await self._certificates.authorities() if self._certificates is not None else []
        except ServiceUnavailableError:
            log.warning("login of %s refused: database unavailable", client_id)
            return False
        check = check_device_certificate(client_id, device.auth, chain, authorities, self._clock.now())
        if not check.admitted:
            log.info("refused certificate login of %s: %s", client_id, check.refusal)
            return False
        if check.authority is not None:
            self._admitted_by[client_id] = fingerprint_of(check.authority)
        return True

    async def _check_token(self, client_id: str, password: str) -> bool:
        if len(password) > _MAX_TOKEN_CHARS:
            return False
        try:
            token = parse_sas_token(password)
        except SasTokenError:
            return False
        now = self._clock.now().timestamp()
        if token.is_expired(now) or token.expiry - now > self._max_lifetime or token.key_name is not None:
            return False
        host, sep, device_part = token.resource.partition("/devices/")
        if not sep or not host or device_part != client_id:
            return False
        if self._hosts is not None and resource_host(host) not in self._hosts:
            return False  # signed for another hub: the same keys may be registered there
        device = await self._device(client_id)
        if device is None or device.keys is None:
            return False
        # A digest, not the token: the cache must not grow with what clients choose to send.
        digest = hashlib.sha256(password.encode("utf-8", "surrogatepass")).digest()
        cache_key = (digest, client_id, device.keys.primary, device.keys.secondary)
        verdict = self._verified.get(cache_key)
        if verdict is None:
            verdict = signature_matches(token, *device.keys.all())
            self._verified[cache_key] = verdict
            if len(self._verified) > _CACHE_SIZE:
                self._verified.popitem(last=False)
        else:
            self._verified.move_to_end(cache_key)
        return verdict
