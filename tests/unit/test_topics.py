"""The IoT Hub MQTT topic dialect: every row of DESIGN.md's topic table, both directions."""

from __future__ import annotations

import contextlib
import uuid
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.wire.topics import (
    METHODS_SUBSCRIBE,
    TWIN_DESIRED_SUBSCRIBE,
    TWIN_RESPONSE_SUBSCRIBE,
    HubDesiredPatch,
    HubMethodRequest,
    HubTwinResponse,
    MethodResponse,
    ReportedPatch,
    Telemetry,
    TopicError,
    TwinGet,
    desired_patch_topic,
    method_request_topic,
    method_response_topic,
    parse_device_topic,
    parse_hub_topic,
    reported_patch_topic,
    twin_get_topic,
    twin_response_topic,
)

RELAXED = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
rids = st.text(min_size=1, max_size=40)
statuses = st.integers(min_value=-(2**31), max_value=2**31 - 1)
versions = st.integers(min_value=0, max_value=2**53)
method_names = st.text(
    alphabet="!#%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", min_size=1, max_size=128
)
ODD_RIDS = [
    "1",
    "42",
    str(uuid.uuid4()),
    "a b",
    "a+b",
    "a&b",
    "a=b",
    "a/b",
    "a?b",
    "a#b",
    "%",
    "%25",
    "$rid=x",
    "é",
    "😀",
    "&$version=9",
    "\x00",
    "  ",
    "a;b",
    "+",
]


def test_subscription_filters() -> None:
    assert METHODS_SUBSCRIBE == "$iothub/methods/POST/#"
    assert TWIN_RESPONSE_SUBSCRIBE == "$iothub/twin/res/#"
    assert TWIN_DESIRED_SUBSCRIBE == "$iothub/twin/PATCH/properties/desired/#"


# -- hub -> device, method request -------------------------------------------------------


def test_method_request_topic_exact() -> None:
    assert method_request_topic("lockDoor", "7") == "$iothub/methods/POST/lockDoor/?$rid=7"
    assert parse_hub_topic("$iothub/methods/POST/lockDoor/?$rid=7") == HubMethodRequest("lockDoor", "7")


@pytest.mark.parametrize("rid", ODD_RIDS)
def test_method_request_round_trip_with_odd_rids(rid: str) -> None:
    assert parse_hub_topic(method_request_topic("lockDoor", rid)) == HubMethodRequest("lockDoor", rid)


@RELAXED
@given(method_names, rids)
def test_method_request_round_trip(name: str, rid: str) -> None:
    topic = method_request_topic(name, rid)
    assert topic.startswith(f"$iothub/methods/POST/{name}/?$rid=")
    assert parse_hub_topic(topic) == HubMethodRequest(name, rid)


# -- device -> hub, method reply ---------------------------------------------------------


def test_method_response_topic_exact() -> None:
    assert method_response_topic(200, "7") == "$iothub/methods/res/200/?$rid=7"
    assert parse_device_topic("$iothub/methods/res/200/?$rid=7") == MethodResponse("7", 200)
    assert parse_device_topic("$iothub/methods/res/-1/?$rid=x") == MethodResponse("x", -1)


@pytest.mark.parametrize("rid", ODD_RIDS)
def test_method_response_round_trip_with_odd_rids(rid: str) -> None:
    assert parse_device_topic(method_response_topic(404, rid)) == MethodResponse(rid, 404)


@RELAXED
@given(statuses, rids)
def test_method_response_round_trip(status: int, rid: str) -> None:
    assert parse_device_topic(method_response_topic(status, rid)) == MethodResponse(rid, status)


# -- device -> hub, twin GET -------------------------------------------------------------


def test_twin_get_topic_exact() -> None:
    assert twin_get_topic("1") == "$iothub/twin/GET/?$rid=1"
    assert parse_device_topic("$iothub/twin/GET/?$rid=1") == TwinGet("1")


@RELAXED
@given(rids)
def test_twin_get_round_trip(rid: str) -> None:
    assert parse_device_topic(twin_get_topic(rid)) == TwinGet(rid)


# -- hub -> device, twin reply -----------------------------------------------------------


