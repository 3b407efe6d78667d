"""X.509 devices for a simulated fleet: a CA the simulator is given issues each device a
certificate (subject CN = device id), and the hub is told to trust that CA.

    ca = DeviceCertificateAuthority.load("ca.pem", "ca.key.pem", directory=Path("certs"))
    fleet = await Fleet.provision(registry, endpoint, count=100, x509=ca)

The devices are registered as ``certificateAuthority`` devices and the CA under the name
``fleethub-sim-{sha1 prefix}`` (``PUT /certificates/{name}``, kept when it is there already),
so the fleet logs in with TLS client certificates and no keys.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from device_sim.connection import X509Credential
from device_sim.errors import DeviceSimError
from job_client import AsyncRegistryClient
from job_client.errors import CertificateAlreadyExistsError

__all__ = ["DEVICE_CERT_DAYS", "DeviceCertificateAuthority"]

DEVICE_CERT_DAYS = 30


@dataclass(frozen=True, slots=True)
class DeviceCertificateAuthority:
    """A CA (certificate and key) that issues simulated devices their certificates into ``directory``."""

    certificate: x509.Certificate
    key: CertificateIssuerPrivateKeyTypes
    directory: Path

    @classmethod
    def load(cls, cert_file: str | Path, key_file: str | Path, *, directory: Path) -> DeviceCertificateAuthority:
        try:
            certificate = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
            key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise DeviceSimError(f"cannot load the X.509 CA {cert_file} / {key_file}: {exc}") from exc
        der = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        if certificate.public_key().public_bytes(*der) != key.public_key().public_bytes(*der):
            raise DeviceSimError(f"{key_file} is not the key of {cert_file}")
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
            raise DeviceSimError(f"{key_file} holds a key that cannot sign certificates (use EC, RSA or Ed25519)")
        return cls(certificate, key, directory)

    @property
    def pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode()

    @property
    def registration_name(self) -> str:
        digest = hashlib.sha1(self.certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
        return f"fleethub-sim-{digest[:16]}"

    def issue(self, device_id: str) -> X509Credential:
        """The device's certificate and key, written once and reused while still valid."""
        safe = device_id.replace("/", "_")
        credential = X509Credential(self.directory / f"{safe}.pem", self.directory / f"{safe}.key.pem")
        if credential.cert_file.exists() and credential.key_file.exists() and self._fresh(credential.cert_file):
            return credential
        self.directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)]))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=DEVICE_CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        pkcs8 = serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        credential.key_file.write_bytes(key.private_bytes(*pkcs8))
        credential.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return credential

    def _fresh(self, cert_file: Path) -> bool:
        try:
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        except ValueError:
            return False
        still = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        return cert.issuer == self.certificate.subject and cert.not_valid_after_utc > still

    async def register(self, registry: AsyncRegistryClient) -> None:
        """Make sure the hub trusts this CA (a registration with the same name is kept)."""
        with contextlib.suppress(CertificateAlreadyExistsError):
            await registry.put_certificate(self.registration_name, self.pem)
