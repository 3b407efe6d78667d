"""The exact requests the Azure IoT SDKs and Microsoft's samples send, where fleethub once
answered them wrong (issue 13's bugs, each pinned here), and the 2016 preview's shapes.

The bodies are copied from what azure-iothub (Node) and azure-iot-hub (Python) put on the
wire; the compat suite runs the SDKs themselves."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from hub.runtime import Hub
from tests.e2e.conftest import create_device, mqtt_client, next_message, wait_for_twin
from tests.e2e.processes import arun_cli

API = "?api-version=2021-04-12"


def error_text(response: httpx.Response) -> str:
    body: dict[str, str] = response.json()
    return body["ExceptionMessage"]


# -- 1. every route with and without a trailing slash, never a redirect ------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/devices/"),  # azure-iothub's Registry.list() builds exactly this
        ("GET", "/devices/{id}/"),
        ("GET", "/twins/{id}/"),
        ("POST", "/devices/query/"),
        ("GET", "/jobs/v2/query/"),
        ("GET", "/statistics/devices/"),
        ("GET", "/healthz/"),
    ],
)
async def test_a_trailing_slash_is_the_same_route(api: httpx.AsyncClient, method: str, path: str) -> None:
    creds = await create_device(api)
    url = path.replace("{id}", creds.device_id)
    body = {"query": "SELECT * FROM devices"} if method == "POST" else None
    with_slash = await api.request(method, url + API, json=body)
    without = await api.request(method, url.rstrip("/") + API, json=body)
    assert with_slash.status_code == without.status_code == 200, with_slash.text
    assert "location" not in with_slash.headers
    if url.startswith("/devices/"):
        assert with_slash.json() == without.json() or method == "GET"


async def test_the_node_registry_list_request(api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    response = await api.get(f"/devices/{API}", follow_redirects=False)
    assert response.status_code == 200
    assert creds.device_id in [device["deviceId"] for device in response.json()]


# -- 2. bulk importMode in any letter case ----------------------------------------------------


def node_bulk_entry(device_id: str, mode: str, **extra: Any) -> dict[str, Any]:
    """What azure-iothub's updateDevices / removeDevices send for one device."""
    return {
        "id": device_id,
        "status": "enabled",
        "importMode": mode,
        "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "", "secondaryKey": ""}},
        **extra,
    }


async def test_node_bulk_update_and_remove_modes(api: httpx.AsyncClient) -> None:
    ids = [f"bulk-case-{n}" for n in range(4)]
    created = await api.post(f"/devices{API}", json=[node_bulk_entry(i, "create") for i in ids])
    assert created.status_code == 200, created.text
    etag = (await api.get(f"/devices/{ids[1]}")).json()["etag"]

    updated = await api.post(
        f"/devices{API}",
        json=[
            node_bulk_entry(ids[0], "Update", status="disabled"),
            node_bulk_entry(ids[1], "UpdateIfMatchETag", status="disabled", eTag=etag),
        ],
    )
    assert updated.status_code == 200, updated.text
    assert {(await api.get(f"/devices/{i}")).json()["status"] for i in ids[:2]} == {"disabled"}

    etag = (await api.get(f"/devices/{ids[3]}")).json()["etag"]
    removed = await api.post(
        f"/devices{API}",
        json=[node_bulk_entry(ids[2], "Delete"), node_bulk_entry(ids[3], "DeleteIfMatchETag", eTag=etag)],
    )
    assert removed.status_code == 200, removed.text
    assert [(await api.get(f"/devices/{i}")).status_code for i in ids] == [200, 200, 404, 404]


async def test_an_unknown_import_mode_is_still_refused(api: httpx.AsyncClient) -> None:
    response = await api.post(f"/devices{API}", json=[node_bulk_entry("bulk-x", "Upsert")])
    assert response.status_code == 400
    assert "importMode 'Upsert'" in error_text(response)


# -- 3. an empty reported section in a twin job -----------------------------------------------


