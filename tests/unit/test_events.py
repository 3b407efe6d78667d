"""Hub events: their bytes (what crosses a process boundary) and the in-process broker."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hub.domain import events as ev
from hub.domain.events import (
    DeviceConnected,
    DeviceDisconnected,
    DevicesAdded,
    EventDecodeError,
    HubEvent,
    JobCancelled,
    JobCreated,
    TwinChanged,
    decode_event,
    encode_event,
)
from hub.engine.events import LocalEventBroker

KINDS = [getattr(ev, name) for name in ev.__all__ if isinstance(getattr(ev, name), type)]
EVENT_KINDS = [kind for kind in KINDS if issubclass(kind, HubEvent) and kind is not HubEvent]


def _event_of(kind: type[HubEvent]) -> st.SearchStrategy[HubEvent]:
    values = {
        field.name: st.integers(0, 2**53) if field.name == "count" else st.text(max_size=40)
        for field in dataclasses.fields(kind)
    }
    return st.builds(kind, **values)


@given(st.sampled_from(EVENT_KINDS).flatmap(_event_of))
def test_every_event_survives_its_bytes(event: HubEvent) -> None:
    data = encode_event(event)
    assert decode_event(data) == event
    assert json.loads(data)["type"] == event.type


def test_event_types_are_distinct_and_every_kind_decodes() -> None:
    assert len({kind.type for kind in EVENT_KINDS}) == len(EVENT_KINDS) == 8
    for kind in EVENT_KINDS:
        assert isinstance(decode_event(encode_event(_example(kind))), kind)


def _example(kind: type[HubEvent]) -> HubEvent:
    return kind(**{f.name: 1 if f.name == "count" else "x" for f in dataclasses.fields(kind)})


def test_events_are_small_facts() -> None:
    # The payload of a PostgreSQL NOTIFY is limited to 8000 bytes; an event is far below.
    assert len(encode_event(TwinChanged("d" * 128))) < 200
    with pytest.raises(dataclasses.FrozenInstanceError):
        JobCreated("j").job_id = "k"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not json", "JSON object"),
        (b"[1]", "JSON object"),
        (b'{"device_id": "d"}', "unknown event type None"),
        (b'{"type": "device.exploded", "device_id": "d"}', "unknown event type 'device.exploded'"),
        (b'{"type": 7}', "unknown event type 7"),
        (b'{"type": "device.connected"}', r"lacks fields \['device_id'\]"),
        (b'{"type": "device.connected", "device_id": "d", "extra": 1}', r"unknown fields \['extra'\]"),
        (b'{"type": "device.connected", "device_id": 5}', "device_id must be a string"),
        (b'{"type": "devices.added", "count": "5"}', "count must be an integer"),
        (b'{"type": "devices.added", "count": true}', "count must be an integer"),
        (b'{"type": "devices.added", "count": 1.5}', "count must be an integer"),
    ],
)
def test_bytes_that_are_not_a_known_event_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(EventDecodeError, match=message):
        decode_event(data)


async def test_subscribers_hear_only_their_kinds_in_order() -> None:
    broker = LocalEventBroker()
    devices: list[HubEvent] = []
    jobs: list[HubEvent] = []
    broker.subscribe(devices.append, [DeviceConnected, DeviceDisconnected])
    broker.subscribe(jobs.append, [JobCreated])
    sequence: list[HubEvent] = [DeviceConnected("a"), JobCreated("j"), DeviceDisconnected("a"), JobCancelled("j")]
    for event in sequence:
        await broker.publish(event)
    assert devices == [DeviceConnected("a"), DeviceDisconnected("a")]
    assert jobs == [JobCreated("j")]


async def test_an_async_handler_has_run_when_publish_returns() -> None:
    broker = LocalEventBroker()
    seen: list[str] = []

    async def handler(event: DeviceConnected) -> None:
        seen.append(event.device_id)

    broker.subscribe(handler, [DeviceConnected])
    await broker.publish(DeviceConnected("a"))
    assert seen == ["a"]


async def test_a_failing_handler_is_logged_and_the_others_still_hear(caplog: pytest.LogCaptureFixture) -> None:
    broker = LocalEventBroker()
    seen: list[HubEvent] = []

    def broken(event: HubEvent) -> None:
        raise RuntimeError("boom")

    broker.subscribe(broken, [DevicesAdded])
    broker.subscribe(seen.append, [DevicesAdded])
    with caplog.at_level(logging.ERROR, logger="hub.engine.events"):
        await broker.publish(DevicesAdded(2))
        await broker.publish(DevicesAdded(3))
    assert seen == [DevicesAdded(2), DevicesAdded(3)]
    assert sum("boom" in (record.exc_text or "") for record in caplog.records) == 2


async def test_unsubscribed_handlers_hear_nothing_more_even_from_inside_a_delivery() -> None:
    broker = LocalEventBroker()
    seen: list[str] = []
    later: list[HubEvent] = []

    def once(event: DeviceConnected) -> None:
        seen.append(event.device_id)
        subscription.unsubscribe()

    subscription = broker.subscribe(once, [DeviceConnected])
    broker.subscribe(later.append, [DeviceConnected])
    await broker.publish(DeviceConnected("a"))
    await broker.publish(DeviceConnected("b"))
    assert seen == ["a"]
    assert later == [DeviceConnected("a"), DeviceConnected("b")]
    subscription.unsubscribe()  # twice is harmless


def test_a_subscription_names_at_least_one_kind() -> None:
    with pytest.raises(ValueError, match="at least one"):
        LocalEventBroker().subscribe(print, [])
