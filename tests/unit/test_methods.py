"""Direct method requests: name, timeout and payload rules."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.domain.json import JsonValue
from hub.domain.methods import (
    MAX_PAYLOAD_BYTES,
    MethodRequest,
    MethodResult,
    encode_payload,
    payload_size,
    validate_method_name,
)
from hub.errors import BadRequestError, PayloadTooLargeError

RELAXED = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
NAME_CHARS = "!#%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SEPARATORS = '$()<>@,;:\\"/[]?={} \t'


# -- names -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["lockDoor", "reboot", "a", "m" * 128, NAME_CHARS[:128], "fw.update-2_x"])
def test_good_method_names(name: str) -> None:
    assert validate_method_name(name) == name
    assert MethodRequest.create(name).method_name == name


@pytest.mark.parametrize("char", list(NAME_CHARS))
def test_every_allowed_name_character(char: str) -> None:
    assert validate_method_name(f"x{char}") == f"x{char}"


@pytest.mark.parametrize("char", [*SEPARATORS, "\x00", "\x7f", "é", "😀", "\n"])
def test_separators_controls_and_non_ascii_are_rejected(char: str) -> None:
    with pytest.raises(BadRequestError, match="methodName"):
        validate_method_name(f"lock{char}door")


@pytest.mark.parametrize("name", ["", "m" * 129, None, 1, ["lockDoor"], b"lockDoor"])
def test_empty_long_and_non_string_names_are_rejected(name: object) -> None:
    with pytest.raises(BadRequestError, match="methodName"):
        MethodRequest.create(name)


@RELAXED
@given(st.text(max_size=130))
def test_names_pass_exactly_when_they_follow_the_rule(name: str) -> None:
    expected = 1 <= len(name) <= 128 and all(ch in NAME_CHARS for ch in name)
    try:
        validate_method_name(name)
    except BadRequestError:
        assert not expected
    else:
        assert expected


# -- timeouts ----------------------------------------------------------------------------


def test_defaults() -> None:
    request = MethodRequest.create("m")
    assert (request.payload, request.response_timeout, request.connect_timeout) == (None, 30, 0)
    request = MethodRequest.create("m", None, None, None)  # JSON nulls mean "use the default"
    assert (request.response_timeout, request.connect_timeout) == (30, 0)


@pytest.mark.parametrize("timeout", [5, 6, 30, 299, 300])
def test_response_timeout_in_range(timeout: int) -> None:
    assert MethodRequest.create("m", response_timeout=timeout).response_timeout == timeout


@pytest.mark.parametrize("timeout", [4, 0, -1, 301, 3600, True, False, 30.0, "30", [30]])
def test_response_timeout_out_of_range_or_wrong_type(timeout: object) -> None:
    with pytest.raises(BadRequestError, match="responseTimeoutInSeconds"):
        MethodRequest.create("m", response_timeout=timeout)


@pytest.mark.parametrize("timeout", [0, 1, 150, 300])
def test_connect_timeout_in_range(timeout: int) -> None:
    assert MethodRequest.create("m", connect_timeout=timeout).connect_timeout == timeout


@pytest.mark.parametrize("timeout", [-1, 301, True, False, 1.0, "0", {}])
def test_connect_timeout_out_of_range_or_wrong_type(timeout: object) -> None:
    with pytest.raises(BadRequestError, match="connectTimeoutInSeconds"):
        MethodRequest.create("m", connect_timeout=timeout)


@RELAXED
@given(st.integers(min_value=-(10**6), max_value=10**6), st.integers(min_value=-(10**6), max_value=10**6))
def test_timeouts_pass_exactly_in_their_ranges(response: int, connect: int) -> None:
    ok = 5 <= response <= 300 and 0 <= connect <= 300
    try:
        request = MethodRequest.create("m", response_timeout=response, connect_timeout=connect)
    except BadRequestError:
        assert not ok
    else:
        assert ok
        assert (request.response_timeout, request.connect_timeout) == (response, connect)


# -- payloads ----------------------------------------------------------------------------


def test_payload_at_the_limit_is_accepted_and_one_byte_more_is_not() -> None:
    at_limit = "x" * (MAX_PAYLOAD_BYTES - 2)  # plus two quotes
    assert payload_size(at_limit) == MAX_PAYLOAD_BYTES == 128 * 1024
    assert MethodRequest.create("m", at_limit).payload == at_limit
    with pytest.raises(PayloadTooLargeError, match=f"{MAX_PAYLOAD_BYTES + 1} bytes"):
        MethodRequest.create("m", at_limit + "x")


def test_payload_size_counts_utf8_bytes_of_compact_json() -> None:
    assert payload_size({"a": [1, 2]}) == len('{"a":[1,2]}')
    assert payload_size("é") == 4
    assert payload_size(None) == 4
    # Multi-byte text: two bytes per "é", so one character more crosses the limit.
    half = "é" * ((MAX_PAYLOAD_BYTES - 2) // 2)
    assert payload_size(half) == MAX_PAYLOAD_BYTES
    MethodRequest.create("m", half)
    with pytest.raises(PayloadTooLargeError):
        MethodRequest.create("m", half + "é")


def test_payload_too_large_is_a_bad_request() -> None:
    with pytest.raises(BadRequestError) as info:
        MethodRequest.create("m", {"blob": "x" * MAX_PAYLOAD_BYTES})
    assert isinstance(info.value, PayloadTooLargeError)
    assert info.value.code == "ArgumentInvalid"


@pytest.mark.parametrize("payload", [None, 0, -1.5, True, "", "text", [], {}, {"a": {"b": [1, None, "é"]}}])
def test_any_json_payload_is_carried(payload: JsonValue) -> None:
    request = MethodRequest.create("m", payload)
    assert request.payload == payload
    assert json.loads(encode_payload(payload)) == payload


@pytest.mark.parametrize("payload", [float("nan"), float("inf"), {"x": [float("-inf")]}])
def test_non_finite_numbers_are_not_json(payload: JsonValue) -> None:
    with pytest.raises(BadRequestError, match="not JSON"):
        MethodRequest.create("m", payload)


@pytest.mark.parametrize("payload", [{1, 2}, b"bytes", object()])
def test_non_json_python_values_are_bad_requests(payload: object) -> None:
    with pytest.raises(BadRequestError, match="not JSON"):
        MethodRequest.create("m", payload)  # type: ignore[arg-type]


def test_encode_payload_is_compact_utf8() -> None:
    assert encode_payload({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'.encode()
    assert encode_payload(None) == b"null"


def test_request_and_result_are_plain_values() -> None:
    request = MethodRequest.create("lockDoor", {"force": True}, 60, 10)
    assert request == MethodRequest("lockDoor", {"force": True}, 60, 10)
    result = MethodResult(200, {"ok": True})
    assert (result.status, result.payload) == (200, {"ok": True})
    assert MethodResult(500, None).payload is None
