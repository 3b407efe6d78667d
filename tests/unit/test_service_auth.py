"""Service SAS authentication: the hub's names in ``sr``, token lifetime, constant-time signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from hub.api.auth import ServiceAuthenticator
from hub.domain.policies import DEFAULT_POLICY_RIGHTS, AccessPolicy
from hub.errors import UnauthorizedError
from hub.wire import sas
from hub.wire.sas import generate_sas_token, hub_hosts, parse_sas_token, resource_host, signature_matches

HOSTNAME = "Hub.Example.test"
NOW = 1_700_000_000
MAX_LIFETIME = 3600
PRIMARY = base64.b64encode(b"p" * 32).decode()
SECONDARY = base64.b64encode(b"s" * 32).decode()
POLICY = AccessPolicy("service", PRIMARY, SECONDARY, DEFAULT_POLICY_RIGHTS["service"])


class FixedClock:
    def now(self) -> datetime:
        return datetime.fromtimestamp(NOW, UTC)

    def monotonic(self) -> float:
        return 0.0


def authenticator(hostname: str = HOSTNAME) -> ServiceAuthenticator:
    return ServiceAuthenticator(hostname, {POLICY.name: POLICY}, FixedClock(), MAX_LIFETIME)


def token(sr: str, *, key: str = PRIMARY, ttl: int = 600, skn: str = "service") -> str:
    """``sr`` sent as given and signed as given, the way azure-iot-hub (raw) and azure-iothub (encoded) do."""
    expiry = NOW + ttl
    digest = hmac.new(base64.b64decode(key), f"{sr}\n{expiry}".encode(), hashlib.sha256).digest()
    sig = quote(base64.b64encode(digest).decode(), safe="")
    return f"SharedAccessSignature sr={sr}&sig={sig}&se={expiry}&skn={skn}"


# -- sr must name this hub ----------------------------------------------------------------

ACCEPTED_SR = [
    "Hub.Example.test",  # exactly the configured hostname
    "hub.example.test",
    "HUB.EXAMPLE.TEST",
    "hub.example.test:8443",  # azure-iot-hub signs HostName as it is, port included
    "hub.example.test%3A8443",  # azure-iothub (Node) url-encodes it
    "hub.example.test%3a443",
    "localhost",
    "LocalHost:8443",
    "localhost%3A8443",
    "127.0.0.1",
    "127.0.0.1:8443",
    "127.0.0.1%3A8443",
    "::1",
    "[::1]",
    "[::1]:8443",
    "%5B%3A%3A1%5D%3A8443",
    "[0:0:0:0:0:0:0:1]:443",
]

REFUSED_SR = [
    "",
    "other.example.test",
    "hub.example.test.evil.test",
    "evil-hub.example.test",
    "xhub.example.test",
    "hub.example",
    "hub.example.test:",
    "hub.example.test:https",
    "hub.example.test:99999",
    "hub.example.test:8443:1",
    "hub.example.test/devices",
    "hub.example.test%2Fdevices%2Fdev-1",
    "hub.example.test/",
    "user@hub.example.test",
    "hub.example.test?x=1",
    " hub.example.test",
    "127.0.0.2",
    "0.0.0.0",
    "::1:8443",  # without brackets that is another IPv6 address, not ::1 with a port
    "[localhost]",
    "[::1",
    "[::1]8443",
    "localhost%253A8443",  # encoded twice
]


@pytest.mark.parametrize("sr", ACCEPTED_SR)
def test_tokens_naming_this_hub_are_accepted(sr: str) -> None:
    assert authenticator().authenticate(token(sr)) is POLICY


@pytest.mark.parametrize("sr", REFUSED_SR)
def test_tokens_naming_another_host_are_refused_with_a_clear_message(sr: str) -> None:
    with pytest.raises(
        UnauthorizedError, match=r"not for this hub: its sr must be one of Hub\.Example\.test, localhost"
    ):
        authenticator().authenticate(token(sr))


def test_an_ip_hostname_is_accepted_in_any_of_its_forms() -> None:
    auth = authenticator("fd00::10")
    for sr in ("fd00::10", "[fd00::10]:8443", "FD00:0:0::10", "%5Bfd00%3A%3A10%5D"):
        assert auth.authenticate(token(sr)) is POLICY
    with pytest.raises(UnauthorizedError, match="not for this hub"):
        auth.authenticate(token("fd00::11"))


def test_the_message_quotes_a_long_sr_only_in_part() -> None:
    with pytest.raises(UnauthorizedError) as info:
        authenticator().authenticate(token("a" * 5000))
    assert "a" * 100 + "..." in info.value.message
    assert "a" * 101 not in info.value.message


@pytest.mark.parametrize(
    ("sr", "host"),
    [
        ("Hub.Example.Test:8443", "hub.example.test"),
        ("[::1]:1", "::1"),
        ("[0::1]", "::1"),
        ("127.0.0.1:65535", "127.0.0.1"),
        ("localhost", "localhost"),
        ("fd00::10", "fd00::10"),
    ],
)
def test_resource_host(sr: str, host: str) -> None:
    assert resource_host(sr) == host


@pytest.mark.parametrize("sr", ["", ":8443", "[]:1", "h:65536", "h:-1", "h:+1", "h:\uff11", "h/x", "[h]", "a b"])
def test_resource_host_of_what_is_no_host(sr: str) -> None:
    assert resource_host(sr) is None


def test_hub_hosts_are_the_hostname_and_the_certificate_names() -> None:
    assert hub_hosts("Hub.Example.test:8443") == {"hub.example.test", "localhost", "127.0.0.1", "::1"}
    assert hub_hosts("[FD00::10]") == {"fd00::10", "localhost", "127.0.0.1", "::1"}


# -- token lifetime -------------------------------------------------------------------------


def test_tokens_living_longer_than_the_maximum_are_refused() -> None:
    auth = authenticator()
    assert auth.authenticate(token(HOSTNAME, ttl=MAX_LIFETIME)) is POLICY
    with pytest.raises(UnauthorizedError, match=f"longer than the allowed {MAX_LIFETIME} s"):
        auth.authenticate(token(HOSTNAME, ttl=MAX_LIFETIME + 1))


def test_expired_and_wrongly_signed_tokens_are_refused() -> None:
    auth = authenticator()
    with pytest.raises(UnauthorizedError, match="expired"):
        auth.authenticate(token(HOSTNAME, ttl=0))
    with pytest.raises(UnauthorizedError, match="not valid"):
        auth.authenticate(token(HOSTNAME, key=base64.b64encode(b"x" * 32).decode()))
    assert auth.authenticate(token(HOSTNAME, key=SECONDARY)) is POLICY


# -- constant-time comparison ------------------------------------------------------------------


@pytest.fixture
def compare_digest_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bytes, bytes]]:
    """Every call sas makes to ``hmac.compare_digest`` (which still does the comparing)."""
    calls: list[tuple[bytes, bytes]] = []
    real: Callable[[bytes, bytes], bool] = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)  # the module sas calls it through
    return calls


def _expected_signatures(text: str, *keys: str) -> set[bytes]:
    parsed = parse_sas_token(text)
    forms = (parsed.raw_resource, quote(parsed.resource, safe=""), parsed.resource)
    return {sas.sign(key, form, parsed.expiry).encode() for key in keys for form in forms}


@pytest.mark.parametrize("signed_with", [PRIMARY, SECONDARY, base64.b64encode(b"x" * 32).decode()])
def test_signature_matches_compares_every_key_and_resource_form_in_constant_time(
    signed_with: str, compare_digest_calls: list[tuple[bytes, bytes]]
) -> None:
    text = generate_sas_token("hub.example.test/devices/dev-1", signed_with, now=NOW)
    verdict = signature_matches(parse_sas_token(text), PRIMARY, SECONDARY)
    assert verdict is (signed_with != base64.b64encode(b"x" * 32).decode())
    # Three resource forms under each of two keys: all six compared, whichever key matched.
    assert len(compare_digest_calls) == 6
    assert {expected for expected, _ in compare_digest_calls} == _expected_signatures(text, PRIMARY, SECONDARY)
    assert {given for _, given in compare_digest_calls} == {parse_sas_token(text).signature.encode()}


def test_the_service_authenticator_checks_both_policy_keys(compare_digest_calls: list[tuple[bytes, bytes]]) -> None:
    text = token(HOSTNAME)  # signed with the primary key
    assert authenticator().authenticate(text) is POLICY
    assert {expected for expected, _ in compare_digest_calls} == _expected_signatures(text, PRIMARY, SECONDARY)


def test_a_key_that_is_not_base64_never_matches_and_spares_the_others() -> None:
    text = generate_sas_token(HOSTNAME, SECONDARY, now=NOW)
    assert signature_matches(parse_sas_token(text), "not base64!", SECONDARY)
    assert not signature_matches(parse_sas_token(text), "not base64!")
    assert not signature_matches(parse_sas_token(text))
