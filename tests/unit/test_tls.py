"""The hub's TLS files: first-start generation, reuse, reissue rules, and real handshakes."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import ssl
import stat
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from hub.tls import (
    CA_VALIDITY,
    RENEW_BEFORE,
    SERVER_VALIDITY,
    TlsError,
    TlsFiles,
    client_ssl_context,
    ensure_tls,
    server_ssl_context,
)

POSIX = os.name == "posix"


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)), {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


def ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


async def handshake(files: TlsFiles, host: str, server_hostname: str, client: ssl.SSLContext | None = None) -> bytes:
    """Serve one echo over TLS on ``host`` and talk to it; return what came back."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(await reader.readexactly(5))
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass  # the failing-handshake tests hang up early
        finally:
            writer.close()

    server = await asyncio.start_server(echo, host, 0, ssl=server_ssl_context(files))
    port = server.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(10):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=client or client_ssl_context(files.ca_cert), server_hostname=server_hostname
            )
            try:
                writer.write(b"hello")
                await writer.drain()
                return await reader.readexactly(5)
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError, ssl.SSLError):
                    await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


# -- first start -------------------------------------------------------------------------


def test_first_start_creates_ca_and_server_files(tmp_path: Path) -> None:
    tls_dir = tmp_path / "data" / "tls"
    files = ensure_tls(tls_dir, "hub.example.com")
    assert files == TlsFiles(tls_dir / "ca.pem", tls_dir / "server.pem", tls_dir / "server-key.pem")
    for name in ("ca.pem", "ca-key.pem", "server.pem", "server-key.pem"):
        assert (tls_dir / name).is_file(), name
    assert not list(tls_dir.glob("*.tmp"))


def test_ca_certificate(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    ensure_tls(tmp_path, "localhost", now=now)
    ca = load(tmp_path / "ca.pem")
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is True
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert ca.subject == ca.issuer
    ca.verify_directly_issued_by(ca)
    assert ca.not_valid_after_utc - ca.not_valid_before_utc >= CA_VALIDITY
    assert ca.not_valid_after_utc >= now + timedelta(days=3649)
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)


