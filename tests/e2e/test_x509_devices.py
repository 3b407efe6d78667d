"""X.509 device authentication on a real hub over real TLS: self-signed devices by thumbprint,
CA-signed devices through CAs registered at /certificates or given with --device-ca, the
refusals (CONNACK 5, never disturbing a live connection) and revocation."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from hub.runtime import Hub
from tests.e2e.conftest import api_client, create_device, hub_settings, next_message, wait_for_state
from tests.pki import Identity, make_ca, make_device, make_self_signed

NOT_AUTHORIZED = "Not authorized"  # CONNACK 5, as paho names it


@asynccontextmanager
async def x509_client(
    hub: Hub, device_id: str, identity: Identity, tmp_path: Path, *, password: str | None = None
) -> AsyncIterator[aiomqtt.Client]:
    """An MQTT/TLS client presenting ``identity`` (with its chain), no password: what
    azure-iot-device's create_from_x509_certificate does."""
    assert hub.endpoints is not None
    cert, key = identity.write(tmp_path / "certs", f"{device_id}-{id(identity)}")
    context = ssl.create_default_context(cafile=str(hub.endpoints.ca_cert))
    context.load_cert_chain(cert, key)
    client = aiomqtt.Client(
        "localhost",
        hub.endpoints.mqtts_port,
        identifier=device_id,
        username=f"localhost/{device_id}/?api-version=2021-04-12",
        password=password,
        tls_context=context,
        timeout=10,
    )
    async with client:
        yield client


async def refused(hub: Hub, device_id: str, identity: Identity, tmp_path: Path, **kwargs: Any) -> str:
    """The CONNACK refusal of a login with ``identity``."""
    with pytest.raises(aiomqtt.MqttCodeError) as info:
        async with x509_client(hub, device_id, identity, tmp_path, **kwargs):
            pass
    return str(info.value.rc)


async def put_device(api: httpx.AsyncClient, device_id: str, authentication: dict[str, Any]) -> dict[str, Any]:
    response = await api.put(f"/devices/{device_id}", json={"deviceId": device_id, "authentication": authentication})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def without_chain(identity: Identity) -> Identity:
    return Identity(identity.cert, identity.key)


async def register_ca(api: httpx.AsyncClient, name: str, ca: Identity) -> dict[str, Any]:
    response = await api.put(f"/certificates/{name}", json={"properties": {"certificate": ca.pem}})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def answer_one_method(client: aiomqtt.Client) -> None:
    message = await next_message(client, "$iothub/methods/POST/")
    rid = str(message.topic).split("$rid=")[1]
    await client.publish(f"$iothub/methods/res/200/?$rid={rid}", b'{"x509": true}')


async def call_method(api: httpx.AsyncClient, device_id: str) -> httpx.Response:
    return await api.post(
        f"/twins/{device_id}/methods", json={"methodName": "whoami", "payload": None, "responseTimeoutInSeconds": 5}
    )


async def assert_works(api: httpx.AsyncClient, device_id: str, client: aiomqtt.Client) -> None:
    await client.subscribe("$iothub/methods/POST/#")
    await wait_for_state(api, device_id, "Connected")
    answering = asyncio.create_task(answer_one_method(client))
    response = await call_method(api, device_id)
    await answering
    assert response.status_code == 200, response.text
    assert response.json()["payload"] == {"x509": True}


# -- self-signed, by thumbprint -------------------------------------------------------------------


