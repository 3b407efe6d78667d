"""Device identities: id rules, etags, keys, policies."""

from __future__ import annotations

import base64
import string
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.domain.devices import (
    ConnectionState,
    Device,
    DeviceStatus,
    SymmetricKeys,
    etag_matches,
    etag_of,
    generate_key,
    new_device,
    validate_device_id,
)
from hub.domain.policies import DEFAULT_POLICY_RIGHTS, AccessPolicy, Right
from hub.errors import BadRequestError, InvalidDeviceIdError

RELAXED = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
ALLOWED = string.ascii_letters + string.digits + "-.+%_#*?!(),:=@$'"

allowed_ids = st.text(alphabet=ALLOWED, min_size=1, max_size=128)


# -- device ids --------------------------------------------------------------------------


@pytest.mark.parametrize("char", list(ALLOWED))
def test_every_allowed_character_is_accepted(char: str) -> None:
    assert validate_device_id(char) == char
    assert validate_device_id(f"a{char}b") == f"a{char}b"


def test_all_allowed_characters_together() -> None:
    assert validate_device_id(ALLOWED) == ALLOWED


@pytest.mark.parametrize("length", [1, 2, 64, 127, 128])
def test_lengths_one_to_128_are_accepted(length: int) -> None:
    assert validate_device_id("d" * length) == "d" * length


@pytest.mark.parametrize(
    "device_id",
    [
        "",
        "d" * 129,
        "d" * 1000,
        "a/b",
        "/",
        "a b",
        " ",
        "a\tb",
        "a\nb",
        "trailing\n",
        "a\x00b",
        "ü",
        "d\u00e9v",
        "dev😀",
        "a;b",
        "a&b",
        "a\\b",
        'a"b',
        "a<b",
        "a>b",
        "a[b]",
        "a{b}",
        "a|b",
        "a^b",
        "a`b",
        "a~b",
        "\u0661",
        "\uff41",  # an Arabic-Indic digit and a fullwidth letter: not ASCII
    ],
)
def test_bad_device_ids_are_rejected(device_id: str) -> None:
    with pytest.raises(InvalidDeviceIdError) as info:
        validate_device_id(device_id)
    assert info.value.device_id == device_id
    assert "1-128" in info.value.message


@pytest.mark.parametrize("value", [None, 1, b"dev", ["dev"]])
def test_non_strings_are_rejected(value: object) -> None:
    with pytest.raises(InvalidDeviceIdError) as info:
        validate_device_id(value)  # type: ignore[arg-type]
    assert info.value.device_id is None


def test_invalid_id_is_a_bad_request() -> None:
    with pytest.raises(BadRequestError) as info:
        validate_device_id("a b")
    assert info.value.code == "ArgumentInvalid"


@RELAXED
@given(allowed_ids)
def test_generated_allowed_ids_pass(device_id: str) -> None:
    assert validate_device_id(device_id) == device_id


@RELAXED
@given(st.text(min_size=0, max_size=140))
def test_arbitrary_text_passes_exactly_when_it_follows_the_rule(text: str) -> None:
    expected = 1 <= len(text) <= 128 and all(ch in ALLOWED for ch in text)
    try:
        validate_device_id(text)
    except InvalidDeviceIdError:
        assert not expected
    else:
        assert expected


@RELAXED
@given(allowed_ids, st.characters().filter(lambda ch: ch not in ALLOWED), st.integers(min_value=0))
def test_one_foreign_character_anywhere_is_rejected(device_id: str, bad: str, position: int) -> None:
    position %= len(device_id) + 1
    candidate = device_id[:position] + bad + device_id[position:]
    with pytest.raises(InvalidDeviceIdError):
        validate_device_id(candidate)


# -- etags -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("revision", "etag"),
    [
        (0, "AAAAAAAAAAA="),
        (1, "AAAAAAAAAAE="),
        (7, "AAAAAAAAAAc="),
        (256, "AAAAAAAAAQA="),
        (2**64 - 1, "//////////8="),
    ],
)
def test_etag_of_is_base64_of_eight_big_endian_bytes(revision: int, etag: str) -> None:
    assert etag_of(revision) == etag


@RELAXED
@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_etag_round_trips_and_is_twelve_characters(revision: int) -> None:
    etag = etag_of(revision)
    assert len(etag) == 12
    raw = base64.b64decode(etag, validate=True)
    assert len(raw) == 8
    assert int.from_bytes(raw, "big") == revision


