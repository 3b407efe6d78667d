"""The real device SDKs, Python (azure-iot-device 2.14) and Node (azure-iot-device 1.18 with
azure-iot-device-mqtt), against a hub: over MQTT/TLS on 8883 and over MQTT over WebSockets
on 443, logging in with a SAS connection string, a self-signed X.509 certificate
(thumbprint) or a CA-signed one; direct methods, twin reads, reported and desired
properties, and reconnection after the hub restarts. The back-end side is fleethub's own
client, over https://localhost like the SDKs."""

from __future__ import annotations

from typing import Any

import pytest

from tests.compat.conftest import Agent, CompatHub, DeviceAgents, eventually

VARIANTS = [
    ("python", "mqtt", "sas"),
    ("node", "mqtt", "sas"),
    ("python", "websockets", "sas"),
    ("node", "websockets", "sas"),
    ("python", "mqtt", "selfSigned"),
    ("python", "mqtt", "certificateAuthority"),
    ("node", "mqtt", "selfSigned"),
    ("node", "mqtt", "certificateAuthority"),
]


@pytest.fixture(scope="module", params=VARIANTS, ids=["-".join(variant) for variant in VARIANTS])
def device(request: pytest.FixtureRequest, device_agents: DeviceAgents) -> tuple[str, Agent]:
    sdk, transport, auth = request.param
    return device_agents(sdk, f"{sdk}-{transport}-{auth}", transport=transport, auth=auth, runtime=sdk)


def sdk_of(agent: Agent) -> str:
    return "azure-iot-device-node" if "Node" in agent.name else "azure-iot-device"


def reported(compat_hub: CompatHub, device_id: str) -> dict[str, Any]:
    with compat_hub.registry() as registry:
        return registry.get_twin(device_id).properties.reported


def test_connects_over_tls_and_reads_its_twin(compat_hub: CompatHub, device: tuple[str, Agent]) -> None:
    device_id, agent = device
    twin = agent.event("twin")["twin"]
    assert twin["desired"]["$version"] >= 1
    assert "$version" in twin["reported"]
    with compat_hub.registry() as registry:
        assert registry.get_twin(device_id).connection_state == "Connected"


def test_reported_properties_reach_the_twin(compat_hub: CompatHub, device: tuple[str, Agent]) -> None:
    device_id, agent = device
    agent.event("reported", patch={"sdk": sdk_of(agent), "firmware": "1.0.0"})
    eventually(lambda: reported(compat_hub, device_id).get("firmware") == "1.0.0", what="reported firmware")
    agent.send('report {"battery": 87, "location": {"building": "43"}}')
    got = eventually(lambda: reported(compat_hub, device_id).get("battery") == 87, what="reported battery")
    assert got
    assert reported(compat_hub, device_id)["location"] == {"building": "43"}


def test_answers_a_direct_method(compat_hub: CompatHub, device: tuple[str, Agent]) -> None:
    device_id, agent = device
    with compat_hub.registry() as registry:
        result = registry.invoke_method(device_id, "lockDoor", {"code": 1234}, response_timeout=10)
    assert (result.status, result.payload) == (200, {"locked": True})
    agent.event("method", name="lockDoor", payload={"code": 1234})


def test_receives_desired_patches(compat_hub: CompatHub, device: tuple[str, Agent]) -> None:
    device_id, agent = device
    with compat_hub.registry() as registry:
        registry.update_twin(device_id, {"properties": {"desired": {"building": "43", "floor": 3}}})
    patch = agent.event("desired")["patch"]
    assert (patch["building"], patch["floor"]) == ("43", 3)
    assert patch["$version"] >= 2
    eventually(lambda: reported(compat_hub, device_id).get("floor") == 3, what="acknowledged floor")


# Reconnection is the transport's and the SDK's, not the login's: it is proven on each
# transport once (a hub restart costs every connected SDK a reconnect with back-off).
RECONNECTING = [variant for variant in VARIANTS if variant[2] == "sas"]


@pytest.mark.parametrize("device", RECONNECTING, ids=["-".join(v) for v in RECONNECTING], indirect=True)
def test_reconnects_after_the_hub_restarts_and_keeps_receiving(
    compat_hub: CompatHub, device: tuple[str, Agent]
) -> None:
    device_id, agent = device
    compat_hub.restart()

    def call() -> Any:
        with compat_hub.registry() as registry:
            return registry.invoke_method(device_id, "reboot", {"after": "restart"}, response_timeout=5)

    # The SDK reconnects on its own (it retries with back-off); until then calls get 404.
    result = eventually(call, timeout=90, what="a method call after the restart")
    assert (result.status, result.payload) == (200, {"echo": {"after": "restart"}})
    agent.event("method", name="reboot")
    with compat_hub.registry() as registry:
        registry.update_twin(device_id, {"properties": {"desired": {"floor": 4}}})
    assert agent.event("desired")["patch"]["floor"] == 4
    agent.send("get_twin")
    assert agent.expect(lambda e: e.get("event") == "twin" and e["twin"]["desired"].get("floor") == 4)