async def test_a_self_signed_device_logs_in_by_its_sha1_thumbprint(
    hub: Hub, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    identity = make_self_signed("thumb-sha1")
    # Thumbprints as people paste them: lower case, with colons; the hub stores them upper-case.
    pasted = ":".join(identity.sha1[i : i + 2] for i in range(0, 40, 2)).lower()
    device = await put_device(
        api, "thumb-sha1", {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": pasted}}
    )
    assert device["authentication"]["type"] == "selfSigned"
    assert device["authentication"]["symmetricKey"] == {"primaryKey": None, "secondaryKey": None}
    assert device["authentication"]["x509Thumbprint"]["primaryThumbprint"] == identity.sha1
    async with x509_client(hub, "thumb-sha1", identity, tmp_path) as client:
        await assert_works(api, "thumb-sha1", client)
    twin = (await api.get("/twins/thumb-sha1")).json()
    assert twin["authenticationType"] == "selfSigned"
    assert twin["x509Thumbprint"] == {"primaryThumbprint": identity.sha1, "secondaryThumbprint": None}


async def test_the_secondary_thumbprint_may_be_sha256(hub: Hub, api: httpx.AsyncClient, tmp_path: Path) -> None:
    old, new = make_self_signed("thumb-roll"), make_self_signed("thumb-roll")
    await put_device(
        api,
        "thumb-roll",
        {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": old.sha1, "secondaryThumbprint": new.sha256}},
    )
    for identity in (old, new):
        async with x509_client(hub, "thumb-roll", identity, tmp_path) as client:
            await assert_works(api, "thumb-roll", client)
    assert await refused(hub, "thumb-roll", make_self_signed("thumb-roll"), tmp_path) == NOT_AUTHORIZED


# -- CA-signed ------------------------------------------------------------------------------------


async def test_a_ca_signed_device_logs_in_through_a_registered_ca(
    hub: Hub, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    root = make_ca("fleet root")
    registered = await register_ca(api, "fleet-root", root)
    assert registered["name"] == "fleet-root"
    assert registered["properties"]["isVerified"] is True
    assert registered["properties"]["subject"] == "CN=fleet root"
    assert registered["properties"]["thumbprint"] == root.sha1
    device = await put_device(api, "ca-dev-1", {"type": "certificateAuthority"})
    assert device["authentication"]["type"] == "certificateAuthority"
    async with x509_client(hub, "ca-dev-1", make_device("ca-dev-1", root), tmp_path) as client:
        await assert_works(api, "ca-dev-1", client)

    # A chain through an intermediate the hub has never seen: the device sends it along.
    intermediate = make_ca("fleet line 3", issuer=root)
    await put_device(api, "ca-dev-2", {"type": "certificateAuthority"})
    leaf = make_device("ca-dev-2", intermediate)
    assert [c.subject for c in leaf.chain] == [intermediate.cert.subject]
    async with x509_client(hub, "ca-dev-2", leaf, tmp_path) as client:
        await assert_works(api, "ca-dev-2", client)


@pytest.mark.parametrize(
    "case",
    ["wrong CN", "unregistered CA", "expired", "not yet valid", "expired intermediate", "intermediate not sent"],
)
async def test_ca_signed_refusals(hub: Hub, api: httpx.AsyncClient, tmp_path: Path, case: str) -> None:
    root = make_ca("refusal root")
    await register_ca(api, "refusal-root", root)
    await put_device(api, "ca-refused", {"type": "certificateAuthority"})
    identity = {
        "wrong CN": lambda: make_device("someone-else", root),
        "unregistered CA": lambda: make_device("ca-refused", make_ca("rogue root")),
        "expired": lambda: make_device("ca-refused", root, days=(-30, -1)),
        "not yet valid": lambda: make_device("ca-refused", root, days=(1, 30)),
        "expired intermediate": lambda: make_device("ca-refused", make_ca("old line", issuer=root, days=(-30, -1))),
        "intermediate not sent": lambda: without_chain(make_device("ca-refused", make_ca("line", issuer=root))),
    }[case]()
    assert await refused(hub, "ca-refused", identity, tmp_path) == NOT_AUTHORIZED


async def test_device_ca_given_at_start_admits_devices(tmp_path: Path) -> None:
    root = make_ca("operator root")
    ca_file, _ = root.write(tmp_path / "operator", "ca")
    settings = hub_settings(tmp_path / "data").model_copy(update={"device_ca": ca_file})
    async with Hub(settings) as hub, api_client(hub) as api:
        await put_device(api, "opca-1", {"type": "certificateAuthority"})
        async with x509_client(hub, "opca-1", make_device("opca-1", root), tmp_path) as client:
            await assert_works(api, "opca-1", client)
        assert (await api.get("/certificates")).json() == {"value": []}  # not a registration


# -- who may not log in with a certificate, and what a refusal leaves alone ----------------------


async def test_a_sas_device_cannot_log_in_with_a_certificate(hub: Hub, api: httpx.AsyncClient, tmp_path: Path) -> None:
    creds = await create_device(api)
    identity = make_self_signed(creds.device_id)
    assert await refused(hub, creds.device_id, identity, tmp_path) == NOT_AUTHORIZED
    # With its SAS token it logs in, certificate or not.
    async with x509_client(hub, creds.device_id, identity, tmp_path, password=creds.token()) as client:
        await assert_works(api, creds.device_id, client)


async def test_a_refused_certificate_never_disturbs_the_live_connection(
    hub: Hub, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    good = make_self_signed("thumb-live")
    await put_device(api, "thumb-live", {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": good.sha256}})
    async with x509_client(hub, "thumb-live", good, tmp_path) as client:
        await client.subscribe("$iothub/methods/POST/#")
        await wait_for_state(api, "thumb-live", "Connected")
        assert await refused(hub, "thumb-live", make_self_signed("thumb-live"), tmp_path) == NOT_AUTHORIZED
        answering = asyncio.create_task(answer_one_method(client))
        assert (await call_method(api, "thumb-live")).status_code == 200
        await answering


# -- revocation -------------------------------------------------------------------------------------


async def drain(client: aiomqtt.Client) -> None:
    async with asyncio.timeout(10):
        async for _ in client.messages:
            pass


async def expect_dropped(client: aiomqtt.Client) -> None:
    with pytest.raises(aiomqtt.MqttError):
        await drain(client)


async def test_deleting_a_ca_drops_the_devices_it_admitted(hub: Hub, api: httpx.AsyncClient, tmp_path: Path) -> None:
    root, other = make_ca("revoked root"), make_ca("staying root")
    await register_ca(api, "revoked-root", root)
    await register_ca(api, "staying-root", other)
    await put_device(api, "rev-a", {"type": "certificateAuthority"})
    await put_device(api, "rev-b", {"type": "certificateAuthority"})
    async with (
        x509_client(hub, "rev-a", make_device("rev-a", root), tmp_path) as dropped,
        x509_client(hub, "rev-b", make_device("rev-b", other), tmp_path) as staying,
    ):
        await staying.subscribe("$iothub/methods/POST/#")
        await wait_for_state(api, "rev-a", "Connected")
        etag = (await api.get("/certificates/revoked-root")).json()["etag"]
        assert (await api.delete("/certificates/revoked-root", headers={"If-Match": '"stale"'})).status_code == 412
        assert (await api.delete("/certificates/revoked-root", headers={"If-Match": etag})).status_code == 204
        await expect_dropped(dropped)
        await wait_for_state(api, "rev-a", "Disconnected")
        assert await refused(hub, "rev-a", make_device("rev-a", root), tmp_path) == NOT_AUTHORIZED
        answering = asyncio.create_task(answer_one_method(staying))
        assert (await call_method(api, "rev-b")).status_code == 200
        await answering


@pytest.mark.parametrize("change", ["thumbprint", "disabled"])
async def test_changing_the_identity_drops_the_live_connection(
    hub: Hub, api: httpx.AsyncClient, tmp_path: Path, change: str
) -> None:
    identity = make_self_signed("thumb-change")
    device = await put_device(
        api, "thumb-change", {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": identity.sha1}}
    )
    body: dict[str, Any] = {
        "deviceId": "thumb-change",
        "authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": identity.sha1}},
    }
    if change == "thumbprint":
        body["authentication"]["x509Thumbprint"]["primaryThumbprint"] = make_self_signed("x").sha1
    else:
        body["status"] = "disabled"
    async with x509_client(hub, "thumb-change", identity, tmp_path) as client:
        await wait_for_state(api, "thumb-change", "Connected")
        updated = await api.put("/devices/thumb-change", json=body, headers={"If-Match": device["etag"]})
        assert updated.status_code == 200, updated.text
        await expect_dropped(client)
    assert await refused(hub, "thumb-change", identity, tmp_path) == NOT_AUTHORIZED


# -- the certificate registry ----------------------------------------------------------------------


async def test_the_certificate_registry(api: httpx.AsyncClient) -> None:
    root = make_ca("registry root")
    created = await register_ca(api, "reg-root", root)
    assert created["type"] == "Microsoft.Devices/IotHubs/Certificates"
    again = await api.put("/certificates/reg-root", json={"properties": {"certificate": root.pem}})
    assert (again.status_code, again.headers["iothub-errorcode"]) == (409, "CertificateAlreadyExists")
    stale = await api.put(
        "/certificates/reg-root", json={"properties": {"certificate": root.pem}}, headers={"If-Match": '"AAAA"'}
    )
    assert stale.status_code == 412
    replacement = make_ca("registry root 2")
    replaced = await api.put(
        "/certificates/reg-root",
        json={"properties": {"certificate": replacement.pem}},
        headers={"If-Match": created["etag"]},
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["properties"]["subject"] == "CN=registry root 2"
    assert replaced.json()["etag"] != created["etag"]
    listed = (await api.get("/certificates")).json()["value"]
    assert [c["name"] for c in listed] == ["reg-root"]
    assert (await api.get("/certificates/nope")).headers["iothub-errorcode"] == "CertificateNotFound"
    assert (await api.delete("/certificates/nope")).status_code == 404


@pytest.mark.parametrize(
    ("certificate", "says"),
    [
        ("not a certificate", "PEM or base64 DER"),
        (make_device("leaf", make_ca("x")).pem, "not a CA certificate"),
        (make_ca("a").pem + make_ca("b").pem, "one CA certificate"),
    ],
)
async def test_what_the_certificate_registry_refuses(api: httpx.AsyncClient, certificate: str, says: str) -> None:
    response = await api.put("/certificates/bad", json={"properties": {"certificate": certificate}})
    assert response.status_code == 400
    assert says in response.json()["ExceptionMessage"]


async def test_a_certificate_given_as_base64_der_is_taken(api: httpx.AsyncClient) -> None:
    import base64

    root = make_ca("der root")
    response = await api.put(
        "/certificates/der-root", json={"properties": {"certificate": base64.b64encode(root.der).decode()}}
    )
    assert response.status_code == 200, response.text
    assert response.json()["properties"]["thumbprint"] == root.sha1


@pytest.mark.parametrize(
    ("authentication", "says"),
    [
        ({"type": "selfSigned"}, "needs x509Thumbprint"),
        ({"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": "abc"}}, "SHA-1"),
        ({"type": "certificateAuthority", "symmetricKey": {"primaryKey": "a2V5a2V5a2V5a2V5a2V5a2V5"}}, "sas devices"),
        ({"type": "kerberos"}, "authentication.type 'kerberos'"),
    ],
)
async def test_bad_authentication_is_refused(api: httpx.AsyncClient, authentication: dict[str, Any], says: str) -> None:
    response = await api.put("/devices/bad-auth", json={"deviceId": "bad-auth", "authentication": authentication})
    assert response.status_code == 400
    assert says in response.json()["ExceptionMessage"]
    assert (await api.get("/devices/bad-auth")).status_code == 404
