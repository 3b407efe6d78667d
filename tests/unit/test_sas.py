"""SAS tokens and connection strings, including tokens formed the way real SDKs form them."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import re
import time
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.domain.devices import generate_key
from hub.wire.sas import (
    ConnectionString,
    SasToken,
    SasTokenError,
    device_resource_uri,
    generate_sas_token,
    parse_connection_string,
    parse_sas_token,
    sign,
    signature_matches,
)

RELAXED = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
HOST = "myhub.azure-devices.net"
PRIMARY = base64.b64encode(b"p" * 32).decode()
SECONDARY = base64.b64encode(b"s" * 32).decode()
NOW = 1_700_000_000

device_ids = st.text(alphabet="abcXYZ019-.+%_#*?!(),:=@$'", min_size=1, max_size=30)
keys = st.binary(min_size=1, max_size=64).map(lambda raw: base64.b64encode(raw).decode())


def hand_made_token(sr: str, signed_over: str, key: str, expiry: int, skn: str | None = None) -> str:
    """A token formed outside fleethub: ``sr`` as sent, signature over ``signed_over``."""
    digest = hmac.new(base64.b64decode(key), f"{signed_over}\n{expiry}".encode(), hashlib.sha256).digest()
    token = f"SharedAccessSignature sr={sr}&sig={quote(base64.b64encode(digest).decode(), safe='')}&se={expiry}"
    return token + (f"&skn={skn}" if skn else "")


def lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), text)


# -- generate, parse, verify -------------------------------------------------------------


def test_device_resource_uri() -> None:
    assert device_resource_uri(HOST, "dev-1") == f"{HOST}/devices/dev-1"


def test_generated_device_token_shape() -> None:
    text = generate_sas_token(device_resource_uri(HOST, "dev-1"), PRIMARY, ttl=3600, now=NOW)
    assert text.startswith(f"SharedAccessSignature sr={HOST}%2Fdevices%2Fdev-1&sig=")
    assert text.endswith(f"&se={NOW + 3600}")
    assert "skn=" not in text
    token = parse_sas_token(text)
    assert token.resource == f"{HOST}/devices/dev-1"
    assert token.raw_resource == f"{HOST}%2Fdevices%2Fdev-1"
    assert token.expiry == NOW + 3600
    assert token.key_name is None


def test_generated_service_token_carries_the_policy_name() -> None:
    text = generate_sas_token(HOST, PRIMARY, key_name="iothubowner", now=NOW)
    assert text.endswith("&skn=iothubowner")
    token = parse_sas_token(text)
    assert (token.resource, token.key_name) == (HOST, "iothubowner")
    assert signature_matches(token, PRIMARY)


def test_primary_and_secondary_keys_each_verify_their_own_tokens() -> None:
    uri = device_resource_uri(HOST, "dev-1")
    by_primary = parse_sas_token(generate_sas_token(uri, PRIMARY, now=NOW))
    by_secondary = parse_sas_token(generate_sas_token(uri, SECONDARY, now=NOW))
    assert signature_matches(by_primary, PRIMARY)
    assert not signature_matches(by_primary, SECONDARY)
    assert signature_matches(by_secondary, SECONDARY)
    assert not signature_matches(by_secondary, PRIMARY)


def test_wrong_key_fails() -> None:
    token = parse_sas_token(generate_sas_token(device_resource_uri(HOST, "d"), PRIMARY, now=NOW))
    assert not signature_matches(token, generate_key())


def test_tampering_with_any_field_fails() -> None:
    text = generate_sas_token(device_resource_uri(HOST, "dev-1"), PRIMARY, now=NOW)
    assert signature_matches(parse_sas_token(text), PRIMARY)
    for tampered in (
        text.replace("dev-1", "dev-2"),
        text.replace(f"se={NOW + 3600}", f"se={NOW + 7200}"),
        text.replace("sig=", "sig=A"),
    ):
        assert not signature_matches(parse_sas_token(tampered), PRIMARY)


def test_expiry() -> None:
    token = parse_sas_token(generate_sas_token(HOST, PRIMARY, ttl=60, now=NOW))
    assert token.expiry == NOW + 60
    assert not token.is_expired(NOW)
    assert not token.is_expired(NOW + 59.9)
    assert token.is_expired(NOW + 60)
    assert token.is_expired(NOW + 61)
    assert parse_sas_token(generate_sas_token(HOST, PRIMARY, ttl=-1)).is_expired()
    assert not parse_sas_token(generate_sas_token(HOST, PRIMARY, ttl=600)).is_expired()
    assert parse_sas_token(generate_sas_token(HOST, PRIMARY)).expiry >= int(time.time()) + 3599


@RELAXED
@given(
    st.sampled_from([HOST, "localhost", "10.0.0.1:8883", "hub.example"]),
    device_ids,
    keys,
    st.integers(min_value=1, max_value=10**9),
)
def test_round_trip_for_any_device_and_key(host: str, device_id: str, key: str, ttl: int) -> None:
    uri = device_resource_uri(host, device_id)
    token = parse_sas_token(generate_sas_token(uri, key, ttl=ttl, now=NOW))
    assert token.resource == uri
    assert token.expiry == NOW + ttl
    assert signature_matches(token, key)


# -- tokens made by other SDKs -----------------------------------------------------------


@pytest.mark.parametrize("device_id", ["dev-1", "a(b)", "x'y", "p%q", "e=mc2", "a+b", "a*b!"])
def test_tokens_signed_over_the_url_encoded_resource_verify(device_id: str) -> None:
    uri = device_resource_uri(HOST, device_id)
    for sr in (quote(uri, safe=""), quote_plus(uri)):  # azure-iot-device's form, and quote_plus
        token = parse_sas_token(hand_made_token(sr, sr, PRIMARY, NOW))
        assert token.resource == uri
        assert signature_matches(token, PRIMARY)
        assert not signature_matches(token, SECONDARY)


@pytest.mark.parametrize("device_id", ["dev-1", "a(b)", "p%q"])
def test_tokens_with_lowercase_hex_escapes_verify(device_id: str) -> None:
    uri = device_resource_uri(HOST, device_id)
    lower = lower_hex(quote(uri, safe=""))
    assert "%2f" in lower
    # Sent and signed in lowercase (as .NET's HttpUtility.UrlEncode writes it) ...
    token = parse_sas_token(hand_made_token(lower, lower, PRIMARY, NOW))
    assert token.resource == uri
    assert signature_matches(token, PRIMARY)
    # ... and sent in lowercase but signed over the canonical encoding.
    assert signature_matches(parse_sas_token(hand_made_token(lower, quote(uri, safe=""), PRIMARY, NOW)), PRIMARY)


def test_node_style_encoding_keeps_parentheses_and_verifies() -> None:
    uri = device_resource_uri(HOST, "a(b)'c")
    sr = quote(uri, safe="()'!*")  # encodeURIComponent leaves these alone
    token = parse_sas_token(hand_made_token(sr, sr, PRIMARY, NOW))
    assert token.resource == uri
    assert signature_matches(token, PRIMARY)


def test_unencoded_resource_verifies_either_way() -> None:
    uri = device_resource_uri(HOST, "dev-1")
    assert signature_matches(parse_sas_token(hand_made_token(uri, uri, PRIMARY, NOW)), PRIMARY)
    assert signature_matches(parse_sas_token(hand_made_token(uri, quote(uri, safe=""), PRIMARY, NOW)), PRIMARY)


def test_signature_sent_without_url_encoding_verifies() -> None:
    uri = quote(device_resource_uri(HOST, "dev-1"), safe="")
    for index in range(200):  # find a signature that has '+' or '/' in it
        expiry = NOW + index
        raw_sig = sign(PRIMARY, uri, expiry)
        if "+" in raw_sig or "/" in raw_sig:
            break
    token = parse_sas_token(f"SharedAccessSignature sr={uri}&sig={raw_sig}&se={expiry}")
    assert token.signature == raw_sig
    assert signature_matches(token, PRIMARY)


def test_field_order_and_policy_name_encoding() -> None:
    sr = quote(HOST, safe="")
    good = hand_made_token(sr, sr, PRIMARY, NOW, skn="my%20policy")
    fields = good.removeprefix("SharedAccessSignature ").split("&")
    reordered = "SharedAccessSignature " + "&".join(reversed(fields))
    token = parse_sas_token(reordered)
    assert token.key_name == "my policy"
    assert signature_matches(token, PRIMARY)


# -- keys --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_key", ["not base64!", "abc", "é" * 8, "YWJj\n", "####"])
def test_bad_keys_raise_sas_token_error_when_signing(bad_key: str) -> None:
    with pytest.raises(SasTokenError, match="base64"):
        sign(bad_key, "r", 1)
    with pytest.raises(SasTokenError):
        generate_sas_token(HOST, bad_key)


@pytest.mark.parametrize("bad_key", ["not base64!", "abc", "é" * 8, "\x00"])
def test_bad_keys_never_match_and_never_raise(bad_key: str) -> None:
    token = parse_sas_token(generate_sas_token(HOST, PRIMARY, now=NOW))
    assert signature_matches(token, bad_key) is False


def test_sign_matches_a_hand_computed_hmac() -> None:
    expected = base64.b64encode(hmac.new(b"p" * 32, b"res\n42", hashlib.sha256).digest()).decode()
    assert sign(PRIMARY, "res", 42) == expected


def test_token_repr_hides_the_signature() -> None:
    token = parse_sas_token(generate_sas_token(HOST, PRIMARY, now=NOW))
    assert token.signature not in repr(token)
    assert HOST in repr(token)


# -- malformed tokens --------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SharedAccessSignature",
        "SharedAccessSignature ",
        "sharedaccesssignature sr=a&sig=b&se=1",
        "Bearer abc",
        "sr=a&sig=b&se=1",
        "SharedAccessSignature sig=b&se=1",
        "SharedAccessSignature sr=a&se=1",
        "SharedAccessSignature sr=a&sig=b",
        "SharedAccessSignature sr=a&sig=b&se=1&junk",
        "SharedAccessSignature sr=a&&sig=b&se=1",
        "SharedAccessSignature sr=a&sig=b&se=",
        "SharedAccessSignature sr=a&sig=b&se=abc",
        "SharedAccessSignature sr=a&sig=b&se=1.5",
        "SharedAccessSignature sr=a&sig=b&se=1_000",
        "SharedAccessSignature sr=a&sig=b&se=+1",
        "SharedAccessSignature sr=a&sig=b&se=-1",
        "SharedAccessSignature sr=a&sig=b&se=\u0661\u0662",
        "SharedAccessSignature sr=a&sig=b&se=1e9",
        "SharedAccessSignature sr=a&sig=b&se=" + "9" * 5000,
    ],
)
def test_malformed_tokens_raise_sas_token_error(text: str) -> None:
    with pytest.raises(SasTokenError):
        parse_sas_token(text)


def test_sas_token_error_is_a_value_error() -> None:
    assert issubclass(SasTokenError, ValueError)


_TOKENISH = st.text(alphabet="sr=&sigeknSAx%2F0123456789 +/", max_size=60)


@RELAXED
@given(st.text(max_size=80) | _TOKENISH.map(lambda t: "SharedAccessSignature " + t))
def test_parsing_random_text_raises_only_sas_token_error(text: str) -> None:
    with contextlib.suppress(SasTokenError):
        token = parse_sas_token(text)
        assert isinstance(token, SasToken)
        signature_matches(token, PRIMARY)  # never raises either


# -- connection strings ------------------------------------------------------------------


def test_device_connection_string() -> None:
    text = f"HostName={HOST};DeviceId=dev-1;SharedAccessKey={PRIMARY}"
    parsed = parse_connection_string(text)
    assert parsed == ConnectionString(HOST, PRIMARY, device_id="dev-1")
    assert str(parsed) == text


def test_service_connection_string() -> None:
    text = f"HostName={HOST};SharedAccessKeyName=iothubowner;SharedAccessKey={PRIMARY}"
    parsed = parse_connection_string(text)
    assert parsed == ConnectionString(HOST, PRIMARY, key_name="iothubowner")
    assert str(parsed) == text


def test_gateway_hostname_and_tolerated_whitespace() -> None:
    text = f" HostName = {HOST} ; DeviceId=d;SharedAccessKey={PRIMARY};GatewayHostName=edge.local; "
    parsed = parse_connection_string(text)
    assert parsed == ConnectionString(HOST, PRIMARY, device_id="d", gateway_hostname="edge.local")
    assert str(parsed) == f"HostName={HOST};DeviceId=d;SharedAccessKey={PRIMARY};GatewayHostName=edge.local"


def test_key_padding_survives() -> None:
    assert parse_connection_string("HostName=h;DeviceId=d;SharedAccessKey=YQ==").shared_access_key == "YQ=="


@RELAXED
@given(
    st.sampled_from([HOST, "localhost", "127.0.0.1:8883"]),
    device_ids.filter(lambda d: ";" not in d),
    keys,
    st.booleans(),
    st.none() | st.just("gw.local"),
)
def test_connection_string_round_trip(host: str, name: str, key: str, is_device: bool, gateway: str | None) -> None:
    original = ConnectionString(
        host, key, key_name=None if is_device else name, device_id=name if is_device else None, gateway_hostname=gateway
    )
    assert parse_connection_string(str(original)) == original


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("DeviceId=d;SharedAccessKey=k", "HostName"),
        ("HostName=h;DeviceId=d", "SharedAccessKey"),
        ("HostName=;DeviceId=d;SharedAccessKey=k", "HostName"),
        ("HostName=h;DeviceId=d;SharedAccessKey=", "SharedAccessKey"),
        ("HostName=h;DeviceId=d;SharedAccessKeyName=p;SharedAccessKey=k", "exactly one"),
        ("HostName=h;SharedAccessKey=k", "exactly one"),
        ("HostName=h;DeviceId;SharedAccessKey=k", "malformed"),
        ("", "HostName"),
        ("garbage", "malformed"),
    ],
)
def test_bad_connection_strings(text: str, message: str) -> None:
    with pytest.raises(SasTokenError, match=message):
        parse_connection_string(text)


def test_connection_string_repr_hides_the_key() -> None:
    parsed = parse_connection_string(f"HostName={HOST};DeviceId=d;SharedAccessKey={PRIMARY}")
    assert PRIMARY not in repr(parsed)
    assert PRIMARY in str(parsed)  # str() is the connection string itself, on purpose


@RELAXED
@given(st.text(max_size=80))
def test_parsing_random_connection_strings_raises_only_sas_token_error(text: str) -> None:
    with contextlib.suppress(SasTokenError):
        parse_connection_string(text)
