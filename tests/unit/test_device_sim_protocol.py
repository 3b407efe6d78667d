"""The device side of the dialect, driven with plain (topic, payload) inputs and no broker."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_sim.behaviours import Behaviours, MethodReply
from device_sim.errors import NotConnectedError, TwinRequestError
from device_sim.options import DeviceHooks, DeviceOptions
from device_sim.protocol import (
    DesiredState,
    DeviceProtocol,
    PendingRequests,
    ReconnectRequested,
    TwinReply,
    merge_diff,
)
from hub.domain.json import JsonObject
from hub.domain.twin import merge_patch
from hub.wire.topics import (
    MethodResponse,
    ReportedPatch,
    TwinGet,
    desired_patch_topic,
    method_request_topic,
    parse_device_topic,
    twin_response_topic,
)

STARTED = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


class FixedClock:
    def now(self) -> datetime:
        return STARTED

    def monotonic(self) -> float:
        return 0.0


class Wire:
    """Collects what the device publishes; can answer twin requests like the hub does."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.arrived = asyncio.Event()

    async def publish(self, topic: str, payload: bytes) -> None:
        self.sent.append((topic, payload))
        self.arrived.set()

    async def next_request(self) -> tuple[Any, bytes]:
        while not self.sent:
            self.arrived.clear()
            await self.arrived.wait()
        topic, payload = self.sent.pop(0)
        return parse_device_topic(topic), payload


def _protocol(
    *, options: DeviceOptions | None = None, behaviours: Behaviours | None = None, hooks: DeviceHooks | None = None
) -> tuple[DeviceProtocol, Wire]:
    protocol = DeviceProtocol(
        "dev-1",
        behaviours=behaviours or Behaviours(),
        options=options or DeviceOptions(clock=FixedClock(), request_timeout=2.0),
        hooks=hooks or DeviceHooks(),
    )
    wire = Wire()
    protocol.bind(wire.publish)
    return protocol, wire


async def _run(work: Any) -> None:
    assert work is not None
    await work


def _json(payload: bytes) -> Any:
    return json.loads(payload)


# -- methods ----------------------------------------------------------------------------------


async def test_a_method_request_is_answered_on_its_rid() -> None:
    protocol, wire = _protocol()
    await _run(protocol.dispatch(method_request_topic("lockDoor", "rid-7"), b'{"force": true}'))
    ((topic, payload),) = wire.sent
    assert parse_device_topic(topic) == MethodResponse("rid-7", 200)
    assert _json(payload) == {"locked": True}
    assert protocol.stats.methods_handled == 1
    assert protocol.stats.methods_failed == 0


@pytest.mark.parametrize("payload", [b"", b"null", b"{}", b'"text"', b"[1,2]"])
async def test_any_json_request_payload_is_accepted(payload: bytes) -> None:
    protocol, wire = _protocol()
    await _run(protocol.dispatch(method_request_topic("reboot", "1"), payload))
    assert parse_device_topic(wire.sent[0][0]) == MethodResponse("1", 200)


async def test_a_request_that_is_not_json_answers_400() -> None:
    protocol, wire = _protocol()
    await _run(protocol.dispatch(method_request_topic("lockDoor", "1"), b"{nope"))
    topic, payload = wire.sent[0]
    assert parse_device_topic(topic) == MethodResponse("1", 400)
    assert "not JSON" in _json(payload)["message"]
    assert protocol.stats.methods_failed == 1


async def test_unknown_methods_are_answered_404() -> None:
    protocol, wire = _protocol()
    await _run(protocol.dispatch(method_request_topic("openWindow", "9"), b"null"))
    topic, payload = wire.sent[0]
    assert parse_device_topic(topic) == MethodResponse("9", 404)
    assert _json(payload) == {"message": "method openWindow not implemented"}


async def test_rids_with_reserved_characters_survive_the_round_trip() -> None:
    protocol, wire = _protocol()
    await _run(protocol.dispatch(method_request_topic("lockDoor", "a&b=c?d"), b"null"))
    assert parse_device_topic(wire.sent[0][0]) == MethodResponse("a&b=c?d", 200)


async def test_a_handler_returning_non_json_answers_500() -> None:
    async def odd(call: Any) -> MethodReply:
        return MethodReply(200, {"when": object()})  # type: ignore[dict-item]

    protocol, wire = _protocol(behaviours=Behaviours(handlers={"odd": odd}))
    await _run(protocol.dispatch(method_request_topic("odd", "1"), b""))
    assert parse_device_topic(wire.sent[0][0]) == MethodResponse("1", 500)


async def test_reboot_with_reconnect_replies_first_then_asks_to_reconnect() -> None:
    protocol, wire = _protocol(behaviours=Behaviours(reboot_reconnect_after=1.5))
    with pytest.raises(ReconnectRequested) as caught:
        await _run(protocol.dispatch(method_request_topic("reboot", "3"), b"null"))
    assert caught.value.delay == 1.5
    assert parse_device_topic(wire.sent[0][0]) == MethodResponse("3", 200)
    # The request is spent: the next call does not reconnect again.
    await _run(protocol.dispatch(method_request_topic("lockDoor", "4"), b"null"))


