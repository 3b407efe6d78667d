"""The topic scope rules, without a broker."""

from __future__ import annotations

import pytest

from hub.gateway import scope


@pytest.mark.parametrize(
    ("topic_filter", "allowed"),
    [
        ("$iothub/methods/POST/#", True),
        ("$iothub/methods/POST/lockDoor/#", True),
        ("$iothub/twin/res/#", True),
        ("$iothub/twin/PATCH/properties/desired/#", True),
        ("$iothub/#", False),
        ("$iothub/+/#", False),
        ("$iothub/+/POST/#", False),
        ("$iothub/methods/#", False),
        ("$iothub/twin/#", False),
        ("$iothub/twin/+/#", False),
        ("$iothub/twin/GET/#", False),
        ("$iothub/methods/res/#", False),
        ("devices/d1/messages/devicebound/#", True),
        ("devices/d1/#", True),
        ("#", False),
        ("+/d1/#", False),
        ("devices/+/messages/events", False),
        ("devices/d2/#", False),
        ("devices/d1", False),
        ("devices/d10/#", False),
        ("$iothub", False),
        ("$SYS/#", False),
    ],
)
def test_may_subscribe(topic_filter: str, allowed: bool) -> None:
    assert scope.may_subscribe("d1", topic_filter) is allowed


@pytest.mark.parametrize(
    ("topic", "forwarded"),
    [
        ("$iothub/twin/GET/?$rid=1", True),
        ("$iothub/methods/res/200/?$rid=1", True),
        ("devices/d1/messages/events", True),
        ("devices/d1/messages/events/a=b", True),
        ("devices/d1/messages/eventsX", False),
        ("devices/d1/messages/devicebound/x", False),
        ("devices/d2/messages/events/", False),
        ("elsewhere", False),
    ],
)
def test_forwards_publish(topic: str, forwarded: bool) -> None:
    assert scope.forwards_publish("d1", topic) is forwarded


@pytest.mark.parametrize("client_id", ["+", "#", "a+b", "dev#1"])
def test_wildcard_ids_keep_to_iothub_topics(client_id: str) -> None:
    # IoT Hub allows + and # in device ids; such a device uses $iothub/ but has no devices/ subtree,
    # since its own prefix would be a filter over other devices.
    assert scope.may_subscribe(client_id, "$iothub/methods/POST/#")
    assert scope.forwards_publish(client_id, "$iothub/twin/GET/?$rid=1")
    assert not scope.may_subscribe(client_id, f"devices/{client_id}/#")
    assert not scope.may_subscribe(client_id, "devices/+/messages/devicebound/#")
    assert not scope.forwards_publish(client_id, f"devices/{client_id}/messages/events")
    assert not scope.may_receive(client_id, "devices/d1/messages/devicebound/x")


@pytest.mark.parametrize("client_id", [None, "", "a/b"])
def test_unfit_client_ids_get_nothing(client_id: str | None) -> None:
    assert not scope.may_subscribe(client_id, "$iothub/methods/POST/#")
    assert not scope.forwards_publish(client_id, "$iothub/twin/GET/?$rid=1")
    assert not scope.may_receive(client_id, f"devices/{client_id}/x")


def test_receive_only_from_own_subtree() -> None:
    assert scope.may_receive("d1", "devices/d1/messages/devicebound/x")
    assert not scope.may_receive("d1", "$iothub/methods/POST/m/?$rid=1")
    assert not scope.may_receive("d1", "devices/d2/messages/devicebound/x")
