"""Which topics a device may use: ``$iothub/...`` (scoped to its connection) and its own
``devices/{id}/...`` subtree, nothing else."""

from __future__ import annotations

from typing import TypeGuard

__all__ = ["forwards_publish", "is_valid_device_id", "may_receive", "may_subscribe"]

_IOTHUB = "$iothub/"
_WILDCARDS_OR_SEPARATOR = frozenset("+#/")


def is_valid_device_id(client_id: str | None) -> TypeGuard[str]:
    """A client id that is safe to put into a topic prefix (no wildcard, no level separator)."""
    return bool(client_id) and _WILDCARDS_OR_SEPARATOR.isdisjoint(client_id or "")


def _own_prefix(client_id: str) -> str:
    return f"devices/{client_id}/"


def may_subscribe(client_id: str | None, topic_filter: str) -> bool:
    """SUBSCRIBE: ``$iothub/...`` or ``devices/{own id}/...``; ``#``, ``+/...`` and other
    devices' subtrees are refused."""
    if not is_valid_device_id(client_id):
        return False
    return topic_filter.startswith(_IOTHUB) or topic_filter.startswith(_own_prefix(client_id))


def may_receive(client_id: str | None, topic: str) -> bool:
    """RECEIVE (amqtt's per-subscriber check on a broadcast): only the device's own subtree.
    The gateway never broadcasts device data, so this is a second line of defence."""
    if not is_valid_device_id(client_id):
        return False
    return topic.startswith(_own_prefix(client_id))


def forwards_publish(client_id: str | None, topic: str) -> bool:
    """PUBLISH that goes to the hub: ``$iothub/...`` or the device's own telemetry topic
    ``devices/{own id}/messages/events[/{props}]``; anything else is dropped."""
    if topic.startswith(_IOTHUB):
        return is_valid_device_id(client_id)
    if not is_valid_device_id(client_id):
        return False
    events = f"devices/{client_id}/messages/events"
    return topic == events or topic.startswith(events + "/")
