"""The IoT Hub device MQTT dialect: parse what devices publish, build what the hub sends."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote

__all__ = [
    "METHODS_SUBSCRIBE",
    "TWIN_DESIRED_SUBSCRIBE",
    "TWIN_RESPONSE_SUBSCRIBE",
    "DeviceTopic",
    "HubDesiredPatch",
    "HubMethodRequest",
    "HubTopic",
    "HubTwinResponse",
    "MethodResponse",
    "ReportedPatch",
    "Telemetry",
    "TopicError",
    "TwinGet",
    "desired_patch_topic",
    "method_request_topic",
    "method_response_topic",
    "parse_device_topic",
    "parse_hub_topic",
    "reported_patch_topic",
    "twin_get_topic",
    "twin_response_topic",
]

METHODS_SUBSCRIBE = "$iothub/methods/POST/#"
TWIN_RESPONSE_SUBSCRIBE = "$iothub/twin/res/#"
TWIN_DESIRED_SUBSCRIBE = "$iothub/twin/PATCH/properties/desired/#"

_METHOD_RES = "$iothub/methods/res/"
_METHOD_POST = "$iothub/methods/POST/"
_TWIN_GET = "$iothub/twin/GET/"
_TWIN_REPORTED = "$iothub/twin/PATCH/properties/reported/"
_TWIN_RES = "$iothub/twin/res/"
_TWIN_DESIRED = "$iothub/twin/PATCH/properties/desired/"


# Status codes and versions are plain ASCII decimals; int() alone would also take " 200",
# "2_00", "+200" and non-ASCII digits such as "٢٠٠".
_INTEGER = re.compile(r"-?[0-9]{1,18}")


class TopicError(ValueError):
    """A topic that is not part of the dialect (or malformed)."""


def _integer(text: str, what: str) -> int:
    if not _INTEGER.fullmatch(text):
        raise TopicError(f"{what} {text!r} is not an integer")
    return int(text)


@dataclass(frozen=True, slots=True)
class TwinGet:
    rid: str


@dataclass(frozen=True, slots=True)
class ReportedPatch:
    rid: str


@dataclass(frozen=True, slots=True)
class MethodResponse:
    rid: str
    status: int


@dataclass(frozen=True, slots=True)
class Telemetry:
    device_id: str
    properties: dict[str, str]


DeviceTopic = TwinGet | ReportedPatch | MethodResponse | Telemetry


@dataclass(frozen=True, slots=True)
class HubMethodRequest:
    method_name: str
    rid: str


@dataclass(frozen=True, slots=True)
class HubTwinResponse:
    status: int
    rid: str
    version: int | None


@dataclass(frozen=True, slots=True)
class HubDesiredPatch:
    version: int | None


HubTopic = HubMethodRequest | HubTwinResponse | HubDesiredPatch


def _query(rest: str) -> dict[str, str]:
    """Parse the ``?$rid=..&$version=..`` tail of a topic (``rest`` starts after the prefix)."""
    _, sep, query = rest.partition("?")
    if not sep:
        return {}
    # Strict: a lenient decode would turn "%ff" into U+FFFD and answer a request id the
    # device never sent; a repeated name would leave it to chance which value counts.
    try:
        pairs = parse_qsl(query, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise TopicError(f"query {query!r} is not percent-encoded UTF-8") from None
    params = dict(pairs)
    if len(params) != len(pairs):
        raise TopicError(f"query {query!r} gives a parameter more than once")
    return params


def _rid(rest: str) -> str:
    rid = _query(rest).get("$rid")
    if not rid:
        raise TopicError("missing $rid")
    return rid


def parse_device_topic(topic: str) -> DeviceTopic:
    """Classify a topic a device published to; raise TopicError for anything else."""
    if topic.startswith(_TWIN_GET):
        return TwinGet(_rid(topic[len(_TWIN_GET) :]))
    if topic.startswith(_TWIN_REPORTED):
        return ReportedPatch(_rid(topic[len(_TWIN_REPORTED) :]))
    if topic.startswith(_METHOD_RES):
        rest = topic[len(_METHOD_RES) :]
        status_text, _, tail = rest.partition("/")
        status = _integer(status_text, "method response status")
        return MethodResponse(_rid(tail), status)
    if topic.startswith("devices/"):
        parts = topic.split("/", 4)
        if len(parts) >= 4 and parts[1] and parts[2] == "messages" and parts[3] == "events":
            props = parts[4] if len(parts) == 5 else ""
            return Telemetry(parts[1], dict(parse_qsl(props, keep_blank_values=True)))
    raise TopicError(f"topic {topic!r} is not part of the IoT Hub device dialect")


def parse_hub_topic(topic: str) -> HubTopic:
    """Classify a topic the hub sent to a device (the device side of the dialect)."""
    if topic.startswith(_METHOD_POST):
        rest = topic[len(_METHOD_POST) :]
        name, _, tail = rest.partition("/")
        if not name:
            raise TopicError("method request topic has no method name")
        return HubMethodRequest(name, _rid(tail))
    if topic.startswith(_TWIN_RES):
        rest = topic[len(_TWIN_RES) :]
        status_text, _, tail = rest.partition("/")
        status = _integer(status_text, "twin response status")
        version = _query(tail).get("$version")
        return HubTwinResponse(status, _rid(tail), _integer(version, "$version") if version else None)
    if topic.startswith(_TWIN_DESIRED):
        version = _query(topic[len(_TWIN_DESIRED) :]).get("$version")
        return HubDesiredPatch(_integer(version, "$version") if version else None)
    raise TopicError(f"topic {topic!r} is not sent by the hub")


def method_request_topic(method_name: str, rid: str) -> str:
    return f"{_METHOD_POST}{method_name}/?$rid={quote(rid, safe='')}"


def method_response_topic(status: int, rid: str) -> str:
    return f"{_METHOD_RES}{status}/?$rid={quote(rid, safe='')}"


def twin_get_topic(rid: str) -> str:
    return f"{_TWIN_GET}?$rid={quote(rid, safe='')}"


def reported_patch_topic(rid: str) -> str:
    return f"{_TWIN_REPORTED}?$rid={quote(rid, safe='')}"


def twin_response_topic(status: int, rid: str, version: int | None = None) -> str:
    topic = f"{_TWIN_RES}{status}/?$rid={quote(rid, safe='')}"
    if version is not None:
        topic += f"&$version={version}"
    return topic


def desired_patch_topic(version: int) -> str:
    return f"{_TWIN_DESIRED}?$version={version}"
