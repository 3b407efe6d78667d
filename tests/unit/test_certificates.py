"""The pure X.509 rules (hub.domain.certificates): thumbprints, chains to registered CAs,
validity, and what the CA registry takes."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization

from hub.domain.certificates import check_device_certificate, load_ca_bundle, load_ca_certificate
from hub.domain.devices import AuthKind, DeviceAuth
from hub.errors import BadRequestError
from tests.pki import Identity, make_ca, make_device, make_self_signed

NOW = datetime.now(UTC)
CA_AUTH = DeviceAuth(AuthKind.CERTIFICATE_AUTHORITY)


def chain_of(identity: Identity) -> list[bytes]:
    return [identity.der, *(c.public_bytes(serialization.Encoding.DER) for c in identity.chain)]


def test_a_self_signed_device_matches_by_either_thumbprint_and_hash() -> None:
    me = make_self_signed("d1")
    for auth in (DeviceAuth(AuthKind.SELF_SIGNED, me.sha1), DeviceAuth(AuthKind.SELF_SIGNED, None, me.sha256)):
        assert check_device_certificate("d1", auth, [me.der], [], NOW).admitted
    other = DeviceAuth(AuthKind.SELF_SIGNED, make_self_signed("d1").sha1)
    assert check_device_certificate("d1", other, [me.der], [], NOW).refusal == (
        "the certificate's thumbprint is not one of the device's"
    )


def test_a_ca_signed_device_needs_its_cn_and_a_path_to_a_registered_ca() -> None:
    root = make_ca("root")
    line = make_ca("line", issuer=root)
    leaf = make_device("d1", line)
    check = check_device_certificate("d1", CA_AUTH, chain_of(leaf), [root.cert], NOW)
    assert check.admitted
    assert check.authority == root.cert
    # The intermediate registered instead of the root admits too (and is the authority).
    assert check_device_certificate("d1", CA_AUTH, [leaf.der], [line.cert], NOW).authority == line.cert
    assert "subject CN" in str(check_device_certificate("d2", CA_AUTH, chain_of(leaf), [root.cert], NOW).refusal)
    assert "registered CA" in str(check_device_certificate("d1", CA_AUTH, [leaf.der], [root.cert], NOW).refusal)
    assert "registered CA" in str(check_device_certificate("d1", CA_AUTH, chain_of(leaf), [], NOW).refusal)


@pytest.mark.parametrize(
    ("when", "reason"),
    [(NOW + timedelta(days=40), "expired or not yet valid"), (NOW - timedelta(days=3), "expired or not yet valid")],
)
def test_validity_is_checked_at_the_login(when: datetime, reason: str) -> None:
    root = make_ca("root", days=(-10, 365))
    leaf = make_device("d1", root)  # valid from yesterday for 30 days
    assert reason in str(check_device_certificate("d1", CA_AUTH, [leaf.der], [root.cert], when).refusal)


def test_a_forged_issuer_name_does_not_pass() -> None:
    root, impostor = make_ca("root"), make_ca("root")  # same name, other key
    leaf = make_device("d1", impostor)
    assert not check_device_certificate("d1", CA_AUTH, [leaf.der], [root.cert], NOW).admitted


def test_a_leaf_may_not_act_as_an_intermediate() -> None:
    root = make_ca("root")
    not_a_ca = make_device("middle", root)
    leaf = make_device("d1", Identity(not_a_ca.cert, not_a_ca.key))
    chain = [leaf.der, not_a_ca.der]
    assert check_device_certificate("d1", CA_AUTH, chain, [root.cert], NOW).refusal == (
        "an intermediate certificate is not a CA"
    )


def test_sas_devices_and_nonsense_are_refused() -> None:
    me = make_self_signed("d1")
    assert "SAS" in str(check_device_certificate("d1", DeviceAuth(), [me.der], [], NOW).refusal).upper()
    assert check_device_certificate("d1", CA_AUTH, [], [], NOW).refusal == "no client certificate"
    assert check_device_certificate("d1", CA_AUTH, [b"junk"], [], NOW).refusal == "an unreadable certificate"
    assert "at most" in str(check_device_certificate("d1", CA_AUTH, [me.der] * 9, [], NOW).refusal)


def test_the_registry_takes_one_ca_as_pem_or_base64_der() -> None:
    root = make_ca("root")
    assert load_ca_certificate(root.pem) == root.cert
    assert load_ca_certificate(base64.b64encode(root.der).decode()) == root.cert
    with pytest.raises(BadRequestError, match="not a CA"):
        load_ca_certificate(make_self_signed("leaf").pem)
    with pytest.raises(BadRequestError, match="one CA certificate per name"):
        load_ca_certificate(root.pem + make_ca("other").pem)
    bundle = load_ca_bundle((root.pem + make_ca("other").pem).encode(), "--device-ca x.pem")
    assert [c.subject.rfc4514_string() for c in bundle] == ["CN=root", "CN=other"]
    with pytest.raises(BadRequestError, match=r"--device-ca x\.pem holds no PEM"):
        load_ca_bundle(b"nothing", "--device-ca x.pem")
