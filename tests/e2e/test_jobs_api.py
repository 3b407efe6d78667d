"""/jobs/v2 through real HTTP: create, validate, read, cancel, list with paging, events, and the SDK."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from hub.runtime import Hub
from job_client.jobs import AsyncJobClient
from job_client.models import MethodParams
from tests.e2e.conftest import connection_string


def method_job(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "scheduleDeviceMethod",
        "queryCondition": "tags.region = 'EU'",
        "cloudToDeviceMethod": {
            "methodName": "reboot",
            "payload": {"delay": 1},
            "responseTimeoutInSeconds": 30,
            "connectTimeoutInSeconds": 0,
        },
        "maxExecutionTimeInSeconds": 600,
    }
    body.update(overrides)
    return body


def twin_job(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "scheduleUpdateTwin",
        "queryCondition": "*",
        "updateTwin": {"etag": "*", "tags": {"fw": "2.0"}, "properties": {"desired": {"interval": 5}}},
    }
    body.update(overrides)
    return body


def later() -> str:
    """A start time the runner leaves alone for the whole test: the job stays scheduled."""
    return (datetime.now(UTC) + timedelta(hours=1)).isoformat()


async def until_status(api: httpx.AsyncClient, job_id: str, status: str, timeout: float = 10) -> dict[str, Any]:
    """The job's document once the runner has moved it to ``status``."""
    async with asyncio.timeout(timeout):
        while True:
            doc: dict[str, Any] = (await api.get(f"/jobs/v2/{job_id}")).json()
            if doc["status"] == status:
                return doc
            await asyncio.sleep(0.05)


def error_code(response: httpx.Response) -> str:
    return response.headers.get("iothub-errorcode", "")


async def test_create_method_job_is_queued(api: httpx.AsyncClient) -> None:
    response = await api.put("/jobs/v2/job-1?api-version=2021-04-12", json=method_job(jobId="job-1"))
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["jobId"] == "job-1"
    assert doc["type"] == "scheduleDeviceMethod"
    assert doc["status"] == "queued"
    assert doc["queryCondition"] == "tags.region = 'EU'"
    assert doc["endTime"] is None
    assert doc["maxExecutionTimeInSeconds"] == 600
    assert doc["cloudToDeviceMethod"] == {
        "methodName": "reboot",
        "payload": {"delay": 1},
        "responseTimeoutInSeconds": 30,
        "connectTimeoutInSeconds": 0,
    }
    assert "updateTwin" not in doc
    assert doc["deviceJobStatistics"]["deviceCount"] == 0
    assert doc["createdTime"].endswith("Z")
    assert doc["startTime"].endswith("Z")


async def test_create_twin_job_scheduled_for_later(api: httpx.AsyncClient) -> None:
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    response = await api.put("/jobs/v2/twin-1", json=twin_job(startTime=later))
    assert response.status_code == 200, response.text
    doc = response.json()
    # IoT Hub's sequence: the create answers queued; a job that starts later becomes scheduled.
    assert doc["status"] == "queued"
    assert (await until_status(api, "twin-1", "scheduled"))["startTime"] == doc["startTime"]
    assert doc["type"] == "scheduleUpdateTwin"
    assert doc["updateTwin"] == {"tags": {"fw": "2.0"}, "properties": {"desired": {"interval": 5}}}
    assert doc["maxExecutionTimeInSeconds"] == 3600
    assert "cloudToDeviceMethod" not in doc


async def test_duplicate_job_id_is_409(api: httpx.AsyncClient) -> None:
    assert (await api.put("/jobs/v2/dup", json=method_job())).status_code == 200
    response = await api.put("/jobs/v2/dup", json=twin_job())
    assert response.status_code == 409
    assert error_code(response) == "JobAlreadyExists"