async def test_the_node_sdk_e2e_twin_job(api: httpx.AsyncClient) -> None:
    """azure-iothub's own end-to-end test schedules exactly this updateTwin."""
    creds = await create_device(api)
    body = {
        "jobId": "node-e2e-twin",
        "type": "scheduleUpdateTwin",
        "queryCondition": f"deviceId IN ['{creds.device_id}']",
        "updateTwin": {"etag": "*", "tags": {"state": "WA"}, "properties": {"desired": {}, "reported": {}}},
        "startTime": datetime.now(UTC).isoformat(),
        "maxExecutionTimeInSeconds": 300,
    }
    response = await api.put(f"/jobs/v2/node-e2e-twin{API}", json=body)
    assert response.status_code == 200, response.text
    await wait_for_twin(api, creds.device_id, lambda twin: twin["tags"] == {"state": "WA"})


async def test_a_twin_job_that_writes_reported_properties_is_refused(api: httpx.AsyncClient) -> None:
    body = {
        "type": "scheduleUpdateTwin",
        "queryCondition": "*",
        "updateTwin": {"etag": "*", "properties": {"reported": {"fw": "2"}}},
    }
    response = await api.put(f"/jobs/v2/reported-job{API}", json=body)
    assert response.status_code == 400
    assert "not properties.reported" in error_text(response)


# -- 4. registry and service statistics --------------------------------------------------------


async def test_registry_and_service_statistics(hub: Hub, api: httpx.AsyncClient) -> None:
    ids = [(await create_device(api)).device_id for _ in range(3)]
    etag = (await api.get(f"/devices/{ids[0]}")).json()["etag"]
    disabled = await api.put(
        f"/devices/{ids[0]}", headers={"If-Match": etag}, json={"deviceId": ids[0], "status": "disabled"}
    )
    assert disabled.status_code == 200
    creds = await create_device(api)
    async with mqtt_client(hub, creds):
        await wait_for_twin(api, creds.device_id, lambda twin: twin["connectionState"] == "Connected")
        devices = (await api.get(f"/statistics/devices{API}")).json()
        service = (await api.get(f"/statistics/service{API}")).json()
    assert devices == {"totalDeviceCount": 4, "enabledDeviceCount": 3, "disabledDeviceCount": 1}
    assert service == {"connectedDeviceCount": 1}


# -- 5. the smaller differences ---------------------------------------------------------------


