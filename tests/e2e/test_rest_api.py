"""The service API through real HTTP: registry, twins, etags, limits, auth and error shapes."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from hub.runtime import Hub
from hub.tls import client_ssl_context
from tests.e2e.conftest import create_device, service_token


def _error_code(response: httpx.Response) -> str:
    code = response.headers["iothub-errorcode"]
    assert response.json()["Message"].startswith(f"ErrorCode:{code};")
    return code


async def test_healthz_needs_no_auth(hub: Hub) -> None:
    assert hub.endpoints is not None
    async with httpx.AsyncClient(base_url=hub.endpoints.http_url) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_https_listener_serves_with_the_hub_ca(hub: Hub) -> None:
    assert hub.endpoints is not None
    url = f"https://localhost:{hub.endpoints.https_port}"
    async with httpx.AsyncClient(base_url=url, verify=client_ssl_context(hub.endpoints.ca_cert)) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200


async def test_device_crud_and_generated_keys(api: httpx.AsyncClient) -> None:
    created = (await api.put("/devices/thermo-1", json={"deviceId": "thermo-1"})).json()
    keys = created["authentication"]["symmetricKey"]
    assert keys["primaryKey"]
    assert keys["secondaryKey"]
    assert keys["primaryKey"] != keys["secondaryKey"]
    assert created["status"] == "enabled"
    assert created["connectionState"] == "Disconnected"

    again = await api.put("/devices/thermo-1", json={"deviceId": "thermo-1"})
    assert again.status_code == 409
    assert _error_code(again) == "DeviceAlreadyExists"

    fetched = (await api.get("/devices/thermo-1")).json()
    assert fetched["etag"] == created["etag"]

    stale = await api.put(
        "/devices/thermo-1", headers={"If-Match": '"AAAAAAAAAAA="'}, json={"deviceId": "thermo-1", "status": "disabled"}
    )
    assert stale.status_code == 412
    updated = await api.put(
        "/devices/thermo-1",
        headers={"If-Match": f'"{created["etag"]}"'},
        json={"deviceId": "thermo-1", "status": "disabled", "statusReason": "maintenance"},
    )
    assert updated.status_code == 200
    assert updated.json()["status"] == "disabled"
    assert updated.json()["etag"] != created["etag"]
    assert updated.json()["authentication"]["symmetricKey"] == keys

    # azure-iothub (Node) Registry.update: the whole device, the wildcard etag quoted.
    node_update = await api.put(
        "/devices/thermo-1?api-version=2021-04-12",
        headers={"If-Match": '"*"', "Content-Type": "application/json; charset=utf-8"},
        json={**updated.json(), "status": "enabled"},
    )
    assert node_update.status_code == 200, node_update.text
    assert node_update.json()["status"] == "enabled"

    listed = (await api.get("/devices")).json()
    assert [d["deviceId"] for d in listed] == ["thermo-1"]

    assert (await api.delete("/devices/thermo-1", headers={"If-Match": created["etag"]})).status_code == 412
    assert (await api.delete("/devices/thermo-1")).status_code == 204
    missing = await api.get("/devices/thermo-1")
    assert missing.status_code == 404
    assert _error_code(missing) == "DeviceNotFound"


async def test_given_keys_are_kept(api: httpx.AsyncClient) -> None:
    primary, secondary = "A" * 43 + "=", "B" * 43 + "="
    created = await api.put(
        "/devices/keyed",
        json={
            "deviceId": "keyed",
            "authentication": {"type": "sas", "symmetricKey": {"primaryKey": primary, "secondaryKey": secondary}},
        },
    )
    assert created.status_code == 200
    assert created.json()["authentication"]["symmetricKey"] == {"primaryKey": primary, "secondaryKey": secondary}


@pytest.mark.parametrize("device_id", ["a" * 129, "has space", "sl/ash", "ünï", "tab\tid"])
async def test_invalid_device_ids_are_400(api: httpx.AsyncClient, device_id: str) -> None:
    response = await api.put("/devices/x", json={"deviceId": "x"})  # a valid one, for contrast
    assert response.status_code == 200
    bad = await api.post("/devices", json=[{"id": device_id, "importMode": "create"}])
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["errorCode"] == "ArgumentInvalid"


async def test_odd_but_valid_device_ids_round_trip(api: httpx.AsyncClient) -> None:
    device_id = "dev-#1?%$'(x):=@!*+,."
    assert (await api.put(f"/devices/{quote(device_id, safe='')}", json={"deviceId": device_id})).status_code == 200
    fetched = await api.get(f"/twins/{quote(device_id, safe='')}")
    assert fetched.status_code == 200
    assert fetched.json()["deviceId"] == device_id


async def test_bulk_import_create_and_delete(api: httpx.AsyncClient) -> None:
    ops = [{"id": f"bulk-{i:03d}", "importMode": "create"} for i in range(250)]
    response = await api.post("/devices", json=ops)
    assert response.status_code == 200, response.text
    assert response.json() == {"isSuccessful": True, "errors": [], "warnings": []}
    again = await api.post("/devices", json=[*ops[:2], {"id": "bulk-new", "importMode": "create"}])
    assert again.status_code == 400
    assert {e["deviceId"] for e in again.json()["errors"]} == {"bulk-000", "bulk-001"}
    assert (await api.get("/devices/bulk-new")).status_code == 200
    too_many = await api.post("/devices", json=[{"id": f"x{i}", "importMode": "create"} for i in range(1001)])
    assert too_many.status_code == 400
    deleted = await api.post("/devices", json=[{"id": f"bulk-{i:03d}", "importMode": "delete"} for i in range(250)])
    assert deleted.status_code == 200
    assert len((await api.get("/devices")).json()) == 1


async def test_twin_patch_replace_and_etags(api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    path = f"/twins/{creds.device_id}"
    twin = (await api.get(path)).json()
    assert twin["properties"]["desired"]["$version"] == 1
    assert twin["tags"] == {}

    patched = await api.patch(
        path,
        headers={"If-Match": twin["etag"]},
        json={"tags": {"location": {"region": "US"}}, "properties": {"desired": {"a": 1}}},
    )
    assert patched.status_code == 200, patched.text
    doc = patched.json()
    assert doc["tags"] == {"location": {"region": "US"}}
    assert doc["properties"]["desired"]["a"] == 1
    assert doc["properties"]["desired"]["$version"] == 2
    assert doc["version"] == twin["version"] + 1
    assert "$lastUpdated" in doc["properties"]["desired"]["$metadata"]["a"]

    stale = await api.patch(path, headers={"If-Match": twin["etag"]}, json={"tags": {"x": 1}})
    assert stale.status_code == 412
    assert _error_code(stale) == "PreconditionFailed"

    deleted = await api.patch(path, json={"tags": {"location": None}, "properties": {"desired": {"a": None}}})
    assert deleted.json()["tags"] == {}
    assert "a" not in deleted.json()["properties"]["desired"]

    replaced = await api.put(
        path, headers={"If-Match": "*"}, json={"tags": {"only": True}, "properties": {"desired": {"b": "x"}}}
    )
    assert replaced.status_code == 200
    assert replaced.json()["tags"] == {"only": True}
    desired = {k: v for k, v in replaced.json()["properties"]["desired"].items() if not k.startswith("$")}
    assert desired == {"b": "x"}


@pytest.mark.parametrize(
    ("patch", "reason"),
    [
        ({"tags": {"big": "x" * 4000, "big2": "y" * 4000, "big3": "z" * 1000}}, "over the limit"),
        ({"properties": {"desired": {f"k{i}": "v" * 4000 for i in range(9)}}}, "over the limit"),
        ({"properties": {"desired": {"s": "v" * 5000}}}, "longer than"),
        ({"tags": {"a.b": 1}}, "may not contain"),
        ({"tags": {"$x": 1}}, "may not contain"),
        ({"tags": {"with space": 1}}, "may not contain"),
        ({"properties": {"desired": {"n": 2**60}}}, "outside"),
        ({"tags": {"k" * 1025: 1}}, "longer than"),
        (
            {
                "properties": {
                    "desired": {
                        "l1": {"l2": {"l3": {"l4": {"l5": {"l6": {"l7": {"l8": {"l9": {"l10": {"l11": 1}}}}}}}}}}
                    }
                }
            },
            "deeper",
        ),
        ({"tags": "not an object"}, "must be a JSON object"),
    ],
)
async def test_twin_limits_are_400_with_reason(api: httpx.AsyncClient, patch: dict[str, object], reason: str) -> None:
    creds = await create_device(api)
    before = (await api.get(f"/twins/{creds.device_id}")).json()
    response = await api.patch(f"/twins/{creds.device_id}", json=patch)
    assert response.status_code == 400, response.text
    assert reason in response.json()["Message"]
    after = (await api.get(f"/twins/{creds.device_id}")).json()
    assert after["etag"] == before["etag"]


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        ({"methodName": "bad/name"}, "methodName"),
        ({"methodName": ""}, "methodName"),
        ({"methodName": "ok", "responseTimeoutInSeconds": 4}, "responseTimeoutInSeconds"),
        ({"methodName": "ok", "responseTimeoutInSeconds": 301}, "responseTimeoutInSeconds"),
        ({"methodName": "ok", "connectTimeoutInSeconds": -1}, "connectTimeoutInSeconds"),
        ({"methodName": "ok", "connectTimeoutInSeconds": 301}, "connectTimeoutInSeconds"),
        ({"methodName": "ok", "payload": "x" * (128 * 1024)}, "over the limit"),
    ],
)
async def test_method_limits_are_400(api: httpx.AsyncClient, call: dict[str, object], reason: str) -> None:
    creds = await create_device(api)
    response = await api.post(f"/twins/{creds.device_id}/methods", json=call)
    assert response.status_code == 400, response.text
    assert reason in response.json()["Message"]


async def test_malformed_json_body_is_400(api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    response = await api.patch(
        f"/twins/{creds.device_id}", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert _error_code(response) == "ArgumentInvalid"


async def test_auth_401_and_403(hub: Hub) -> None:
    assert hub.endpoints is not None
    url = hub.endpoints.http_url
    async with httpx.AsyncClient(base_url=url) as anonymous:
        assert (await anonymous.get("/devices")).status_code == 401
        forged = service_token(hub).replace("sig=", "sig=AA")
        assert (await anonymous.get("/devices", headers={"Authorization": forged})).status_code == 401
        expired = service_token(hub, ttl=-5)
        assert (await anonymous.get("/devices", headers={"Authorization": expired})).status_code == 401
        reader = {"Authorization": service_token(hub, "registryRead")}
        assert (await anonymous.get("/devices", headers=reader)).status_code == 200
        denied = await anonymous.put("/devices/x", headers=reader, json={})
        assert denied.status_code == 403
        assert denied.headers["iothub-errorcode"] == "IotHubUnauthorized"
        service = {"Authorization": service_token(hub, "service")}
        assert (await anonymous.get("/devices", headers=service)).status_code == 403
        assert (await anonymous.post("/twins/x/methods", headers=reader, json={"methodName": "m"})).status_code == 403
        writer = {"Authorization": service_token(hub, "registryReadWrite")}
        assert (await anonymous.put("/devices/x", headers=writer, json={})).status_code == 200
        assert (await anonymous.get("/twins/x", headers=service)).status_code == 200


async def test_openapi_document_and_docs(hub: Hub) -> None:
    assert hub.endpoints is not None
    async with httpx.AsyncClient(base_url=hub.endpoints.http_url) as client:
        spec = (await client.get("/openapi.json")).json()
        assert (await client.get("/docs")).status_code == 200
    assert {"/devices/{device_id}", "/twins/{device_id}", "/twins/{device_id}/methods", "/healthz"} <= set(
        spec["paths"]
    )


async def test_unknown_route_has_iothub_error_shape(api: httpx.AsyncClient) -> None:
    response = await api.get("/no/such/route")
    assert response.status_code == 404
    assert response.headers["iothub-errorcode"] == "NotFound"
