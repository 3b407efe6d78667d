"""Device identity, endpoints, backoff, and the device/fleet lifecycles without a broker.

Nothing listens on the ports used here, so connects are refused: that exercises the retry
loop and clean stopping. Talking to a real hub is covered by the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import socket
import ssl

import aiomqtt
import pytest
import typer
from typer.testing import CliRunner

import device_sim
from device_sim.cli import app
from device_sim.connection import DeviceIdentity, MqttEndpoint, split_hostname
from device_sim.device import MqttClient, SimulatedDevice, backoff_delay
from device_sim.fleet import Fleet, FleetOptions, fleet_device_ids
from device_sim.options import DeviceOptions
from hub.wire.sas import SasTokenError, parse_sas_token, signature_matches

KEY = "ZGV2aWNlLWtleS1mb3ItdGVzdHMtb25seS0zMi1ieXRlcw=="


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _fast_options() -> DeviceOptions:
    return DeviceOptions(backoff_initial=0.01, backoff_max=0.05, connect_timeout=1.0)


def test_identity_signs_a_device_token_for_its_resource() -> None:
    identity = DeviceIdentity.from_connection_string(f"HostName=hub.test:8443;DeviceId=dev#1;SharedAccessKey={KEY}")
    assert identity.username("2021-04-12") == "hub.test:8443/dev#1/?api-version=2021-04-12"
    token = parse_sas_token(identity.password(ttl=600, now=1_700_000_000))
    assert token.resource == "hub.test:8443/devices/dev#1"
    assert token.key_name is None
    assert token.expiry == 1_700_000_600
    assert signature_matches(token, KEY)
    assert KEY not in repr(identity)


def test_a_service_connection_string_is_not_a_device() -> None:
    with pytest.raises(SasTokenError, match="DeviceId"):
        DeviceIdentity.from_connection_string(f"HostName=h;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}")


def test_endpoint_defaults_follow_the_hostname_and_tls() -> None:
    secure = MqttEndpoint.for_hub("hub.test:8443")
    assert (secure.host, secure.port) == ("hub.test", 8883)
    assert isinstance(secure.tls, ssl.SSLContext)
    assert secure.tls.check_hostname
    plain = MqttEndpoint.for_hub("hub.test", tls=False)
    assert (plain.host, plain.port, plain.tls) == ("hub.test", 1883, None)
    custom = MqttEndpoint.for_hub("hub.test", host="127.0.0.1", port=18830, tls=False)
    assert (custom.host, custom.port) == ("127.0.0.1", 18830)


@pytest.mark.parametrize(
    ("hostname", "expected"),
    [
        ("hub.test", ("hub.test", None)),
        ("hub.test:8443", ("hub.test", 8443)),
        ("[::1]:8443", ("::1", 8443)),
    ],
)
def test_split_hostname(hostname: str, expected: tuple[str, int | None]) -> None:
    assert split_hostname(hostname) == expected


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    rng = random.Random(1)
    delays = [backoff_delay(n, 0.5, 30.0, rng) for n in range(1, 12)]
    assert 0.25 <= delays[0] <= 0.5
    assert 2.0 <= delays[3] <= 4.0
    assert all(15.0 <= d <= 30.0 for d in delays[7:])
    assert backoff_delay(10_000, 0.5, 30.0, rng) <= 30.0


def test_options_reject_qos_2_and_nonsense_timings() -> None:
    with pytest.raises(ValueError, match="qos"):
        DeviceOptions(qos=2)
    with pytest.raises(ValueError, match="backoff_max"):
        DeviceOptions(backoff_initial=5, backoff_max=1)


async def test_a_device_retries_while_the_broker_is_away_and_stops_cleanly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="device_sim.device")
    device = SimulatedDevice.from_connection_string(
        f"HostName=127.0.0.1;DeviceId=retry-1;SharedAccessKey={KEY}",
        port=_free_port(),
        tls=False,
        options=_fast_options(),
    )
    async with device:
        assert device.running
        await asyncio.sleep(0.3)
        assert not device.connected.is_set()
        with pytest.raises(TimeoutError):
            await device.wait_connected(timeout=0.01)
    assert not device.running
    assert device.stats.connects == 0
    retries = [record for record in caplog.records if "reconnecting in" in record.getMessage()]
    assert len(retries) >= 2
    assert [record.levelno for record in retries[:2]] == [logging.WARNING, logging.INFO]
    await device.stop()  # stopping twice is harmless


async def test_twin_requests_need_a_connection() -> None:
    device = SimulatedDevice(DeviceIdentity("hub.test", "lonely", KEY), MqttEndpoint("127.0.0.1", _free_port()))
    with pytest.raises(device_sim.NotConnectedError):
        await device.get_twin()
    assert device.desired == {}
    assert device.desired_version is None
    assert device.twin is None


def test_fleet_device_ids_are_zero_padded() -> None:
    assert fleet_device_ids("sim-", 3) == ["sim-0000", "sim-0001", "sim-0002"]
    assert fleet_device_ids("d", 2, start=998, width=3) == ["d998", "d999"]
    with pytest.raises(ValueError, match="negative"):
        fleet_device_ids("x", -1)


async def test_a_fleet_shares_its_settings_and_starts_in_batches() -> None:
    endpoint = MqttEndpoint("127.0.0.1", _free_port())
    identities = [DeviceIdentity("hub.test", device_id, KEY) for device_id in fleet_device_ids("f-", 5)]
    fleet = Fleet(
        identities,
        endpoint,
        options=_fast_options(),
        fleet_options=FleetOptions(batch_size=2, batch_pause=0.0, batch_timeout=0.05),
    )
    assert len(fleet) == 5
    assert fleet["f-0003"].device_id == "f-0003"
    assert len({id(device._protocol.behaviours) for device in fleet}) == 1
    async with fleet:
        assert all(device.running for device in fleet)
        assert not await fleet.wait_connected(timeout=0.05)
        stats = fleet.stats()
        assert (stats.devices, stats.connected) == (5, 0)
        assert stats.line().startswith("connected 0/5 | methods 0")
    assert not any(device.running for device in fleet)


def test_package_exports_are_deliberate() -> None:
    assert list(device_sim.__all__) == sorted(device_sim.__all__)
    for name in device_sim.__all__:
        assert getattr(device_sim, name) is not None


def test_cli_needs_a_connection_string(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEETHUB_CONNECTION_STRING", raising=False)
    monkeypatch.delenv("FLEETHUB_DEVICE_CONNECTION_STRING", raising=False)
    result = CliRunner().invoke(app, [])
    assert result.exit_code == 2
    assert "connection-string" in result.output


def test_cli_rejects_bad_method_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETHUB_CONNECTION_STRING", f"HostName=h;SharedAccessKeyName=p;SharedAccessKey={KEY}")
    result = CliRunner().invoke(app, ["--method-latency", "lockDoor"])
    assert result.exit_code == 2
    assert "METHOD=VALUE" in result.output


def test_cli_offers_the_documented_options() -> None:
    assert CliRunner().invoke(app, ["--help"]).exit_code == 0
    command = typer.main.get_command(app)
    offered = {flag for param in command.params for flag in (*param.opts, *param.secondary_opts)}
    assert {
        "--hub-connection-string",
        "--device-connection-string",
        "--count",
        "--prefix",
        "--url",
        "--ca-cert",
        "--mqtt-host",
        "--mqtt-port",
        "--tls",
        "--no-tls",
        "--method-latency",
        "--failure-rate",
        "--duration",
    } <= offered


async def test_a_handler_cancelled_before_it_starts_is_closed_not_leaked() -> None:
    """A drop can cancel the session's task group before a just-dispatched handler runs."""
    from device_sim.device import _close_unstarted

    ran = False

    async def handler() -> None:
        nonlocal ran
        ran = True

    async def guard(work: object) -> None:
        await work  # type: ignore[misc]

    work = handler()
    task = asyncio.get_running_loop().create_task(guard(work))
    task.add_done_callback(lambda done: _close_unstarted(work, done))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    assert not ran
    assert work.cr_frame is None  # closed: no "coroutine was never awaited" at collection


@pytest.mark.parametrize(("client_class", "reported"), [(aiomqtt.Client, True), (MqttClient, False)])
async def test_a_connection_the_broker_dropped_leaves_no_unretrieved_error(
    client_class: type[aiomqtt.Client], reported: bool
) -> None:
    """aiomqtt itself leaves "Future exception was never retrieved" behind; MqttClient does not."""

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # CONNECT
        writer.write(b"\x20\x02\x00\x00")  # CONNACK, accepted
        await writer.drain()
        await reader.read(1024)  # the client's first publish: it is connected
        writer.close()  # then the broker goes away

    server = await asyncio.start_server(broker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    reports: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reports.append(str(context["message"])))
    try:
        async with server, client_class("127.0.0.1", port, identifier="dropped-device") as client:
            await client.publish("devices/dropped-device/messages/events/", b"{}")
            async with asyncio.timeout(5):
                while not client._disconnected.done():
                    await asyncio.sleep(0.01)
        del client
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert ("Future exception was never retrieved" in reports) is reported