async def test_device_etag_is_the_identitys_and_fresh_sections_were_never_updated(api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    device = (await api.get(f"/devices/{creds.device_id}")).json()
    twin = (await api.get(f"/twins/{creds.device_id}")).json()
    assert twin["deviceEtag"] == device["etag"]
    for section in ("desired", "reported"):
        assert twin["properties"][section]["$metadata"] == {"$lastUpdated": "0001-01-01T00:00:00Z"}

    # A twin write changes the twin's etag, not the identity's; an identity write the reverse.
    await api.patch(f"/twins/{creds.device_id}", json={"tags": {"a": 1}})
    twin = (await api.get(f"/twins/{creds.device_id}")).json()
    assert twin["deviceEtag"] == device["etag"] != twin["etag"]
    updated = await api.put(
        f"/devices/{creds.device_id}",
        headers={"If-Match": device["etag"]},
        json={"deviceId": creds.device_id, "status": "disabled"},
    )
    assert updated.status_code == 200
    again = (await api.get(f"/twins/{creds.device_id}")).json()
    assert again["deviceEtag"] == updated.json()["etag"] != device["etag"]
    assert again["etag"] == twin["etag"]


async def test_connection_strings_carry_the_hostname_the_hub_serves_as(hub: Hub) -> None:
    result = await arun_cli("connection-string", "--data-dir", hub.settings.data_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"HostName={hub.settings.hostname};")
    assert "note" not in result.stderr


async def test_connection_strings_follow_the_hub_hostname_from_its_data_dir(tmp_path: Any) -> None:
    from tests.e2e.conftest import hub_settings

    settings = hub_settings(tmp_path / "data").model_copy(update={"hostname": "hub.example.test"})
    async with Hub(settings):
        pass
    result = await arun_cli("connection-string", "--data-dir", settings.data_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HostName=hub.example.test;")
    flagged = await arun_cli("connection-string", "--data-dir", settings.data_dir, "--hostname", "other.test")
    assert flagged.stdout.startswith("HostName=other.test;")


# -- 6. unknown keys are errors, read-only echoes are not --------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("PATCH", "/twins/{id}", {"floor": 5}, "floor"),
        ("PATCH", "/twins/{id}", {"properties": {"desired": {"a": 1}, "wanted": {}}}, "wanted"),
        ("PUT", "/twins/{id}", {"tags": {}, "tag": {"a": 1}}, "tag"),
        ("PUT", "/devices/{id}", {"deviceId": "{id}", "statuss": "disabled"}, "statuss"),
        ("PUT", "/devices/{id}", {"authentication": {"type": "sas", "symetricKey": {}}}, "authentication.symetricKey"),
        ("POST", "/devices", [{"id": "bulk-unknown", "importMode": "create", "colour": "red"}], "colour"),
        ("POST", "/twins/{id}/methods", {"methodName": "m", "responseTimeout": 5}, "responseTimeout"),
        ("POST", "/devices/query", {"query": "SELECT * FROM devices", "top": 5}, "top"),
        ("PUT", "/jobs/v2/unknown-field", {"type": "scheduleUpdateTwin", "queryCondition": "*",
                                           "updateTwin": {"tags": {"a": 1}}, "maxExecutionTime": 5},
         "maxExecutionTime"),
        ("PUT", "/jobs/v2/unknown-method-field", {"type": "scheduleDeviceMethod", "queryCondition": "*",
                                                  "cloudToDeviceMethod": {"methodName": "m", "retries": 2}},
         "cloudToDeviceMethod.retries"),
        ("PUT", "/certificates/unknown-field", {"properties": {"certificate": "x", "pem": "y"}}, "properties.pem"),
    ],
)  # fmt: skip
async def test_an_unknown_field_is_a_400_that_names_it(
    api: httpx.AsyncClient, method: str, path: str, body: Any, field: str
) -> None:
    creds = await create_device(api)
    text = json.dumps(body).replace("{id}", creds.device_id)
    before = (await api.get(f"/twins/{creds.device_id}")).json()
    response = await api.request(
        method, path.replace("{id}", creds.device_id), content=text, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.headers["iothub-errorcode"] == "ArgumentInvalid"
    assert repr(field) in error_text(response)
    assert (await api.get(f"/twins/{creds.device_id}")).json() == before


async def test_the_read_only_fields_sdks_echo_back_are_accepted(api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    # azure-iot-hub's replace_twin and update_twin send back a whole Twin model.
    twin = (await api.get(f"/twins/{creds.device_id}")).json()
    twin["tags"] = {"site": "b43"}
    twin["properties"]["desired"]["floor"] = 3
    replaced = await api.put(f"/twins/{creds.device_id}", json=twin, headers={"If-Match": twin["etag"]})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["tags"] == {"site": "b43"}
    assert replaced.json()["properties"]["desired"]["floor"] == 3
    # azure-iothub's Registry.update sends back a whole Device (cloudToDeviceMessageCount as a string).
    device = (await api.get(f"/devices/{creds.device_id}")).json()
    device.update(status="disabled", cloudToDeviceMessageCount="0", connectionState="disconnected")
    updated = await api.put(f"/devices/{creds.device_id}", json=device, headers={"If-Match": '"*"'})
    assert updated.status_code == 200, updated.text
    assert updated.json()["status"] == "disabled"


# -- 7. a job is queued when created, then scheduled --------------------------------------------


async def test_a_job_for_later_is_created_queued_then_scheduled(api: httpx.AsyncClient) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = {
        "type": "scheduleDeviceMethod",
        "queryCondition": "*",
        "cloudToDeviceMethod": {"methodName": "lockDoor"},
        "startTime": later,
    }
    created = await api.put(f"/jobs/v2/later-job{API}", json=body)
    assert created.status_code == 200, created.text
    assert created.json()["status"] == "queued"
    async with asyncio.timeout(10):
        while (await api.get("/jobs/v2/later-job")).json()["status"] != "scheduled":
            await asyncio.sleep(0.05)
        # The runner writes its events in the background, just after the change.
        while len(events := [e["message"] for e in (await api.get("/jobs/v2/later-job/events")).json()]) < 2:
            await asyncio.sleep(0.05)
    assert events[0] == "job created (queued)"
    assert events[1].endswith("; scheduled")


# -- the 2016 preview's shapes ------------------------------------------------------------------


async def test_a_top_level_desired_patches_properties_desired(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    async with mqtt_client(hub, creds) as device:
        await device.subscribe("$iothub/twin/PATCH/properties/desired/#")
        response = await api.patch(f"/twins/{creds.device_id}", json={"desired": {"floor": 5}})
        assert response.status_code == 200, response.text
        assert response.json()["properties"]["desired"]["floor"] == 5
        pushed = await next_message(device, "$iothub/twin/PATCH/properties/desired/")
        assert json.loads(bytes(pushed.payload))["floor"] == 5  # type: ignore[arg-type]
    both = await api.patch(
        f"/twins/{creds.device_id}", json={"desired": {"floor": 6}, "properties": {"desired": {"floor": 7}}}
    )
    assert both.status_code == 400
    assert "both desired and properties.desired" in error_text(both)


async def test_the_2016_tutorial_jobs(hub: Hub, api: httpx.AsyncClient) -> None:
    """The jobs tutorial of 2016: twinPatch {etag: '*', desired: {...}}; a queryCondition
    spelled SELECT * FROM devices WHERE ...; a method's timeout called timeoutInSeconds."""
    creds = await create_device(api)
    condition = f"SELECT * FROM devices WHERE deviceId IN ['{creds.device_id}']"
    twin_job = {
        "type": "scheduleUpdateTwin",
        "queryCondition": condition,
        "updateTwin": {"etag": "*", "desired": {"building": "43", "floor": 3}},
    }
    assert (await api.put(f"/jobs/v2/tutorial-twin{API}", json=twin_job)).status_code == 200
    twin = await wait_for_twin(api, creds.device_id, lambda t: "building" in t["properties"]["desired"])
    assert (twin["properties"]["desired"]["building"], twin["properties"]["desired"]["floor"]) == ("43", 3)

    async with mqtt_client(hub, creds) as device:
        await device.subscribe("$iothub/methods/POST/#")
        method_job = {
            "type": "scheduleDeviceMethod",
            "queryCondition": condition,
            "cloudToDeviceMethod": {"methodName": "lockDoor", "payload": None, "timeoutInSeconds": 45},
        }
        created = await api.put(f"/jobs/v2/tutorial-method{API}", json=method_job)
        assert created.status_code == 200, created.text
        assert created.json()["cloudToDeviceMethod"]["responseTimeoutInSeconds"] == 45
        request = await next_message(device, "$iothub/methods/POST/lockDoor/")
        rid = str(request.topic).split("$rid=")[1]
        await device.publish(f"$iothub/methods/res/200/?$rid={rid}", b"")
        async with asyncio.timeout(15):
            while (await api.get("/jobs/v2/tutorial-method")).json()["status"] != "completed":
                await asyncio.sleep(0.05)


async def test_a_method_call_with_the_preview_timeout_name(hub: Hub, api: httpx.AsyncClient) -> None:
    """Microsoft's dmpatterns samples still send timeoutInSeconds (azure-iothub adds the rest)."""
    creds = await create_device(api)
    async with mqtt_client(hub, creds) as device:
        await device.subscribe("$iothub/methods/POST/#")
        call = asyncio.create_task(
            api.post(
                f"/twins/{creds.device_id}/methods{API}",
                json={
                    "methodName": "reboot",
                    "payload": None,
                    "timeoutInSeconds": 30,
                    "responseTimeoutInSeconds": 30,
                    "connectTimeoutInSeconds": 0,
                },
            )
        )
        request = await next_message(device, "$iothub/methods/POST/reboot/")
        rid = str(request.topic).split("$rid=")[1]
        await device.publish(f"$iothub/methods/res/200/?$rid={rid}", b'{"rebooting": true}')
        response = await call
    assert response.status_code == 200, response.text
    assert response.json() == {"status": 200, "payload": {"rebooting": True}}