@pytest.mark.parametrize(
    ("job_id", "body", "fragment"),
    [
        ("bad_id", method_job(), "jobId"),
        ("x" * 65, method_job(), "jobId"),
        ("ok", method_job(jobId="other"), "differs"),
        ("ok", method_job(type="scheduleSomething"), "type must be"),
        ("ok", {**method_job(), "updateTwin": {"tags": {"a": 1}}}, "exactly one"),
        ("ok", {k: v for k, v in method_job().items() if k != "cloudToDeviceMethod"}, "exactly one"),
        ("ok", method_job(cloudToDeviceMethod={"methodName": "bad name"}), "methodName"),
        ("ok", method_job(cloudToDeviceMethod={"methodName": "m" * 129}), "methodName"),
        ("ok", method_job(cloudToDeviceMethod={"methodName": "m", "payload": "x" * 140_000}), "payload"),
        ("ok", method_job(cloudToDeviceMethod={"methodName": "m", "responseTimeoutInSeconds": 0}), "responseTimeout"),
        ("ok", method_job(cloudToDeviceMethod={"methodName": "m", "connectTimeoutInSeconds": 301}), "connectTimeout"),
        ("ok", method_job(maxExecutionTimeInSeconds=0), "maxExecutionTimeInSeconds"),
        ("ok", method_job(maxExecutionTimeInSeconds=-5), "maxExecutionTimeInSeconds"),
        ("ok", method_job(startTime="tomorrow-ish"), "startTime"),
        ("ok", twin_job(updateTwin={"properties": {"reported": {"a": 1}}}), "properties.reported"),
        ("ok", twin_job(updateTwin={"tags": {"a": 1}, "etag": "AAAA"}), "etag"),
        ("ok", method_job(queryCondition=""), "queryCondition"),
        ("ok", method_job(queryCondition="tags.x = "), "found end of query"),
    ],
)
async def test_invalid_requests_are_400(
    api: httpx.AsyncClient, job_id: str, body: dict[str, Any], fragment: str
) -> None:
    response = await api.put(f"/jobs/v2/{job_id}", json=body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["ExceptionMessage"]
    assert (await api.get(f"/jobs/v2/{job_id}")).status_code in (400, 404)


async def test_get_job_with_statistics(api: httpx.AsyncClient) -> None:
    await api.put("/jobs/v2/g1", json=method_job(startTime=later()))
    await until_status(api, "g1", "scheduled")
    response = await api.get("/jobs/v2/g1")
    assert response.status_code == 200
    doc = response.json()
    assert doc["status"] == "scheduled"
    assert doc["deviceJobStatistics"] == {
        "deviceCount": 0,
        "failedCount": 0,
        "succeededCount": 0,
        "runningCount": 0,
        "pendingCount": 0,
        "canceledCount": 0,
    }


async def test_cancel_scheduled_then_again(api: httpx.AsyncClient) -> None:
    await api.put("/jobs/v2/c1", json=method_job(startTime=later()))
    response = await api.post("/jobs/v2/c1/cancel")
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["status"] == "cancelled"
    assert doc["endTime"] is not None
    assert (await api.get("/jobs/v2/c1")).json()["status"] == "cancelled"
    again = await api.post("/jobs/v2/c1/cancel")
    assert again.status_code == 400
    assert "already cancelled" in again.json()["ExceptionMessage"]


async def test_unknown_job_is_404(api: httpx.AsyncClient) -> None:
    for response in (
        await api.get("/jobs/v2/nope"),
        await api.post("/jobs/v2/nope/cancel"),
        await api.get("/jobs/v2/nope/devices"),
        await api.get("/jobs/v2/nope/events"),
    ):
        assert response.status_code == 404, response.text
        assert error_code(response) == "JobNotFound"


async def _walk(api: httpx.AsyncClient, params: dict[str, str], page: int) -> tuple[list[str], int]:
    ids: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        headers = {"x-ms-max-item-count": str(page)}
        if token:
            headers["x-ms-continuation"] = token
        response = await api.get("/jobs/v2/query", params=params, headers=headers)
        assert response.status_code == 200, response.text
        pages += 1
        ids.extend(doc["jobId"] for doc in response.json())
        token = response.headers.get("x-ms-continuation")
        if token is None:
            return ids, pages


async def test_query_by_type_and_status_with_paging(api: httpx.AsyncClient) -> None:
    for i in range(5):
        assert (await api.put(f"/jobs/v2/m-{i}", json=method_job(startTime=later()))).status_code == 200
    for i in range(2):
        assert (await api.put(f"/jobs/v2/t-{i}", json=twin_job(startTime=later()))).status_code == 200
    for job_id in ("m-0", "m-1", "m-2", "m-3", "m-4", "t-0", "t-1"):
        await until_status(api, job_id, "scheduled")
    await api.post("/jobs/v2/m-1/cancel")

    ids, pages = await _walk(api, {"jobType": "scheduleDeviceMethod"}, 2)
    assert ids == [f"m-{i}" for i in range(5)]
    assert pages == 3
    all_ids, _ = await _walk(api, {}, 2)
    assert sorted(all_ids) == sorted([f"m-{i}" for i in range(5)] + ["t-0", "t-1"])
    scheduled, _ = await _walk(api, {"jobType": "scheduleDeviceMethod", "jobStatus": "scheduled"}, 2)
    assert scheduled == ["m-0", "m-2", "m-3", "m-4"]
    cancelled, _ = await _walk(api, {"jobStatus": "cancelled"}, 2)
    assert cancelled == ["m-1"]


# The job listing exactly as the SDKs send it (tests/compat runs the SDKs themselves).
PYTHON_SDK_HEADERS = {  # azure-iot-hub 2.7: IoTHubJobManager.query_scheduled_jobs
    "Accept": "application/json",
    "User-Agent": "python/3.11.7 (Linux-6.1-x86_64-with-glibc2.36) msrest/0.7.1 iothubgatewayserviceapis/2021-04-12",
}
NODE_SDK_HEADERS = {  # azure-iothub 1.16: JobClient.createQuery(...).next()
    "Content-Type": "application/json; charset=utf-8",
    "User-Agent": "azure-iothub/1.16.6 (node v20.20.2; Debian 12; x64)",
    "x-ms-max-item-count": "2",
}


async def _schedule_method_jobs(api: httpx.AsyncClient, count: int) -> None:
    for i in range(count):
        assert (await api.put(f"/jobs/v2/m-{i}", json=method_job(startTime=later()))).status_code == 200


async def test_job_listing_for_the_python_sdk_is_its_query_result_object(api: httpx.AsyncClient) -> None:
    await _schedule_method_jobs(api, 3)
    url = "/jobs/v2/query?api-version=2021-04-12&jobType=scheduleDeviceMethod&jobStatus=scheduled"
    response = await api.get(url, headers=PYTHON_SDK_HEADERS)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"type", "items", "continuationToken"}
    assert body["type"] == "jobResponse"
    assert [job["jobId"] for job in body["items"]] == ["m-0", "m-1", "m-2"]
    assert body["continuationToken"] is None
    paged = await api.get(url, headers={**PYTHON_SDK_HEADERS, "x-ms-max-item-count": "2"})
    assert paged.json()["continuationToken"] == paged.headers["x-ms-continuation"]


