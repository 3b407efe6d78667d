"""TLS material for the hub: a private CA and a server certificate made on first start.

``ensure_tls`` writes, into ``{data-dir}/tls/``:

    ca.pem, ca-key.pem          the hub's own CA (EC P-256, 10 years); ``ca.pem`` is what
                                devices and back ends trust
    server.pem, server-key.pem  the listener's certificate, signed by that CA, for the hub's
                                hostname plus localhost, 127.0.0.1 and ::1

Later starts reuse the files. The server certificate (never the CA, which clients have
copied) is issued again when it does not name the requested hostname, is not signed by
the CA on disk, or expires within 30 days. Operators who bring their own certificate use
``TlsFiles.from_operator`` instead and nothing is generated.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hub.wire.sas import LOCAL_HOSTNAMES

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "CA_VALIDITY",
    "RENEW_BEFORE",
    "SERVER_VALIDITY",
    "TlsError",
    "TlsFiles",
    "client_ssl_context",
    "ensure_tls",
    "server_ssl_context",
]

logger = logging.getLogger(__name__)

CA_VALIDITY = timedelta(days=3650)
# 825 days is the longest server certificate lifetime Apple platforms accept; renewal on a
# restart within RENEW_BEFORE of expiry keeps a long-running hub from ever serving an
# expired one for long.
SERVER_VALIDITY = timedelta(days=825)
RENEW_BEFORE = timedelta(days=30)
# Tolerate clients whose clocks run a little behind the hub's.
_BACKDATE = timedelta(hours=1)

_CA_CERT = "ca.pem"
_CA_KEY = "ca-key.pem"
_SERVER_CERT = "server.pem"
_SERVER_KEY = "server-key.pem"
_IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip_or_none(name: str) -> _IpAddress | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


# The certificate names what token checks accept besides the hub's hostname (LOCAL_HOSTNAMES).
_ALWAYS_IP = tuple(ip for ip in map(_ip_or_none, LOCAL_HOSTNAMES) if ip is not None)
_ALWAYS_DNS = tuple(name for name in LOCAL_HOSTNAMES if _ip_or_none(name) is None)


class TlsError(Exception):
    """TLS files that are missing, unreadable or do not belong together; ``path`` names the file."""

    def __init__(self, message: str, *, path: Path | None = None) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Where the PEM files are. ``ca_cert`` is None for an operator certificate from a public CA."""

    ca_cert: Path | None
    server_cert: Path
    server_key: Path

    @classmethod
    def from_operator(cls, cert: Path | str, key: Path | str, ca: Path | str | None = None) -> TlsFiles:
        """Use an operator's certificate (chain) and key as they are, after checking they load."""
        files = cls(Path(ca) if ca is not None else None, Path(cert), Path(key))
        for path in (files.server_cert, files.server_key, files.ca_cert):
            if path is not None and not path.is_file():
                raise TlsError(f"TLS file {path} does not exist", path=path)
        try:
            server_ssl_context(files)
        except ssl.SSLError as exc:
            raise TlsError(
                f"TLS certificate {files.server_cert} and key {files.server_key} cannot be "
                f"used together: {exc.reason or exc}",
                path=files.server_cert,
            ) from exc
        if files.ca_cert is not None:
            try:
                client_ssl_context(files.ca_cert)
            except ssl.SSLError as exc:
                raise TlsError(
                    f"TLS CA file {files.ca_cert} holds no usable certificate: {exc.reason or exc}", path=files.ca_cert
                ) from exc
        return files


def ensure_tls(tls_dir: Path, hostname: str, *, now: datetime | None = None) -> TlsFiles:
    """Create or reuse the CA and server certificate in ``tls_dir`` (see the module docstring).

    ``now`` is the clock reading to issue and check certificates against (UTC-aware).
    """
    now = now or datetime.now(UTC)
    host_ip, host_dns = _parse_hostname(hostname)
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = TlsFiles(tls_dir / _CA_CERT, tls_dir / _SERVER_CERT, tls_dir / _SERVER_KEY)
    ca_key_path = tls_dir / _CA_KEY
    with _directory_lock(tls_dir):
        ca_cert, ca_key = _load_or_create_ca(tls_dir / _CA_CERT, ca_key_path, now)
        reason = _server_cert_problem(files, ca_cert, host_ip, host_dns, now)
        if reason is not None:
            logger.info("issuing a TLS server certificate for %s in %s (%s)", hostname, tls_dir, reason)
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _issue_server_cert(key, ca_cert, ca_key, host_ip, host_dns, now)
            # Key first: a crash between the two writes leaves a pair that fails the
            # key-match check and is simply issued again on the next start.
            _write_private_key(files.server_key, key)
            _write_public(files.server_cert, cert.public_bytes(serialization.Encoding.PEM))
    return files


