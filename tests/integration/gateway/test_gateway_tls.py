"""The MQTTS listener with a certificate made for the test."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from gateway_support import (
    TWIN_BODY,
    RecordingEvents,
    device_client,
    good_password,
    next_message,
    raw_client,
    unique_id,
)

from hub.gateway import Gateway
from tests.pki import make_ca, make_device


async def test_a_device_logs_in_over_tls(
    tls_gateway: Gateway, events: RecordingEvents, client_ssl_context: ssl.SSLContext
) -> None:
    device_id = unique_id()
    assert tls_gateway.mqtts_port
    assert tls_gateway.mqtt_port
    assert tls_gateway.mqtts_port != tls_gateway.mqtt_port
    async with device_client(tls_gateway.mqtts_port, device_id, tls_context=client_ssl_context) as device:
        assert await tls_gateway.wait_connected(device_id, 5)
        await device.publish("$iothub/twin/GET/?$rid=abc", b"")
        message = await next_message(device)
        assert (message.topic.value, message.payload) == ("$iothub/twin/res/200/?$rid=abc", TWIN_BODY)
        await tls_gateway.send(device_id, "$iothub/methods/POST/reboot/?$rid=1", b"null")
        assert (await next_message(device)).topic.value == "$iothub/methods/POST/reboot/?$rid=1"
    await events.wait_for(lambda: events.presence(device_id) == ["connected", "disconnected"])


async def test_a_client_not_trusting_the_certificate_fails(tls_gateway: Gateway) -> None:
    assert tls_gateway.mqtts_port
    with pytest.raises(ssl.SSLCertVerificationError):
        async with raw_client(tls_gateway.mqtts_port, tls_context=ssl.create_default_context()):
            pass


async def test_tls_keepalive_drop(
    tls_gateway: Gateway, events: RecordingEvents, client_ssl_context: ssl.SSLContext
) -> None:
    device_id = unique_id()
    assert tls_gateway.mqtts_port
    async with raw_client(tls_gateway.mqtts_port, tls_context=client_ssl_context) as client:
        assert await client.connect(device_id, f"good-{device_id}", keepalive=1) == (0, 0)
        await client.wait_closed(timeout=5)
    await events.wait_for(lambda: events.presence(device_id) == ["connected", "disconnected"])


async def test_the_login_gets_the_client_certificate_chain(
    tls_gateway: Gateway, events: RecordingEvents, tls_files: tuple[Path, Path], tmp_path: Path
) -> None:
    """What X.509 logins are judged on: every certificate the device sent, leaf first; none
    over plain MQTT or a TLS connection without a client certificate."""
    root = make_ca("gateway test root")
    leaf = make_device(unique_id("x509"), make_ca("gateway test line", issuer=root))
    cert, key = leaf.write(tmp_path, "device")
    context = ssl.create_default_context(cafile=str(tls_files[0]))
    context.load_cert_chain(cert, key)
    assert tls_gateway.mqtts_port
    assert tls_gateway.mqtt_port
    device_id = leaf.cert.subject.rfc4514_string().removeprefix("CN=")
    async with raw_client(tls_gateway.mqtts_port, tls_context=context) as client:
        assert await client.connect(device_id, good_password(device_id)) == (0, 0)
    chain = leaf.chain[0].public_bytes(serialization.Encoding.DER)
    assert events.certificates[device_id] == [leaf.der, chain]
    plain = unique_id()
    async with raw_client(tls_gateway.mqtt_port) as client:
        assert await client.connect(plain, good_password(plain)) == (0, 0)
    assert events.certificates[plain] == []
