"""device_sim against a real hub: a fleet over MQTT/TLS, methods, desired state, reconnects and the CLI."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from device_sim import Behaviours, DeviceOptions, Fleet, FleetOptions, MethodProfile, SimulatedDevice
from hub.runtime import Hub
from job_client import AsyncRegistryClient, ConnectionState
from tests.e2e.conftest import (
    DeviceCreds,
    connection_string,
    create_device,
    device_endpoint,
    simulated_device,
    wait_for_state,
    wait_for_twin,
)
from tests.pki import make_ca

_REPO = Path(__file__).resolve().parents[2]


def _prefix() -> str:
    return f"fl{uuid.uuid4().hex[:6]}-"


def _reported(twin: dict[str, Any]) -> dict[str, Any]:
    reported: dict[str, Any] = twin["properties"]["reported"]
    return reported


async def _until(condition: Callable[[], bool], timeout: float = 15, what: str = "condition") -> None:
    """Wait until ``condition()`` is true; ``timeout`` is only an upper bound."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"{what} never became true") from None


async def test_fleet_of_50_over_tls_connects_and_answers(
    hub: Hub, registry: AsyncRegistryClient, api: httpx.AsyncClient
) -> None:
    prefix = _prefix()
    fleet = await Fleet.provision(
        registry,
        device_endpoint(hub, tls=True),
        count=50,
        prefix=prefix,
        fleet_options=FleetOptions(batch_size=25, batch_timeout=30),
    )
    assert len(fleet) == 50
    async with fleet:
        assert await fleet.wait_connected(60)
        assert fleet.connected_count == 50
        assert all(device.endpoint.tls is not None for device in fleet)

        async with asyncio.timeout(30):
            while True:
                devices = [d for d in await registry.list_devices() if d.device_id.startswith(prefix)]
                if len(devices) == 50 and all(d.connection_state is ConnectionState.CONNECTED for d in devices):
                    break
                await asyncio.sleep(0.1)

        results = await asyncio.gather(
            *(registry.invoke_method(device.device_id, "lockDoor", {"n": i}) for i, device in enumerate(fleet))
        )
        assert [(r.status, r.payload) for r in results] == [(200, {"locked": True})] * 50
        for device in fleet:
            assert device.stats.methods_handled == 1
            assert device.stats.connects == 1

        # Every device reported its startup properties on connect.
        twin = (await api.get(f"/twins/{prefix}0049")).json()
        assert _reported(twin)["firmware"] == "1.0.0"
        assert "startedAt" in _reported(twin)
        stats = fleet.stats()
        assert stats.connected == 50
        assert stats.totals.methods_handled == 50
    assert fleet.connected_count == 0


async def test_desired_patch_is_applied_and_acknowledged(
    hub: Hub, registry: AsyncRegistryClient, api: httpx.AsyncClient
) -> None:
    prefix = _prefix()
    fleet = await Fleet.provision(registry, device_endpoint(hub, tls=True), count=3, prefix=prefix)
    async with fleet:
        assert await fleet.wait_connected(30)
        target, other = fleet[f"{prefix}0001"], fleet[f"{prefix}0002"]
        await wait_for_state(api, target.device_id)

        response = await api.patch(
            f"/twins/{target.device_id}", json={"properties": {"desired": {"building": "43", "hvac": {"mode": "eco"}}}}
        )
        assert response.status_code == 200, response.text
        version = response.json()["properties"]["desired"]["$version"]

        await _until(lambda: target.desired.get("building") == "43", what="desired applied on the device")
        assert target.desired == {"building": "43", "hvac": {"mode": "eco"}}
        assert target.desired_version == version

        twin = await wait_for_twin(api, target.device_id, lambda t: _reported(t).get("lastDesiredVersion") == version)
        assert _reported(twin)["building"] == "43"
        assert _reported(twin)["hvac"] == {"mode": "eco"}
        assert target.stats.desired_applied == 1

        # A removal (null) is applied too and the other devices never saw any of it.
        response = await api.patch(f"/twins/{target.device_id}", json={"properties": {"desired": {"hvac": None}}})
        assert response.status_code == 200
        await _until(lambda: "hvac" not in target.desired, what="desired removal applied")
        await wait_for_twin(api, target.device_id, lambda t: _reported(t).get("lastDesiredVersion") == version + 1)
        assert other.desired == {}
        assert other.stats.desired_applied == 0