def server_ssl_context(files: TlsFiles) -> ssl.SSLContext:
    """A listener context: TLS 1.2 or later, no client certificates asked for."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2

    def refuse_password() -> bytes:
        # Without a callback OpenSSL would prompt on the terminal and hang a service.
        raise TlsError(
            f"TLS key {files.server_key} is encrypted; give the hub an unencrypted key", path=files.server_key
        )

    context.load_cert_chain(files.server_cert, files.server_key, password=refuse_password)
    return context


def client_ssl_context(ca_file: Path | str | None) -> ssl.SSLContext:
    """A client context that verifies the hub against ``ca_file`` (None: the system's CAs)."""
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=os.fspath(ca_file) if ca_file is not None else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


# -- the CA ------------------------------------------------------------------------------


def _load_or_create_ca(
    cert_path: Path, key_path: Path, now: datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if not cert_path.exists() and not key_path.exists():
        logger.info("creating the hub's TLS CA in %s", cert_path.parent)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue_ca_cert(key, now)
        _write_private_key(key_path, key)
        _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
        return cert, key
    # Never replace a CA silently: clients have copied ca.pem and would stop trusting the hub.
    for path in (cert_path, key_path):
        if not path.exists():
            raise TlsError(
                f"{path} is missing while {cert_path if path == key_path else key_path} exists; "
                f"restore it, or delete every file in {cert_path.parent} to create a new CA "
                "(clients must then trust the new ca.pem)",
                path=path,
            )
    cert = _load_cert(cert_path)
    key = _load_ec_key(key_path)
    if cert.public_key() != key.public_key():
        raise TlsError(f"{key_path} is not the key of {cert_path}", path=key_path)
    if cert.not_valid_after_utc <= now:
        raise TlsError(
            f"the hub CA {cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}; delete "
            f"every file in {cert_path.parent} to create a new one",
            path=cert_path,
        )
    if cert.not_valid_after_utc - RENEW_BEFORE <= now:
        logger.warning(
            "the hub CA %s expires on %s; delete every file in %s and restart to create a new "
            "one, then give clients the new ca.pem",
            cert_path,
            cert.not_valid_after_utc,
            cert_path.parent,
        )
    return cert, key


def _issue_ca_cert(key: ec.EllipticCurvePrivateKey, now: datetime) -> x509.Certificate:
    # A random serial in the name keeps two hubs' CAs apart in a trust store.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleethub"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"fleethub CA {x509.random_serial_number() % 10**8:08d}"),
        ]
    )
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


# -- the server certificate --------------------------------------------------------------


def _parse_hostname(hostname: str) -> tuple[_IpAddress | None, str | None]:
    """The hostname as an IP address or as a DNS name in its ASCII (IDNA) form."""
    text = hostname.strip()
    if text.startswith("[") and text.endswith("]"):  # "[::1]" as written in URLs
        text = text[1:-1]
    if not text:
        raise ValueError("the TLS hostname is empty")
    try:
        return ipaddress.ip_address(text), None
    except ValueError:
        pass
    try:
        dns = text.rstrip(".").encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise ValueError(f"{hostname!r} is not a valid hostname for a TLS certificate") from exc
    return None, dns


def _server_cert_problem(
    files: TlsFiles, ca_cert: x509.Certificate, host_ip: _IpAddress | None, host_dns: str | None, now: datetime
) -> str | None:
    """Why the server certificate on disk must be issued again, or None when it can stay."""
    if not files.server_cert.exists() or not files.server_key.exists():
        return "none yet"
    try:
        cert = _load_cert(files.server_cert)
        key = _load_ec_key(files.server_key)
    except TlsError as exc:
        return str(exc)
    if cert.public_key() != key.public_key():
        return "key does not match"
    if cert.issuer != ca_cert.subject:
        return "not issued by this CA"
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return "not signed by this CA"
    if cert.not_valid_after_utc - RENEW_BEFORE <= now:
        return f"expires {cert.not_valid_after_utc:%Y-%m-%d}"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "no subject alternative names"
    if host_ip is not None and host_ip not in san.get_values_for_type(x509.IPAddress):
        return f"does not name {host_ip}"
    if host_dns is not None and host_dns not in {n.lower() for n in san.get_values_for_type(x509.DNSName)}:
        return f"does not name {host_dns}"
    return None


def _issue_server_cert(
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    host_ip: _IpAddress | None,
    host_dns: str | None,
    now: datetime,
) -> x509.Certificate:
    dns_names = list(_ALWAYS_DNS)
    if host_dns is not None and host_dns not in dns_names:
        dns_names.insert(0, host_dns)
    ips: list[_IpAddress] = list(_ALWAYS_IP)
    if host_ip is not None and host_ip not in ips:
        ips.insert(0, host_ip)
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    names += [x509.IPAddress(ip) for ip in ips]
    # The CN is informational only (clients match SANs); it must stay within 64 characters.
    common_name = (host_dns or str(host_ip))[:64]
    public = key.public_key()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fleethub"),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(min(now + SERVER_VALIDITY, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


# -- files -------------------------------------------------------------------------------


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise TlsError(f"{path} is not a readable PEM certificate: {exc}", path=path) from exc


def _load_ec_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TlsError(f"{path} is not a readable unencrypted PEM private key: {exc}", path=path) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError(f"{path} is not an EC private key as the hub writes them", path=path)
    return key


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_atomically(path, pem, 0o600)


def _write_public(path: Path, data: bytes) -> None:
    _write_atomically(path, data, 0o644)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    # Write a fresh temp file created with the final mode (so a key is never readable by
    # others, even briefly), then rename over the target: readers see old or new, never half.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)  # os.open's mode is masked by the umask; make it exact
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def _directory_lock(tls_dir: Path) -> Iterator[None]:
    """Serialise hubs that start together on one data dir, so a key never meets another's cert."""
    if fcntl is None:  # Windows: no flock; concurrent first starts there are left to the operator
        yield
        return
    with open(tls_dir / ".lock", "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
