"""CA certificates for X.509 devices: registered through the API (stored) or given to the hub
at start (``--device-ca``, read-only), and the cache of them that logins check against."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from hub.domain.certificates import CaCertificate, fingerprint_of, load_ca_certificate, validate_certificate_name
from hub.domain.clock import Clock
from hub.domain.devices import etag_matches
from hub.domain.events import CertificateRevoked
from hub.errors import ConcurrencyConflictError, PreconditionFailedError
from hub.ports import CertificateStore, EventBroker

__all__ = ["CertificateService"]

log = logging.getLogger(__name__)

# Another hub sharing the database may change the CAs; this one notices within this time.
_CACHE_SECONDS = 5.0


def _revision_of(if_match: str | None, certificate: CaCertificate) -> int | None:
    if not etag_matches(if_match, certificate.etag):
        raise PreconditionFailedError(f"etag {if_match} does not match the certificate's etag {certificate.etag}")
    return None if if_match is None or if_match.strip().strip('"') in ("", "*") else certificate.revision


class CertificateService:
    """A CA deleted or replaced stops admitting devices: CertificateRevoked is published, and
    the devices it admitted lose their connections (hub.engine.sessions.handler)."""

    def __init__(
        self,
        store: CertificateStore,
        clock: Clock,
        events: EventBroker,
        *,
        static: Sequence[x509.Certificate] = (),
    ) -> None:
        self._store = store
        self._clock = clock
        self._events = events
        self._static = list(static)
        self._cached: list[x509.Certificate] | None = None
        self._cached_at = 0.0

    async def put(self, name: str, text: str, if_match: str | None) -> CaCertificate:
        """Register a CA under ``name``: create it without ``If-Match``, replace it with one."""
        validate_certificate_name(name)
        cert = load_ca_certificate(text)
        now = self._clock.now()
        certificate = CaCertificate(name, cert.public_bytes(Encoding.PEM).decode(), now, now)
        if if_match is None:
            await self._store.add_certificate(certificate)
            self._cached = None
            log.info("CA certificate %s registered (%s)", name, cert.subject.rfc4514_string())
            return certificate
        current = await self._store.get_certificate(name)
        try:
            stored = await self._store.replace_certificate(
                certificate, expected_revision=_revision_of(if_match, current)
            )
        except ConcurrencyConflictError as exc:
            raise PreconditionFailedError(f"certificate {name!r} changed meanwhile") from exc
        self._cached = None
        if current.pem != stored.pem:
            await self._revoke(current)
        return stored

    async def get(self, name: str) -> CaCertificate:
        return await self._store.get_certificate(name)

    async def list_all(self) -> list[CaCertificate]:
        return await self._store.list_certificates()

    async def delete(self, name: str, if_match: str | None) -> None:
        current = await self._store.get_certificate(name)
        try:
            await self._store.remove_certificate(name, expected_revision=_revision_of(if_match, current))
        except ConcurrencyConflictError as exc:
            raise PreconditionFailedError(f"certificate {name!r} changed meanwhile") from exc
        self._cached = None
        log.info("CA certificate %s deleted", name)
        await self._revoke(current)

    async def _revoke(self, certificate: CaCertificate) -> None:
        await self._events.publish(CertificateRevoked(fingerprint_of(certificate.certificate)))

    async def authorities(self) -> list[x509.Certificate]:
        """The CAs that admit certificateAuthority devices: ``--device-ca`` and the registered ones."""
        now = self._clock.monotonic()
        if self._cached is None or now - self._cached_at > _CACHE_SECONDS:
            stored = [certificate.certificate for certificate in await self._store.list_certificates()]
            self._cached, self._cached_at = self._static + stored, now
        return self._cached