async def test_a_reply_that_cannot_be_sent_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    protocol, _ = _protocol()
    protocol.unbind()
    await _run(protocol.dispatch(method_request_topic("lockDoor", "1"), b""))
    assert "could not reply" in caplog.text
    assert protocol.stats.methods_handled == 1


async def test_hooks_see_calls_and_a_broken_hook_changes_nothing() -> None:
    seen: list[tuple[str, str, Any, MethodReply]] = []

    def broken(*args: Any) -> None:
        raise RuntimeError("hook bug")

    protocol, _ = _protocol(hooks=DeviceHooks(on_method=lambda *args: seen.append(args), on_desired=broken))
    await _run(protocol.dispatch(method_request_topic("lockDoor", "1"), b'{"a": 1}'))
    assert seen == [("dev-1", "lockDoor", {"a": 1}, MethodReply(200, {"locked": True}))]
    await _run(protocol.dispatch(desired_patch_topic(2), b'{"mode": "eco", "$version": 2}'))
    assert protocol.desired.properties == {"mode": "eco"}


# -- malformed input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("devices/dev-1/messages/devicebound/x", b""),
        ("$iothub/twin/res/abc/?$rid=1", b""),
        ("$iothub/methods/POST/lockDoor/", b""),
        ("$iothub/twin/PATCH/properties/desired/?$version=3", b"{not json"),
        ("$iothub/twin/PATCH/properties/desired/?$version=3", b"[1]"),
    ],
)
async def test_malformed_messages_are_counted_and_ignored(topic: str, payload: bytes) -> None:
    protocol, wire = _protocol()
    assert protocol.dispatch(topic, payload) is None
    assert protocol.stats.bad_messages == 1
    assert wire.sent == []


async def test_a_reply_for_an_unknown_request_is_dropped() -> None:
    protocol, _ = _protocol()
    assert protocol.dispatch(twin_response_topic(200, "999"), b"{}") is None
    assert protocol.stats.bad_messages == 0


# -- twin requests ----------------------------------------------------------------------------


async def _answer(
    wire: Wire, status: int, body: JsonObject | None = None, version: int | None = None
) -> tuple[Any, bytes, tuple[str, bytes]]:
    request, payload = await wire.next_request()
    reply = (twin_response_topic(status, request.rid, version), json.dumps(body).encode() if body else b"")
    return request, payload, reply


async def test_get_twin_publishes_a_get_and_returns_the_reply() -> None:
    protocol, wire = _protocol(options=DeviceOptions(clock=FixedClock(), acknowledge_desired=False))
    doc = {"desired": {"mode": "eco", "$version": 3}, "reported": {"$version": 1}}
    task = asyncio.create_task(protocol.get_twin())
    request, payload, reply = await _answer(wire, 200, doc)
    assert isinstance(request, TwinGet)
    assert payload == b""
    protocol.dispatch(*reply)
    assert await task == doc
    assert protocol.twin == doc
    assert protocol.desired.properties == {"mode": "eco"}
    assert protocol.desired.version == 3
    assert protocol.stats.desired_applied == 1
    assert len(protocol.pending) == 0


async def test_patch_reported_returns_the_new_version() -> None:
    protocol, wire = _protocol()
    task = asyncio.create_task(protocol.patch_reported({"temperature": 21.5}))
    request, payload, reply = await _answer(wire, 204, version=12)
    assert isinstance(request, ReportedPatch)
    assert _json(payload) == {"temperature": 21.5}
    protocol.dispatch(*reply)
    assert await task == 12
    assert protocol.stats.reported_patches == 1


async def test_patch_reported_raises_with_the_hub_status() -> None:
    protocol, wire = _protocol()
    task = asyncio.create_task(protocol.patch_reported({"bad key": 1}))
    _, _, (topic, _) = await _answer(wire, 400)
    protocol.dispatch(topic, b'{"message": "bad key"}')
    with pytest.raises(TwinRequestError) as caught:
        await task
    assert caught.value.status == 400
    assert "bad key" in str(caught.value)


async def test_a_twin_request_without_reply_times_out_and_is_forgotten() -> None:
    protocol, _ = _protocol()
    with pytest.raises(TimeoutError, match="no reply"):
        await protocol.get_twin(timeout=0.05)
    assert len(protocol.pending) == 0


async def test_requests_fail_fast_without_a_connection() -> None:
    protocol, _ = _protocol()
    protocol.unbind()
    with pytest.raises(NotConnectedError):
        await protocol.patch_reported({"a": 1})


async def test_losing_the_connection_fails_requests_in_flight() -> None:
    protocol, wire = _protocol()
    task = asyncio.create_task(protocol.get_twin())
    await wire.next_request()
    protocol.unbind()
    with pytest.raises(NotConnectedError):
        await task


def test_pending_requests_use_fresh_ids_and_ignore_late_replies() -> None:
    async def scenario() -> None:
        pending = PendingRequests()
        first, future = pending.open()
        pending.fail_all(NotConnectedError("gone"))
        with pytest.raises(NotConnectedError):
            await future
        second, _ = pending.open()
        assert second != first
        assert not pending.resolve(first, TwinReply(200, None, b""))
        assert pending.resolve(second, TwinReply(200, None, b""))

    asyncio.run(scenario())