def test_twin_response_topic_exact() -> None:
    assert twin_response_topic(200, "1") == "$iothub/twin/res/200/?$rid=1"
    assert twin_response_topic(204, "5", 3) == "$iothub/twin/res/204/?$rid=5&$version=3"
    assert parse_hub_topic("$iothub/twin/res/204/?$rid=5&$version=3") == HubTwinResponse(204, "5", 3)
    assert parse_hub_topic("$iothub/twin/res/200/?$rid=1") == HubTwinResponse(200, "1", None)
    # Parameter order is not fixed.
    assert parse_hub_topic("$iothub/twin/res/204/?$version=3&$rid=5") == HubTwinResponse(204, "5", 3)


@pytest.mark.parametrize("rid", ODD_RIDS)
def test_twin_response_round_trip_with_odd_rids(rid: str) -> None:
    assert parse_hub_topic(twin_response_topic(204, rid, 9)) == HubTwinResponse(204, rid, 9)


@RELAXED
@given(st.sampled_from([200, 204, 400, 429, 500]), rids, st.none() | versions)
def test_twin_response_round_trip(status: int, rid: str, version: int | None) -> None:
    assert parse_hub_topic(twin_response_topic(status, rid, version)) == HubTwinResponse(status, rid, version)


# -- device -> hub, reported patch -------------------------------------------------------


def test_reported_patch_topic_exact() -> None:
    assert reported_patch_topic("3") == "$iothub/twin/PATCH/properties/reported/?$rid=3"
    assert parse_device_topic("$iothub/twin/PATCH/properties/reported/?$rid=3") == ReportedPatch("3")
    # The base-version parameter some SDK comments mention is tolerated and ignored.
    assert parse_device_topic("$iothub/twin/PATCH/properties/reported/?$rid=3&$version=2") == ReportedPatch("3")


@RELAXED
@given(rids)
def test_reported_patch_round_trip(rid: str) -> None:
    assert parse_device_topic(reported_patch_topic(rid)) == ReportedPatch(rid)


# -- hub -> device, desired change -------------------------------------------------------


def test_desired_patch_topic_exact() -> None:
    assert desired_patch_topic(4) == "$iothub/twin/PATCH/properties/desired/?$version=4"
    assert parse_hub_topic("$iothub/twin/PATCH/properties/desired/?$version=4") == HubDesiredPatch(4)
    assert parse_hub_topic("$iothub/twin/PATCH/properties/desired/") == HubDesiredPatch(None)


@RELAXED
@given(versions)
def test_desired_patch_round_trip(version: int) -> None:
    assert parse_hub_topic(desired_patch_topic(version)) == HubDesiredPatch(version)


# -- device -> hub, telemetry ------------------------------------------------------------


def telemetry_topic(device_id: str, properties: dict[str, str]) -> str:
    """Built as azure-iot-device builds it: url-encoded ``key=value`` pairs after the slash."""
    return f"devices/{device_id}/messages/events/" + urlencode(properties, quote_via=quote)


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("devices/dev-1/messages/events/", Telemetry("dev-1", {})),
        ("devices/dev-1/messages/events", Telemetry("dev-1", {})),
        (
            "devices/dev-1/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8&temp=hot",
            Telemetry("dev-1", {"$.ct": "application/json", "$.ce": "utf-8", "temp": "hot"}),
        ),
        ("devices/dev-1/messages/events/a=&b=1", Telemetry("dev-1", {"a": "", "b": "1"})),
        ("devices/a(b)$c/messages/events/x=1", Telemetry("a(b)$c", {"x": "1"})),
    ],
)
def test_telemetry_topics(topic: str, expected: Telemetry) -> None:
    assert parse_device_topic(topic) == expected


