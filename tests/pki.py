"""X.509 certificates for tests, made with ``cryptography``: CAs, intermediates, device
certificates (CA-signed, subject CN = device id) and self-signed ones, written as PEM files
the SDKs and ``ssl`` load."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["Identity", "make_ca", "make_device", "make_self_signed"]

_NOW = dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Identity:
    """A certificate (with the chain above it, leaf first, roots left out) and its key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def sha1(self) -> str:
        return hashlib.sha1(self.der).hexdigest().upper()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest().upper()

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        """``{name}.pem`` (the certificate and its chain) and ``{name}.key.pem``."""
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key.pem"
        cert_path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.cert, *self.chain)))
        key_path.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_path, key_path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: tuple[float, float]
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOW + dt.timedelta(days=days[0]))
        .not_valid_after(_NOW + dt.timedelta(days=days[1]))
    )


def make_ca(common_name: str, *, issuer: Identity | None = None, days: tuple[float, float] = (-1, 365)) -> Identity:
    """A CA, self-signed (a root) or issued by ``issuer`` (an intermediate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    signer = issuer.key if issuer is not None else key
    issuer_name = issuer.cert.subject if issuer is not None else _name(common_name)
    cert = (
        _builder(common_name, issuer_name, key, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(signer, hashes.SHA256())
    )
    chain = (issuer.cert, *issuer.chain) if issuer is not None else ()
    return Identity(cert, key, tuple(c for c in chain if c.issuer != c.subject))


def make_device(device_id: str, issuer: Identity, *, days: tuple[float, float] = (-1, 30)) -> Identity:
    """A device certificate with subject CN = ``device_id``, issued by ``issuer``."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(device_id, issuer.cert.subject, key, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
    chain = (issuer.cert, *issuer.chain) if issuer.cert.issuer != issuer.cert.subject else issuer.chain
    return Identity(cert, key, chain)


def make_self_signed(device_id: str, *, days: tuple[float, float] = (-1, 30)) -> Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(device_id, _name(device_id), key, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Identity(cert, key)