@RELAXED
@given(st.integers(min_value=0, max_value=2**63), st.integers(min_value=0, max_value=2**63))
def test_distinct_revisions_have_distinct_etags(a: int, b: int) -> None:
    assert (etag_of(a) == etag_of(b)) == (a == b)


def test_device_etag_follows_its_revision() -> None:
    device = new_device("dev-1", NOW)
    assert device.etag == etag_of(1)
    assert device.with_changes(etag_revision=7).etag == "AAAAAAAAAAc="


# -- keys --------------------------------------------------------------------------------


def test_generate_key_is_32_random_bytes_in_base64() -> None:
    keys = {generate_key() for _ in range(50)}
    assert len(keys) == 50
    for key in keys:
        assert len(key) == 44
        assert len(base64.b64decode(key, validate=True)) == 32


def test_symmetric_keys_generate_two_different_keys() -> None:
    keys = SymmetricKeys.generate()
    assert keys.primary != keys.secondary
    assert keys.all() == (keys.primary, keys.secondary)


def test_keys_never_show_in_reprs() -> None:
    keys = SymmetricKeys.generate()
    device = new_device("dev-1", NOW, keys=keys)
    policy = AccessPolicy("service", keys.primary, keys.secondary, DEFAULT_POLICY_RIGHTS["service"])
    for text in (repr(keys), repr(device), str(device), repr(policy)):
        assert keys.primary not in text
        assert keys.secondary not in text
    assert "dev-1" in repr(device)
    assert "service" in repr(policy)


# -- devices -----------------------------------------------------------------------------


def test_new_device_defaults() -> None:
    device = new_device("dev-1", NOW)
    assert isinstance(device, Device)
    assert device.status is DeviceStatus.ENABLED
    assert device.connection_state is ConnectionState.DISCONNECTED
    assert device.created_time == NOW
    assert device.status_updated_time == NOW
    assert device.etag_revision == 1
    assert device.generation_id.isdigit()
    assert len(device.generation_id) == 18
    assert len(base64.b64decode(device.keys.primary)) == 32


def test_new_device_keeps_given_keys_and_status() -> None:
    keys = SymmetricKeys(generate_key(), generate_key())
    device = new_device("dev-2", NOW, keys=keys, status=DeviceStatus.DISABLED, status_reason="stolen")
    assert device.keys == keys
    assert device.status is DeviceStatus.DISABLED
    assert device.status_reason == "stolen"


def test_new_device_validates_its_id() -> None:
    with pytest.raises(InvalidDeviceIdError):
        new_device("bad id", NOW)


def test_with_changes_returns_a_new_device() -> None:
    device = new_device("dev-1", NOW)
    changed = device.with_changes(status=DeviceStatus.DISABLED)
    assert changed.status is DeviceStatus.DISABLED
    assert device.status is DeviceStatus.ENABLED


def test_status_values_are_iot_hubs() -> None:
    assert [s.value for s in DeviceStatus] == ["enabled", "disabled"]
    assert [s.value for s in ConnectionState] == ["Connected", "Disconnected"]


# -- policies ----------------------------------------------------------------------------


def test_default_policies_grant_iot_hubs_rights() -> None:
    assert DEFAULT_POLICY_RIGHTS["iothubowner"] == frozenset(Right)
    assert DEFAULT_POLICY_RIGHTS["service"] == {Right.SERVICE_CONNECT}
    assert DEFAULT_POLICY_RIGHTS["registryRead"] == {Right.REGISTRY_READ}
    assert DEFAULT_POLICY_RIGHTS["registryReadWrite"] == {Right.REGISTRY_READ, Right.REGISTRY_WRITE}
    policy = AccessPolicy("p", "k1", "k2", frozenset())
    assert policy.keys() == ("k1", "k2")


@pytest.mark.parametrize(
    ("if_match", "matches"),
    [
        (None, True),
        ("*", True),
        ('"*"', True),  # azure-iothub (Node) Registry.update sends the wildcard quoted
        ("", True),
        ("AAAAAAAAAAI=", True),
        ('"AAAAAAAAAAI="', True),
        (' "AAAAAAAAAAE=", "AAAAAAAAAAI=" ', True),
        ("AAAAAAAAAAE=", False),
        ('"AAAAAAAAAAE="', False),
        ("AAAAAAAAAAI", False),
    ],
)
def test_if_match_admits_bare_quoted_and_wildcard_etags(if_match: str | None, matches: bool) -> None:
    assert etag_matches(if_match, etag_of(2)) is matches