@RELAXED
@given(
    st.text(alphabet="abcXYZ019-.+%_#*?!(),:=@$'", min_size=1, max_size=20),
    st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=10), max_size=4),
)
def test_telemetry_round_trip(device_id: str, properties: dict[str, str]) -> None:
    parsed = parse_device_topic(telemetry_topic(device_id, properties))
    assert parsed == Telemetry(device_id, properties)


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "x",
        "$iothub",
        "$iothub/",
        "$iothub/unknown/?$rid=1",
        "devices",
        "devices/",
        "devices//messages/events/",
        "devices/d/messages/devicebound/",
        "devices/d/messages",
        "devices/d/events/messages/",
        "$iothub/twin/GET",
        "$iothub/twin/GET/",
        "$iothub/twin/GET/?rid=1",
        "$iothub/twin/GET/?$rid=",
        "$iothub/twin/GET/?$RID=1",
        "$iothub/twin/PATCH/properties/reported/",
        "$iothub/twin/PATCH/properties/reported/?$version=1",
        "$iothub/twin/PATCH/properties/desired/?$version=1",  # hub -> device only
        "$iothub/twin/res/200/?$rid=1",  # hub -> device only
        "$iothub/methods/POST/m/?$rid=1",  # hub -> device only
        "$iothub/methods/res/200/",
        "$iothub/methods/res/200",
        "$iothub/methods/res/abc/?$rid=1",
        "$iothub/methods/res//?$rid=1",
        "$iothub/methods/res/ 200/?$rid=1",
        "$iothub/methods/res/2_00/?$rid=1",
        "$iothub/methods/res/+200/?$rid=1",
        "$iothub/methods/res/\u0662\u0660\u0660/?$rid=1",
        "$iothub/methods/res/1e3/?$rid=1",
        "$iothub/methods/res/200.0/?$rid=1",
        "$iothub/methods/res/" + "9" * 5000 + "/?$rid=1",
        "$IOTHUB/twin/GET/?$rid=1",
        "$iothub/twin/GET/?$rid=%ff",  # not UTF-8 once decoded
        "$iothub/twin/GET/?$rid=%C3",
        "$iothub/twin/GET/?$rid=1&$rid=2",  # which one?
        "$iothub/twin/PATCH/properties/reported/?$rid=%80",
        "$iothub/twin/PATCH/properties/reported/?$rid=1&x=%FF",
        "$iothub/methods/res/200/?$rid=1&$rid=1",
        "$iothub/methods/res/200/?$rid=%ED%A0%80",  # UTF-8 of a lone surrogate
    ],
)
def test_malformed_device_topics_raise_topic_error(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_device_topic(topic)


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "$iothub/methods/POST/",
        "$iothub/methods/POST//?$rid=1",
        "$iothub/methods/POST/m/",
        "$iothub/methods/POST/m/?$rid=",
        "$iothub/twin/res/abc/?$rid=1",
        "$iothub/twin/res//?$rid=1",
        "$iothub/twin/res/200/",
        "$iothub/twin/res/200/?$version=3",
        "$iothub/twin/res/200/?$rid=1&$version=x",
        "$iothub/twin/res/200/?$rid=1&$version=1.5",
        "$iothub/twin/PATCH/properties/desired/?$version=abc",
        "$iothub/twin/PATCH/properties/desired/?$version=%C2%B2",
        "$iothub/twin/res/200/?$rid=%ff",
        "$iothub/twin/res/200/?$rid=1&$version=2&$version=3",
        "$iothub/twin/GET/?$rid=1",  # device -> hub only
        "devices/d/messages/events/",
    ],
)
def test_malformed_hub_topics_raise_topic_error(topic: str) -> None:
    with pytest.raises(TopicError):
        parse_hub_topic(topic)


def test_bad_request_ids_are_named_in_the_error() -> None:
    with pytest.raises(TopicError, match="not percent-encoded UTF-8"):
        parse_device_topic("$iothub/twin/GET/?$rid=%ff")
    with pytest.raises(TopicError, match="more than once"):
        parse_device_topic("$iothub/twin/GET/?$rid=a&$rid=b")


def test_percent_encoded_utf8_request_ids_are_decoded() -> None:
    assert parse_device_topic("$iothub/twin/GET/?$rid=%C3%A9%20x") == TwinGet("é x")
    assert parse_device_topic("$iothub/twin/GET/?$rid=%zz") == TwinGet("%zz")  # not an escape: kept as sent


def test_topic_error_is_a_value_error() -> None:
    assert issubclass(TopicError, ValueError)


_PREFIXES = st.sampled_from(
    [
        "",
        "$iothub/",
        "$iothub/twin/GET/",
        "$iothub/twin/PATCH/properties/reported/",
        "$iothub/methods/res/",
        "$iothub/methods/POST/",
        "$iothub/twin/res/",
        "$iothub/twin/PATCH/properties/desired/",
        "devices/",
        "devices/d/messages/events/",
    ]
)
_TAILS = st.text(max_size=40) | st.text(alphabet="0123456789/?&=$ridversion%+-_ ", max_size=30)


@RELAXED
@given(_PREFIXES, _TAILS)
def test_random_topics_raise_only_topic_error(prefix: str, tail: str) -> None:
    topic = prefix + tail
    for parse in (parse_device_topic, parse_hub_topic):
        with contextlib.suppress(TopicError):
            parse(topic)