async def test_job_listing_for_other_clients_is_an_array(api: httpx.AsyncClient) -> None:
    await _schedule_method_jobs(api, 3)
    url = "/jobs/v2/query?api-version=2021-04-12&jobType=scheduleDeviceMethod"
    response = await api.get(url, headers=NODE_SDK_HEADERS)
    assert response.status_code == 200, response.text
    assert [job["jobId"] for job in response.json()] == ["m-0", "m-1"]
    assert response.headers["x-ms-item-type"] == "jobResponse"
    token = response.headers["x-ms-continuation"]
    rest = await api.get(url, headers={**NODE_SDK_HEADERS, "x-ms-continuation": token})
    assert [job["jobId"] for job in rest.json()] == ["m-2"]
    assert "x-ms-continuation" not in rest.headers


async def test_query_rejects_bad_filters_and_tokens(api: httpx.AsyncClient) -> None:
    assert (await api.get("/jobs/v2/query", params={"jobType": "export"})).status_code == 400
    assert (await api.get("/jobs/v2/query", params={"jobStatus": "done"})).status_code == 400
    bad = await api.get("/jobs/v2/query", headers={"x-ms-continuation": "garbage!"})
    assert bad.status_code == 400
    assert (await api.get("/jobs/v2/query", headers={"x-ms-max-item-count": "0"})).status_code == 400


async def test_device_results_empty_before_the_start(api: httpx.AsyncClient) -> None:
    await api.put("/jobs/v2/d1", json=method_job(startTime=later()))
    response = await api.get("/jobs/v2/d1/devices", params={"status": "pending"})
    assert response.status_code == 200
    assert response.json() == []
    assert (await api.get("/jobs/v2/d1/devices", params={"status": "weird"})).status_code == 400


async def test_events_record_creation_and_cancel(api: httpx.AsyncClient) -> None:
    await api.put("/jobs/v2/e1", json=method_job(startTime=later()))
    await api.post("/jobs/v2/e1/cancel")
    response = await api.get("/jobs/v2/e1/events")
    assert response.status_code == 200
    events = response.json()
    assert [e["type"] for e in events] == ["statusChanged", "statusChanged"]
    assert "created" in events[0]["message"]
    assert "cancelled" in events[1]["message"]
    assert all(e["time"].endswith("Z") and e["deviceId"] is None for e in events)


async def test_sdk_round_trip(hub: Hub) -> None:
    assert hub.endpoints is not None
    async with AsyncJobClient.from_connection_string(connection_string(hub), url=hub.endpoints.http_url) as client:
        tomorrow = datetime.now(UTC) + timedelta(days=1)
        created = await client.schedule_device_method("sdk-1", "*", MethodParams("ping", {"n": 1}), start_time=tomorrow)
        assert created.job_id == "sdk-1"
        assert str(created.status) == "queued"
        twin = await client.schedule_twin_update(
            "sdk-2", "tags.x = 1", {"tags": {"y": 2}}, start_time=datetime.now(UTC) + timedelta(days=1)
        )
        assert str(twin.status) == "queued"
        async with asyncio.timeout(10):  # the runner makes a job that starts later scheduled
            while str((fetched := await client.get_job("sdk-1")).status) != "scheduled":
                await asyncio.sleep(0.05)
        assert fetched.cloud_to_device_method is not None
        assert fetched.cloud_to_device_method["methodName"] == "ping"
        assert fetched.end_time is None
        cancelled = await client.cancel_job("sdk-1")
        assert str(cancelled.status) == "cancelled"
        assert cancelled.is_terminal
        listed = [job.job_id async for job in client.query_jobs(page_size=1)]
        assert listed == ["sdk-1", "sdk-2"]
        methods = [job.job_id async for job in client.query_jobs(job_type="scheduleDeviceMethod")]
        assert methods == ["sdk-1"]
        events = await client.list_events("sdk-1")
        assert len(events) == 3  # created (queued), scheduled, cancelled
        assert [r async for r in client.list_device_results("sdk-1")] == []