async def test_failure_rate_one_answers_500(hub: Hub, registry: AsyncRegistryClient, api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    behaviours = Behaviours(profiles={"lockDoor": MethodProfile(failure_rate=1.0)}, seed=7)
    async with simulated_device(hub, creds, behaviours=behaviours) as device:
        await device.wait_connected(15)
        for _ in range(3):
            result = await registry.invoke_method(creds.device_id, "lockDoor", response_timeout=10)
            assert result.status == 500
            assert not result.ok
            assert "simulated failure" in result.payload["error"]
        # Only the profiled method fails.
        reboot = await registry.invoke_method(creds.device_id, "reboot", response_timeout=10)
        assert (reboot.status, reboot.payload) == (200, {"rebooting": True})
        assert device.stats.methods_failed == 3
        assert device.stats.methods_handled == 4


async def test_latency_profile_delays_the_answer(
    hub: Hub, registry: AsyncRegistryClient, api: httpx.AsyncClient
) -> None:
    creds = await create_device(api)
    behaviours = Behaviours(
        profiles={"lockDoor": MethodProfile(latency=0.4), "reboot": MethodProfile(latency=(0.2, 0.3))}, seed=1
    )
    async with simulated_device(hub, creds, behaviours=behaviours) as device:
        await device.wait_connected(15)
        loop = asyncio.get_running_loop()
        for method, at_least in (("lockDoor", 0.4), ("reboot", 0.2)):
            started = loop.time()
            result = await registry.invoke_method(creds.device_id, method, response_timeout=30)
            elapsed = loop.time() - started
            assert result.status == 200
            assert elapsed >= at_least, f"{method} answered after {elapsed:.3f} s"


async def test_restarted_device_applies_desired_changes_made_while_offline(
    hub: Hub, registry: AsyncRegistryClient, api: httpx.AsyncClient
) -> None:
    creds = await create_device(api)
    device = simulated_device(hub, creds, tls=True)
    async with device:
        await device.wait_connected(15)
        await api.patch(f"/twins/{creds.device_id}", json={"properties": {"desired": {"level": 1}}})
        await _until(lambda: device.desired.get("level") == 1, what="first desired value applied")
    assert not device.running
    await wait_for_state(api, creds.device_id, "Disconnected")

    response = await api.patch(f"/twins/{creds.device_id}", json={"properties": {"desired": {"level": 2, "new": "x"}}})
    version = response.json()["properties"]["desired"]["$version"]
    assert device.desired == {"level": 1}

    async with device:
        await device.wait_connected(15)
        # The startup twin GET brought the change; no notification was sent for it.
        assert device.desired == {"level": 2, "new": "x"}
        assert device.desired_version == version
        twin = await wait_for_twin(api, creds.device_id, lambda t: _reported(t).get("lastDesiredVersion") == version)
        assert (_reported(twin)["level"], _reported(twin)["new"]) == (2, "x")
        assert device.stats.connects == 2
        result = await registry.invoke_method(creds.device_id, "lockDoor", response_timeout=10)
        assert result.status == 200


async def test_hub_side_disconnect_then_reconnect_catches_up(
    hub: Hub, registry: AsyncRegistryClient, api: httpx.AsyncClient
) -> None:
    assert hub.services is not None
    creds = await create_device(api)
    device = SimulatedDevice(
        simulated_device(hub, creds).identity,
        device_endpoint(hub),
        options=DeviceOptions(backoff_initial=0.1, backoff_max=0.5),
    )
    async with device:
        await device.wait_connected(15)
        await wait_for_state(api, creds.device_id)

        # The hub drops the connection: the device comes back by itself.
        await hub.services.router.disconnect(creds.device_id)
        await _until(lambda: device.stats.connects >= 2 and device.connected.is_set(), what="automatic reconnect")
        assert (await registry.invoke_method(creds.device_id, "lockDoor", response_timeout=10)).status == 200

        # Rotating the keys drops the connection and keeps the device out until the old key is back;
        # a desired change made meanwhile reaches it through the twin GET of its next session.
        current = (await api.get(f"/devices/{creds.device_id}")).json()
        rotated = await api.put(
            f"/devices/{creds.device_id}",
            headers={"If-Match": current["etag"]},
            json={
                "deviceId": creds.device_id,
                "authentication": {"symmetricKey": {"primaryKey": "Q" * 44, "secondaryKey": "R" * 44}},
            },
        )
        assert rotated.status_code == 200, rotated.text
        await _until(lambda: not device.connected.is_set(), what="disconnect after key rotation")
        await wait_for_state(api, creds.device_id, "Disconnected")
        response = await api.patch(f"/twins/{creds.device_id}", json={"properties": {"desired": {"while": "away"}}})
        version = response.json()["properties"]["desired"]["$version"]
        assert "while" not in device.desired

        restored = await api.put(
            f"/devices/{creds.device_id}",
            headers={"If-Match": rotated.json()["etag"]},
            json={
                "deviceId": creds.device_id,
                "authentication": {
                    "symmetricKey": {"primaryKey": creds.primary_key, "secondaryKey": creds.secondary_key}
                },
            },
        )
        assert restored.status_code == 200, restored.text
        await device.wait_connected(30)
        await _until(lambda: device.desired.get("while") == "away", what="offline change applied")
        await wait_for_twin(api, creds.device_id, lambda t: _reported(t).get("lastDesiredVersion") == version)
        await wait_for_state(api, creds.device_id)
        assert device.stats.connects == 3


async def test_provisioning_twice_reuses_existing_devices(hub: Hub, registry: AsyncRegistryClient) -> None:
    prefix = _prefix()
    endpoint = device_endpoint(hub)
    first = await Fleet.provision(registry, endpoint, count=5, prefix=prefix)
    first_keys = {device.device_id: device.identity.key for device in first}

    second = await Fleet.provision(registry, endpoint, count=7, prefix=prefix)
    second_keys = {device.device_id: device.identity.key for device in second}
    assert list(second_keys) == [f"{prefix}{i:04d}" for i in range(7)]
    assert {k: second_keys[k] for k in first_keys} == first_keys
    assert len(set(second_keys.values())) == 7

    listed = [d.device_id for d in await registry.list_devices() if d.device_id.startswith(prefix)]
    assert sorted(listed) == sorted(second_keys)
    async with second:
        assert await second.wait_connected(30)
        result = await registry.invoke_method(f"{prefix}0000", "lockDoor", response_timeout=10)
        assert result.status == 200


async def test_cli_runs_a_fleet_against_the_hub(
    hub: Hub, registry: AsyncRegistryClient, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    assert hub.endpoints is not None
    out, err = tmp_path / "sim.out", tmp_path / "sim.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "device_sim",
            "--hub-connection-string",
            connection_string(hub),
            "--url",
            f"http://127.0.0.1:{hub.endpoints.http_port}",
            "--count",
            "5",
            "--prefix",
            "cli-",
            "--mqtt-host",
            "127.0.0.1",
            "--mqtt-port",
            str(hub.endpoints.mqtt_port),
            "--no-tls",
            "--duration",
            "8",
            stdout=stdout,
            stderr=stderr,
            cwd=_REPO,
        )
        try:
            for i in range(5):
                await wait_for_state(api, f"cli-{i:04d}", timeout=30)
            # The fleet runs for --duration after it connected: there is time for a call.
            answer = await registry.invoke_method("cli-0003", "lockDoor", response_timeout=5)
            assert (answer.status, answer.payload) == (200, {"locked": True})
            result = await asyncio.wait_for(process.wait(), timeout=60)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert result == 0, f"stdout:\n{out.read_text()}\nstderr:\n{err.read_text()}"
    printed = out.read_text()
    assert "provisioning 5 device(s) cli-0000" in printed
    assert "stopped: connected 0/5 | methods 1 (failed 0)" in printed
    for i in range(5):
        await wait_for_state(api, f"cli-{i:04d}", "Disconnected")
        twin = (await api.get(f"/twins/cli-{i:04d}")).json()
        assert _reported(twin)["firmware"] == "1.0.0"


@pytest.mark.parametrize("tls", [False, True])
async def test_single_device_from_connection_string(
    hub: Hub, registry: AsyncRegistryClient, api: httpx.AsyncClient, tls: bool
) -> None:
    assert hub.endpoints is not None
    creds: DeviceCreds = await create_device(api)
    cs = f"HostName=localhost;DeviceId={creds.device_id};SharedAccessKey={creds.primary_key}"
    port = hub.endpoints.mqtts_port if tls else hub.endpoints.mqtt_port
    device = SimulatedDevice.from_connection_string(
        cs, host="127.0.0.1", port=port, tls=tls, ca_cert=hub.endpoints.ca_cert if tls else None
    )
    async with device:
        await device.wait_connected(15)
        twin = await device.get_twin(10)
        reported = twin["reported"]
        assert isinstance(reported, dict)
        assert reported["firmware"] == "1.0.0"
        version = await device.patch_reported({"battery": 80}, 10)
        assert version is not None
        await wait_for_twin(api, creds.device_id, lambda t: _reported(t).get("battery") == 80)
        result = await registry.invoke_method(creds.device_id, "lockDoor", response_timeout=10)
        assert (result.status, result.payload) == (200, {"locked": True})


async def test_reboot_with_reconnect_comes_back(
    hub: Hub, registry: AsyncRegistryClient, api: httpx.AsyncClient
) -> None:
    creds = await create_device(api)
    async with simulated_device(hub, creds, behaviours=Behaviours(reboot_reconnect_after=0.2)) as device:
        await device.wait_connected(15)
        result = await registry.invoke_method(creds.device_id, "reboot", response_timeout=10)
        assert (result.status, result.payload) == (200, {"rebooting": True})
        await _until(lambda: device.stats.connects == 2 and device.connected.is_set(), what="reconnect after reboot")
        assert device.stats.disconnects == 1
        await wait_for_state(api, creds.device_id)
        assert (await registry.invoke_method(creds.device_id, "lockDoor", response_timeout=10)).status == 200


async def test_cli_single_device_over_tls_stops_on_sigterm(
    hub: Hub, registry: AsyncRegistryClient, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    assert hub.endpoints is not None
    creds = await create_device(api)
    cs = f"HostName=localhost;DeviceId={creds.device_id};SharedAccessKey={creds.primary_key}"
    out, err = tmp_path / "sim.out", tmp_path / "sim.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "device_sim",
            "--device-connection-string",
            cs,
            "--ca-cert",
            str(hub.endpoints.ca_cert),
            "--mqtt-host",
            "127.0.0.1",
            "--mqtt-port",
            str(hub.endpoints.mqtts_port),
            "--failure-rate",
            "lockDoor=1",
            stdout=stdout,
            stderr=stderr,
            cwd=_REPO,
        )
        try:
            await wait_for_state(api, creds.device_id, timeout=30)
            answer = await registry.invoke_method(creds.device_id, "lockDoor", response_timeout=5)
            assert answer.status == 500
            process.send_signal(signal.SIGTERM)
            result = await asyncio.wait_for(process.wait(), timeout=60)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    printed = out.read_text()
    assert result == 0, f"stdout:\n{printed}\nstderr:\n{err.read_text()}"
    assert "(TLS)" in printed
    assert "stopped by signal" in printed
    await wait_for_state(api, creds.device_id, "Disconnected")


async def test_cli_runs_an_x509_fleet_with_the_ca_it_is_given(
    hub: Hub, registry: AsyncRegistryClient, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    assert hub.endpoints is not None
    ca_cert, ca_key = make_ca("sim fleet root").write(tmp_path / "ca", "ca")
    out, err = tmp_path / "sim.out", tmp_path / "sim.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "device_sim",
            "--hub-connection-string", connection_string(hub),
            "--url", f"http://127.0.0.1:{hub.endpoints.http_port}",
            "--ca-cert", str(hub.endpoints.ca_cert),
            "--mqtt-host", "localhost", "--mqtt-port", str(hub.endpoints.mqtts_port),
            "--count", "4", "--prefix", "x509-",
            "--x509", "--x509-ca", str(ca_cert), "--x509-ca-key", str(ca_key), "--x509-dir", str(tmp_path / "certs"),
            "--duration", "8",
            stdout=stdout, stderr=stderr, cwd=_REPO,
        )  # fmt: skip
        try:
            for i in range(4):
                await wait_for_state(api, f"x509-{i:04d}", timeout=30)
            answer = await registry.invoke_method("x509-0002", "lockDoor", response_timeout=5)
            assert (answer.status, answer.payload) == (200, {"locked": True})
            result = await asyncio.wait_for(process.wait(), timeout=60)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert result == 0, f"stdout:\n{out.read_text()}\nstderr:\n{err.read_text()}"
    device = (await api.get("/devices/x509-0001")).json()
    assert device["authentication"]["type"] == "certificateAuthority"
    assert device["authentication"]["symmetricKey"] == {"primaryKey": None, "secondaryKey": None}
    [registered] = await registry.list_certificates()
    assert registered.subject == "CN=sim fleet root"
    assert sorted(p.name for p in (tmp_path / "certs").iterdir())[:2] == ["x509-0000.key.pem", "x509-0000.pem"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--x509"], "--x509 needs --x509-ca and --x509-ca-key"),
        (["--x509-ca", "ca.pem"], "go with --x509"),
        (["--x509", "--x509-ca", "ca.pem", "--x509-ca-key", "ca.key", "--no-tls"], "drop --no-tls"),
    ],
)
def test_cli_x509_options_are_checked_before_anything_runs(args: list[str], says: str) -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "device_sim", "--hub-connection-string", "HostName=h;SharedAccessKeyName=x;"
         "SharedAccessKey=a2V5a2V5a2V5a2V5a2V5a2V5", *args],
        capture_output=True, text=True, cwd=_REPO, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert says in " ".join(result.stderr.split())
