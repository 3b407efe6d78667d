"""X.509 device authentication, pure: CA certificates operators register, and the checks a
device's TLS client certificate must pass to log in as a device.

- ``selfSigned`` devices: the leaf's SHA-1 or SHA-256 thumbprint must be one of the device's.
- ``certificateAuthority`` devices: the leaf's subject CN must equal the device id, and the
  chain the device sent must lead, signature by signature, to a registered CA.

Every certificate on the path must be valid at the time of the login (not expired, not yet
valid refused). Registering a CA stands in for IoT Hub's proof-of-possession step: whoever
may call ``PUT /certificates/{name}`` is trusted to own that CA.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from hub.domain.devices import AuthKind, DeviceAuth, etag_of
from hub.errors import BadRequestError

__all__ = [
    "MAX_CHAIN",
    "CaCertificate",
    "CertificateCheck",
    "check_device_certificate",
    "fingerprint_of",
    "load_ca_bundle",
    "load_ca_certificate",
    "thumbprints_of",
    "validate_certificate_name",
]

MAX_CHAIN = 8
"""Certificates a device may send (leaf and intermediates); IoT Hub's chains are shorter."""

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,256}")
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def validate_certificate_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise BadRequestError(f"certificate name {name!r} is invalid: use 1-256 ASCII letters, digits, '-', '_' or '.'")
    return name


def thumbprints_of(der: bytes) -> tuple[str, str]:
    """(SHA-1, SHA-256) of a DER certificate, upper-case hex, as IoT Hub shows thumbprints."""
    return hashlib.sha1(der).hexdigest().upper(), hashlib.sha256(der).hexdigest().upper()


def fingerprint_of(cert: x509.Certificate) -> str:
    """A certificate's SHA-256 thumbprint (what names a CA in hub events)."""
    return thumbprints_of(cert.public_bytes(Encoding.DER))[1]


def _common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        return None
    value = names[0].value
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class CaCertificate:
    """A registered CA: ``pem`` as given (one certificate), ``revision`` behind its etag."""

    name: str
    pem: str
    created_time: datetime
    updated_time: datetime
    revision: int = 1

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.pem.encode())

    @property
    def thumbprint(self) -> str:
        """SHA-1 (what IoT Hub's certificate API shows)."""
        return thumbprints_of(self.certificate.public_bytes(Encoding.DER))[0]

    @property
    def etag(self) -> str:
        return etag_of(self.revision)


def load_ca_certificate(text: str) -> x509.Certificate:
    """One CA certificate from PEM text or base64 DER (IoT Hub's ``properties.certificate``
    takes either); BadRequestError for anything else, for a leaf, or for several."""
    data = text.strip().encode("utf-8", "replace")
    blocks = _PEM.findall(data)
    if len(blocks) > 1:
        raise BadRequestError("give one CA certificate per name, not a bundle")
    try:
        if blocks:
            cert = x509.load_pem_x509_certificate(blocks[0])
        else:
            cert = x509.load_der_x509_certificate(base64.b64decode(data, validate=True))
    except (ValueError, binascii.Error):
        raise BadRequestError("certificate must be one X.509 certificate, PEM or base64 DER") from None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise BadRequestError("certificate is not a CA certificate (it needs basicConstraints CA:TRUE)")
    return cert


def load_ca_bundle(pem: bytes, origin: str) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, each a CA; BadRequestError naming ``origin`` if not."""
    blocks = _PEM.findall(pem)
    if not blocks:
        raise BadRequestError(f"{origin} holds no PEM certificate")
    try:
        return [load_ca_certificate(block.decode("ascii", "replace")) for block in blocks]
    except BadRequestError as exc:
        raise BadRequestError(f"{origin}: {exc.message}") from exc


def _valid_at(cert: x509.Certificate, now: datetime) -> bool:
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


@dataclass(frozen=True, slots=True)
class CertificateCheck:
    """The outcome of a certificate login: ``refusal`` says why not (None: admitted);
    ``authority`` is the registered CA that admitted a certificateAuthority device."""

    refusal: str | None
    authority: x509.Certificate | None = None

    @property
    def admitted(self) -> bool:
        return self.refusal is None


def _refused(reason: str) -> CertificateCheck:
    return CertificateCheck(reason)


def check_device_certificate(
    device_id: str, auth: DeviceAuth, chain: Sequence[bytes], cas: Sequence[x509.Certificate], now: datetime
) -> CertificateCheck:
    """Whether the certificate chain ``chain`` (DER, leaf first, as the device sent it) may log
    in as ``device_id``, whose identity says ``auth``; ``cas`` are the registered CAs."""
    if not chain:
        return _refused("no client certificate")
    if len(chain) > MAX_CHAIN:
        return _refused(f"a chain of {len(chain)} certificates (at most {MAX_CHAIN})")
    try:
        certs = [x509.load_der_x509_certificate(der) for der in chain]
    except ValueError:
        return _refused("an unreadable certificate")
    leaf = certs[0]
    if not _valid_at(leaf, now):
        return _refused("the certificate is expired or not yet valid")
    if auth.kind is AuthKind.SELF_SIGNED:
        if set(thumbprints_of(chain[0])).isdisjoint(auth.thumbprints()):
            return _refused("the certificate's thumbprint is not one of the device's")
        return CertificateCheck(None)
    if auth.kind is not AuthKind.CERTIFICATE_AUTHORITY:
        return _refused(f"the device authenticates with {auth.kind.value}, not with a certificate")
    if _common_name(leaf) != device_id:
        return _refused("the certificate's subject CN is not the device id")
    current, intermediates = leaf, certs[1:]
    for _ in range(MAX_CHAIN):
        for ca in cas:
            if ca.subject == current.issuer and _issued_by(current, ca):
                if not _valid_at(ca, now):
                    return _refused("the registered CA is expired or not yet valid")
                return CertificateCheck(None, ca)
        step = next((c for c in intermediates if c.subject == current.issuer and _issued_by(current, c)), None)
        if step is None:
            return _refused("the certificate does not chain to a registered CA")
        if not _valid_at(step, now):
            return _refused("an intermediate certificate is expired or not yet valid")
        if not _is_ca(step):
            return _refused("an intermediate certificate is not a CA")
        intermediates = [c for c in intermediates if c is not step]
        current = step
    return _refused("the certificate does not chain to a registered CA")


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False