# -- desired properties -----------------------------------------------------------------------


async def test_desired_patches_apply_and_are_acknowledged_in_reported() -> None:
    protocol, wire = _protocol()
    work = protocol.dispatch(desired_patch_topic(5), b'{"building": "43", "old": null, "$version": 5}')
    assert protocol.desired.properties == {"building": "43"}  # applied before any await
    task = asyncio.create_task(_run(work))
    request, payload, reply = await _answer(wire, 204, version=8)
    assert isinstance(request, ReportedPatch)
    assert _json(payload) == {"building": "43", "old": None, "lastDesiredVersion": 5}
    protocol.dispatch(*reply)
    await task
    assert protocol.stats.desired_applied == 1


async def test_stale_desired_versions_are_ignored() -> None:
    protocol, _ = _protocol(options=DeviceOptions(acknowledge_desired=False))
    assert protocol.dispatch(desired_patch_topic(7), b'{"a": 1, "$version": 7}') is None
    assert protocol.dispatch(desired_patch_topic(7), b'{"a": 2, "$version": 7}') is None
    assert protocol.dispatch(desired_patch_topic(6), b'{"a": 3, "$version": 6}') is None
    assert protocol.desired.properties == {"a": 1}
    assert protocol.stats.desired_applied == 1


async def test_the_version_in_the_body_is_used_when_the_topic_has_none() -> None:
    protocol, _ = _protocol(options=DeviceOptions(acknowledge_desired=False))
    protocol.dispatch("$iothub/twin/PATCH/properties/desired/", b'{"a": {"b": 1}, "$version": 4}')
    protocol.dispatch("$iothub/twin/PATCH/properties/desired/", b'{"a": {"c": 2}, "$version": 3}')
    assert protocol.desired.properties == {"a": {"b": 1}}
    assert protocol.desired.version == 4


async def test_session_start_reports_startup_and_unseen_desired_in_one_patch() -> None:
    protocol, wire = _protocol()
    task = asyncio.create_task(protocol.start_session())
    _, _, reply = await _answer(wire, 200, {"desired": {"building": "43", "$version": 5}, "reported": {"$version": 2}})
    protocol.dispatch(*reply)
    request, payload, reply = await _answer(wire, 204, version=3)
    assert isinstance(request, ReportedPatch)
    assert _json(payload) == {
        "firmware": "1.0.0",
        "connectivity": "wifi",
        "startedAt": "2024-05-06T07:08:09.1234560Z",
        "building": "43",
        "lastDesiredVersion": 5,
    }
    protocol.dispatch(*reply)
    await task
    assert protocol.twin is not None
    assert protocol.twin["reported"]["building"] == "43"
    assert protocol.twin["reported"]["$version"] == 3

    # A reconnect with nothing new desired reports only the startup properties.
    task = asyncio.create_task(protocol.start_session())
    _, _, reply = await _answer(wire, 200, {"desired": {"building": "43", "$version": 5}, "reported": {"$version": 3}})
    protocol.dispatch(*reply)
    _, payload, reply = await _answer(wire, 204, version=4)
    assert set(_json(payload)) == {"firmware", "connectivity", "startedAt"}
    protocol.dispatch(*reply)
    await task
    assert protocol.stats.desired_applied == 1


async def test_session_start_acknowledges_desired_changed_while_offline() -> None:
    protocol, wire = _protocol(options=DeviceOptions(startup_properties={}, report_started_at=False))
    protocol.desired.properties = {"mode": "eco", "gone": 1}
    protocol.desired.version = 5
    task = asyncio.create_task(protocol.start_session())
    _, _, reply = await _answer(wire, 200, {"desired": {"mode": "boost", "$version": 9}, "reported": {}})
    protocol.dispatch(*reply)
    _, payload, reply = await _answer(wire, 204, version=1)
    assert _json(payload) == {"mode": "boost", "gone": None, "lastDesiredVersion": 9}
    protocol.dispatch(*reply)
    await task


def test_desired_state_adopts_only_newer_documents() -> None:
    state = DesiredState()
    assert state.adopt({"a": 1, "$version": 2, "$metadata": {}}) == {"a": 1}
    assert state.adopt({"a": 5, "$version": 2}) is None
    assert state.apply({"b": 2}, 3) == {"b": 2}
    assert state.adopt({"a": 1, "b": 2, "$version": 3}) is None
    assert state.properties == {"a": 1, "b": 2}


_json_leaf = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=4)
_json_values = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=10,
)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


@given(
    st.dictionaries(st.text(max_size=3), _json_values, max_size=4),
    st.dictionaries(st.text(max_size=3), _json_values, max_size=4),
)
def test_merge_diff_is_the_patch_between_two_documents(old: JsonObject, new: JsonObject) -> None:
    # Stored documents hold no nulls (a null in a merge patch means "delete").
    old, new = _without_nulls(old), _without_nulls(new)
    assert merge_patch(old, merge_diff(old, new)) == new
    assert merge_diff(new, new) == {}
