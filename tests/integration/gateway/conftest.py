"""Gateway-only fixtures: gateways on 127.0.0.1:0 (plain and TLS) around a recording DeviceEvents."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gateway_support import HOST, RecordingEvents, bound_socket
from OpenSSL import SSL

from broker_config import GatewayConfig, load_gateway_config
from hub.gateway import Gateway
from hub.gateway.tlsbio import server_context


@pytest.fixture
def events() -> RecordingEvents:
    return RecordingEvents()


@pytest.fixture
def gateway_config() -> GatewayConfig:
    return load_gateway_config()


@pytest.fixture
async def gateway(events: RecordingEvents, gateway_config: GatewayConfig) -> AsyncIterator[Gateway]:
    async with Gateway(mqtt_socket=bound_socket(), config=gateway_config).serving(events) as gw:
        yield gw


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def server_tls(tls_files: tuple[Path, Path]) -> SSL.Context:
    return server_context(*tls_files)


@pytest.fixture
def client_ssl_context(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls_files[0]))


@pytest.fixture
async def tls_gateway(
    events: RecordingEvents, server_tls: SSL.Context, gateway_config: GatewayConfig
) -> AsyncIterator[Gateway]:
    async with Gateway(
        mqtt_socket=bound_socket(),
        mqtts_socket=bound_socket(),
        tls=server_tls,
        config=gateway_config,
    ).serving(events) as gw:
        yield gw
