"""Which topics a device may use: ``$iothub/...`` (scoped to its connection) and its own
``devices/{id}/...`` subtree, nothing else."""

from __future__ import annotations

from typing import TypeGuard

__all__ = ["forwards_publish", "is_valid_device_id", "may_receive", "may_subscribe"]

_IOTHUB = "$iothub/"
# What the hub sends on $iothub/ (method requests, twin replies, desired patches): the SDKs
# subscribe to exactly these subtrees, and a filter over more of $iothub/ is refused.
_IOTHUB_SUBSCRIPTIONS = ("$iothub/methods/POST/", "$iothub/twin/res/", "$iothub/twin/PATCH/properties/desired/")
_WILDCARDS = frozenset("+#")


def is_valid_device_id(client_id: str | None) -> TypeGuard[str]:
    """A client id that can be a device: non-empty, no topic level separator. IoT Hub allows
    ``#`` and ``+`` in device ids, so those may log in (see ``_has_subtree``)."""
    return bool(client_id) and "/" not in (client_id or "")


def _has_subtree(client_id: str) -> bool:
    """Whether ``devices/{id}/...`` is a topic the device can use: an id with an MQTT wildcard
    would turn its own prefix into a filter over other devices, so such devices keep to
    ``$iothub/...`` (methods and twins, which carry no device id)."""
    return _WILDCARDS.isdisjoint(client_id)


def _own_prefix(client_id: str) -> str:
    return f"devices/{client_id}/"


def may_subscribe(client_id: str | None, topic_filter: str) -> bool:
    """SUBSCRIBE: within one of the hub's ``$iothub/...`` subtrees or ``devices/{own id}/...``;
    ``#``, ``+/...``, ``$iothub/#`` and other devices' subtrees are refused."""
    if not is_valid_device_id(client_id):
        return False
    if topic_filter.startswith(_IOTHUB):
        return topic_filter.startswith(_IOTHUB_SUBSCRIPTIONS)
    return _has_subtree(client_id) and topic_filter.startswith(_own_prefix(client_id))


def may_receive(client_id: str | None, topic: str) -> bool:
    """RECEIVE (amqtt's per-subscriber check on a broadcast): only the device's own subtree.
    The gateway never broadcasts device data, so this is a second line of defence."""
    if not is_valid_device_id(client_id) or not _has_subtree(client_id):
        return False
    return topic.startswith(_own_prefix(client_id))


def forwards_publish(client_id: str | None, topic: str) -> bool:
    """PUBLISH that goes to the hub: ``$iothub/...`` or the device's own telemetry topic
    ``devices/{own id}/messages/events[/{props}]``; anything else is dropped."""
    if topic.startswith(_IOTHUB):
        return is_valid_device_id(client_id)
    if not is_valid_device_id(client_id) or not _has_subtree(client_id):
        return False
    events = f"devices/{client_id}/messages/events"
    return topic == events or topic.startswith(events + "/")