def test_server_certificate(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    files = ensure_tls(tmp_path, "hub.example.com", now=now)
    ca, cert = load(tmp_path / "ca.pem"), load(files.server_cert)
    cert.verify_directly_issued_by(ca)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    assert sans(cert) == ({"hub.example.com", "localhost"}, {"127.0.0.1", "::1"})
    assert cert.not_valid_after_utc <= now + SERVER_VALIDITY
    assert cert.not_valid_before_utc <= now
    key = serialization.load_pem_private_key(files.server_key.read_bytes(), password=None)
    assert key.public_key() == cert.public_key()


@pytest.mark.parametrize(
    ("hostname", "dns", "ips"),
    [
        ("10.1.2.3", {"localhost"}, {"10.1.2.3", "127.0.0.1", "::1"}),
        ("fd00::5", {"localhost"}, {"fd00::5", "127.0.0.1", "::1"}),
        ("[fd00::6]", {"localhost"}, {"fd00::6", "127.0.0.1", "::1"}),
        ("127.0.0.1", {"localhost"}, {"127.0.0.1", "::1"}),
        ("localhost", {"localhost"}, {"127.0.0.1", "::1"}),
        ("Hub.Example.COM.", {"hub.example.com", "localhost"}, {"127.0.0.1", "::1"}),
        ("bücher.example", {"xn--bcher-kva.example", "localhost"}, {"127.0.0.1", "::1"}),
    ],
)
def test_hostname_goes_into_the_right_san(tmp_path: Path, hostname: str, dns: set[str], ips: set[str]) -> None:
    files = ensure_tls(tmp_path, hostname)
    assert sans(load(files.server_cert)) == (dns, ips)


@pytest.mark.parametrize("hostname", ["", "   ", "[]", "a..b"])
def test_bad_hostnames_are_refused(tmp_path: Path, hostname: str) -> None:
    with pytest.raises(ValueError, match="hostname"):
        ensure_tls(tmp_path, hostname)


@pytest.mark.skipif(not POSIX, reason="file modes are POSIX")
def test_key_files_are_private(tmp_path: Path) -> None:
    old_umask = os.umask(0)  # even a permissive umask must not widen the keys
    try:
        ensure_tls(tmp_path / "tls", "localhost")
    finally:
        os.umask(old_umask)
    for name in ("ca-key.pem", "server-key.pem"):
        assert stat.S_IMODE((tmp_path / "tls" / name).stat().st_mode) == 0o600, name
    for name in ("ca.pem", "server.pem"):
        assert stat.S_IMODE((tmp_path / "tls" / name).stat().st_mode) == 0o644, name


# -- reuse and reissue -------------------------------------------------------------------


def snapshot(tls_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(tls_dir.glob("*.pem"))}


def test_second_start_reuses_every_file(tmp_path: Path) -> None:
    ensure_tls(tmp_path, "hub.example.com")
    before = snapshot(tmp_path)
    ensure_tls(tmp_path, "hub.example.com")
    ensure_tls(tmp_path, "HUB.example.com")  # DNS names compare case-insensitively
    ensure_tls(tmp_path, "localhost")  # always covered
    ensure_tls(tmp_path, "127.0.0.1")
    ensure_tls(tmp_path, "::1")
    assert snapshot(tmp_path) == before


def test_new_hostname_reissues_the_server_certificate_under_the_same_ca(tmp_path: Path) -> None:
    ensure_tls(tmp_path, "old.example.com")
    before = snapshot(tmp_path)
    files = ensure_tls(tmp_path, "new.example.com")
    after = snapshot(tmp_path)
    assert after["ca.pem"] == before["ca.pem"]
    assert after["ca-key.pem"] == before["ca-key.pem"]
    assert after["server.pem"] != before["server.pem"]
    cert = load(files.server_cert)
    cert.verify_directly_issued_by(load(tmp_path / "ca.pem"))
    assert "new.example.com" in sans(cert)[0]
    assert "old.example.com" not in sans(cert)[0]


def test_new_ip_hostname_reissues(tmp_path: Path) -> None:
    ensure_tls(tmp_path, "10.0.0.1")
    files = ensure_tls(tmp_path, "10.0.0.2")
    assert "10.0.0.2" in sans(load(files.server_cert))[1]


def test_server_certificate_expiring_within_30_days_is_reissued(tmp_path: Path) -> None:
    real_now = datetime.now(UTC)
    # Issued so long ago that it has 29 days left today.
    issued = real_now + RENEW_BEFORE - SERVER_VALIDITY - timedelta(days=1)
    files = ensure_tls(tmp_path, "localhost", now=issued)
    old = load(files.server_cert)
    assert old.not_valid_after_utc - real_now < RENEW_BEFORE
    ca_before = (tmp_path / "ca.pem").read_bytes()
    ensure_tls(tmp_path, "localhost", now=real_now)
    new = load(files.server_cert)
    assert new.serial_number != old.serial_number
    assert new.not_valid_after_utc > real_now + timedelta(days=800)
    assert (tmp_path / "ca.pem").read_bytes() == ca_before


def test_server_certificate_with_31_days_left_is_kept(tmp_path: Path) -> None:
    real_now = datetime.now(UTC)
    issued = real_now + RENEW_BEFORE - SERVER_VALIDITY + timedelta(days=1)
    files = ensure_tls(tmp_path, "localhost", now=issued)
    before = files.server_cert.read_bytes()
    ensure_tls(tmp_path, "localhost", now=real_now)
    assert files.server_cert.read_bytes() == before


def test_server_certificate_from_another_ca_is_reissued(tmp_path: Path) -> None:
    ensure_tls(tmp_path / "a", "localhost")
    ensure_tls(tmp_path / "b", "localhost")
    for name in ("server.pem", "server-key.pem"):
        (tmp_path / "a" / name).write_bytes((tmp_path / "b" / name).read_bytes())
    files = ensure_tls(tmp_path / "a", "localhost")
    load(files.server_cert).verify_directly_issued_by(load(tmp_path / "a" / "ca.pem"))


@pytest.mark.parametrize("damage", ["garbage key", "garbage cert", "other key", "missing key", "missing cert"])
def test_damaged_server_files_are_reissued(tmp_path: Path, damage: str) -> None:
    files = ensure_tls(tmp_path, "localhost")
    if damage == "garbage key":
        files.server_key.write_bytes(b"not a key")
    elif damage == "garbage cert":
        files.server_cert.write_bytes(b"not a cert")
    elif damage == "other key":
        other = ec.generate_private_key(ec.SECP256R1())
        files.server_key.write_bytes(
            other.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    elif damage == "missing key":
        files.server_key.unlink()
    else:
        files.server_cert.unlink()
    ensure_tls(tmp_path, "localhost")
    server_ssl_context(files)  # loads: the pair belongs together again


@pytest.mark.parametrize("missing", ["ca.pem", "ca-key.pem"])
def test_half_a_ca_is_an_error_not_a_silent_new_ca(tmp_path: Path, missing: str) -> None:
    ensure_tls(tmp_path, "localhost")
    (tmp_path / missing).unlink()
    with pytest.raises(TlsError, match=missing) as info:
        ensure_tls(tmp_path, "localhost")
    assert info.value.path == tmp_path / missing


def test_ca_key_that_does_not_match_is_an_error(tmp_path: Path) -> None:
    ensure_tls(tmp_path / "a", "localhost")
    ensure_tls(tmp_path / "b", "localhost")
    (tmp_path / "a" / "ca-key.pem").write_bytes((tmp_path / "b" / "ca-key.pem").read_bytes())
    with pytest.raises(TlsError, match="is not the key of"):
        ensure_tls(tmp_path / "a", "localhost")


def test_expired_ca_is_an_error(tmp_path: Path) -> None:
    long_ago = datetime.now(UTC) - CA_VALIDITY - timedelta(days=1)
    ensure_tls(tmp_path, "localhost", now=long_ago)
    with pytest.raises(TlsError, match="expired"):
        ensure_tls(tmp_path, "localhost")


# -- handshakes --------------------------------------------------------------------------


async def test_handshake_with_localhost_name(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path, "hub.example.com")
    assert await handshake(files, "127.0.0.1", "localhost") == b"hello"


async def test_handshake_with_ip_address_name(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path, "hub.example.com")
    assert await handshake(files, "127.0.0.1", "127.0.0.1") == b"hello"


async def test_handshake_with_the_configured_hostname(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path, "hub.example.com")
    assert await handshake(files, "127.0.0.1", "hub.example.com") == b"hello"


@pytest.mark.skipif(not ipv6_loopback_available(), reason="no IPv6 loopback here")
async def test_handshake_over_ipv6_loopback(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path, "localhost")
    assert await handshake(files, "::1", "::1") == b"hello"


async def test_handshake_under_strict_x509_checks(tmp_path: Path) -> None:
    # Python 3.13 turns VERIFY_X509_STRICT on by default; the generated chain must pass it.
    files = ensure_tls(tmp_path, "localhost")
    client = client_ssl_context(files.ca_cert)
    client.verify_flags |= ssl.VERIFY_X509_STRICT
    assert await handshake(files, "127.0.0.1", "localhost", client) == b"hello"


async def test_handshake_fails_for_a_name_the_certificate_lacks(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path, "hub.example.com")
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(files, "127.0.0.1", "other.example.com")


async def test_handshake_fails_against_another_ca(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path / "a", "localhost")
    other = ensure_tls(tmp_path / "b", "localhost")
    with pytest.raises(ssl.SSLCertVerificationError):
        await handshake(files, "127.0.0.1", "localhost", client_ssl_context(other.ca_cert))


async def test_server_refuses_tls_1_1(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path, "localhost")
    client = client_ssl_context(files.ca_cert)
    try:
        with warnings.catch_warnings():  # the old versions are deprecated, which is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            client.minimum_version = ssl.TLSVersion.TLSv1
            client.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await handshake(files, "127.0.0.1", "localhost", client)


def test_contexts_require_tls_1_2() -> None:
    client = client_ssl_context(None)
    assert client.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert client.verify_mode == ssl.CERT_REQUIRED
    assert client.check_hostname


def test_server_context_settings(tmp_path: Path) -> None:
    context = server_ssl_context(ensure_tls(tmp_path, "localhost"))
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE  # devices authenticate with SAS, not certificates


# -- operator files ----------------------------------------------------------------------


async def test_operator_files_are_used_as_given(tmp_path: Path) -> None:
    made = ensure_tls(tmp_path / "made", "localhost")
    files = TlsFiles.from_operator(made.server_cert, made.server_key, ca=made.ca_cert)
    assert files == made
    assert await handshake(files, "127.0.0.1", "localhost") == b"hello"


def test_operator_files_without_ca(tmp_path: Path) -> None:
    made = ensure_tls(tmp_path, "localhost")
    files = TlsFiles.from_operator(str(made.server_cert), str(made.server_key))
    assert files.ca_cert is None
    assert files.server_cert == made.server_cert


def test_operator_file_missing(tmp_path: Path) -> None:
    made = ensure_tls(tmp_path, "localhost")
    with pytest.raises(TlsError, match="does not exist") as info:
        TlsFiles.from_operator(tmp_path / "nope.pem", made.server_key)
    assert info.value.path == tmp_path / "nope.pem"
    with pytest.raises(TlsError, match="does not exist"):
        TlsFiles.from_operator(made.server_cert, made.server_key, ca=tmp_path / "nope-ca.pem")


def test_operator_key_that_does_not_match(tmp_path: Path) -> None:
    a = ensure_tls(tmp_path / "a", "localhost")
    b = ensure_tls(tmp_path / "b", "localhost")
    with pytest.raises(TlsError, match="cannot be used together"):
        TlsFiles.from_operator(a.server_cert, b.server_key)


def test_operator_garbage_files(tmp_path: Path) -> None:
    made = ensure_tls(tmp_path, "localhost")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    with pytest.raises(TlsError):
        TlsFiles.from_operator(garbage, made.server_key)
    with pytest.raises(TlsError, match="CA file"):
        TlsFiles.from_operator(made.server_cert, made.server_key, ca=garbage)


def test_operator_encrypted_key_is_refused_without_prompting(tmp_path: Path) -> None:
    made = ensure_tls(tmp_path, "localhost")
    key = serialization.load_pem_private_key(made.server_key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted-key.pem"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(TlsError, match="encrypted"):
        TlsFiles.from_operator(made.server_cert, encrypted)


def test_ip_san_values_are_addresses(tmp_path: Path) -> None:
    cert = load(ensure_tls(tmp_path, "192.0.2.7").server_cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("192.0.2.7") in san.get_values_for_type(x509.IPAddress)
