"""Simulated method behaviours: the built-in methods, latency, failure injection, CLI settings."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from device_sim.behaviours import (
    Behaviours,
    MethodCall,
    MethodProfile,
    MethodReply,
    Reboot,
    parse_profiles,
)
from hub.domain.json import JsonValue


@dataclass
class FakeDevice:
    """Stands in for the device a handler runs on (a DeviceContext)."""

    device_id: str = "dev-1"
    reconnects: list[float] = field(default_factory=list)

    def request_reconnect(self, delay: float) -> None:
        self.reconnects.append(delay)


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def _call(name: str, payload: JsonValue = None, device: FakeDevice | None = None) -> MethodCall:
    return MethodCall(device or FakeDevice(), name, payload)


async def test_lock_door_and_reboot_answer_200() -> None:
    behaviours = Behaviours()
    assert await behaviours.handle(_call("lockDoor")) == MethodReply(200, {"locked": True})
    assert await behaviours.handle(_call("reboot", {"now": True})) == MethodReply(200, {"rebooting": True})


async def test_reboot_asks_for_a_reconnect_only_when_configured() -> None:
    device = FakeDevice()
    await Behaviours().handle(_call("reboot", device=device))
    assert device.reconnects == []
    await Behaviours(reboot_reconnect_after=2.5).handle(_call("reboot", device=device))
    assert device.reconnects == [2.5]
    assert (await Reboot(0.0)(_call("reboot", device=device))).status == 200


async def test_unknown_methods_answer_404_naming_the_method() -> None:
    reply = await Behaviours().handle(_call("openWindow"))
    assert reply == MethodReply(404, {"message": "method openWindow not implemented"})


async def test_latency_is_waited_per_method() -> None:
    sleeps = Sleeps()
    behaviours = Behaviours(profiles={"lockDoor": MethodProfile(latency=0.25)}, sleep=sleeps)
    await behaviours.handle(_call("lockDoor"))
    await behaviours.handle(_call("reboot"))
    assert sleeps.calls == [0.25]


async def test_latency_ranges_draw_within_bounds_reproducibly() -> None:
    async def draws(seed: int) -> list[float]:
        sleeps = Sleeps()
        behaviours = Behaviours(default_profile=MethodProfile(latency=(0.01, 0.2)), seed=seed, sleep=sleeps)
        for _ in range(50):
            await behaviours.handle(_call("lockDoor"))
        return sleeps.calls

    first = await draws(7)
    assert first == await draws(7)
    assert len(first) == 50
    assert all(0.01 <= value <= 0.2 for value in first)
    assert len(set(first)) > 1


async def test_failure_rate_answers_500_at_about_the_rate_and_reproducibly() -> None:
    async def statuses(seed: int) -> list[int]:
        behaviours = Behaviours(profiles={"lockDoor": MethodProfile(failure_rate=0.3)}, seed=seed)
        return [(await behaviours.handle(_call("lockDoor"))).status for _ in range(1000)]

    first = await statuses(42)
    assert first == await statuses(42)
    assert set(first) == {200, 500}
    assert 240 <= first.count(500) <= 360
    failed = await Behaviours(profiles={"lockDoor": MethodProfile(failure_rate=1.0)}).handle(_call("lockDoor"))
    assert failed.status == 500
    assert failed.payload == {"error": "simulated failure of lockDoor"}


async def test_a_failing_handler_answers_500_instead_of_raising() -> None:
    async def broken(call: MethodCall) -> MethodReply:
        raise RuntimeError("boom")

    behaviours = Behaviours(handlers={"selfTest": broken})
    reply = await behaviours.handle(_call("selfTest"))
    assert reply.status == 500
    assert reply.payload == {"error": "selfTest failed: RuntimeError: boom"}
    assert "selfTest" in behaviours.method_names


async def test_custom_handlers_see_the_payload_and_device() -> None:
    async def echo(call: MethodCall) -> MethodReply:
        return MethodReply(201, {"device": call.device.device_id, "got": call.payload})

    behaviours = Behaviours()
    behaviours.register("echo", echo)
    assert await behaviours.handle(_call("echo", [1, "x"])) == MethodReply(201, {"device": "dev-1", "got": [1, "x"]})


@pytest.mark.parametrize(
    ("profile_args", "message"),
    [
        ({"latency": -1.0}, "latency"),
        ({"latency": (0.5, 0.1)}, "latency"),
        ({"failure_rate": 1.5}, "failure_rate"),
        ({"failure_rate": -0.1}, "failure_rate"),
    ],
)
def test_profiles_reject_nonsense(profile_args: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MethodProfile(**profile_args)


def test_parse_profiles_reads_cli_settings() -> None:
    profiles, default = parse_profiles(["lockDoor=0.05", "reboot=0.01:0.2", "*=0.001"], ["lockDoor=0.1", "*=0.02"])
    assert profiles["lockDoor"] == MethodProfile(0.05, 0.1)
    assert profiles["reboot"] == MethodProfile((0.01, 0.2), 0.02)
    assert default == MethodProfile(0.001, 0.02)
    assert parse_profiles() == ({}, MethodProfile())


@pytest.mark.parametrize(
    ("latencies", "rates"),
    [(["lockDoor"], []), (["=1"], []), ([], ["lockDoor=x"]), (["lockDoor=1:"], []), ([], ["lockDoor=2"])],
)
def test_parse_profiles_rejects_bad_settings(latencies: list[str], rates: list[str]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - float(), the splitter and MethodProfile all raise it
        parse_profiles(latencies, rates)
