"""``/schedules`` through a real hub over HTTP: create/replace, read, list with paging, enable,
disable, run now, runs, delete; 404s, 400s and auth."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx

from hub.runtime import Hub
from tests.e2e.conftest import service_token
from tests.e2e.test_rest_auth_matrix import assert_iothub_error

TEMPLATE: dict[str, Any] = {
    "type": "scheduleDeviceMethod",
    "queryCondition": "tags.site = 'nowhere'",
    "cloudToDeviceMethod": {"methodName": "reboot", "payload": {"delay": 1}, "responseTimeoutInSeconds": 10},
    "maxExecutionTimeInSeconds": 60,
}
DAILY = {"frequency": "day", "startTime": "2030-01-01T03:00:00", "schedule": {"hours": [3], "minutes": [0]}}


def sid() -> str:
    return f"api-{uuid.uuid4().hex[:8]}"


async def put(api: httpx.AsyncClient, schedule_id: str, **fields: Any) -> httpx.Response:
    body: dict[str, Any] = {"job": TEMPLATE, "recurrence": DAILY, **fields}
    return await api.put(f"/schedules/{schedule_id}", json=body)


async def test_create_read_replace_and_delete(api: httpx.AsyncClient) -> None:
    s = sid()
    created = await put(api, s, timeZone="Europe/Berlin", overlap="queue", scheduleId=s)
    assert created.status_code == 200, created.text
    doc = created.json()
    assert set(doc) == {
        "scheduleId",
        "job",
        "recurrence",
        "timeZone",
        "enabled",
        "overlap",
        "state",
        "nextRunTime",
        "lastRunTime",
        "lastRunJobId",
        "lastRunStatus",
        "runCount",
        "faultReason",
        "createdTime",
        "updatedTime",
    }
    assert doc["scheduleId"] == s
    assert doc["job"] == TEMPLATE
    assert doc["recurrence"] == {
        "frequency": "day",
        "interval": 1,
        "schedule": {"hours": [3], "minutes": [0]},
        "startTime": "2030-01-01T02:00:00.0000000Z",  # 03:00 in Berlin
    }
    assert (doc["timeZone"], doc["enabled"], doc["overlap"], doc["state"]) == (
        "Europe/Berlin",
        True,
        "queue",
        "enabled",
    )
    assert doc["nextRunTime"] == "2030-01-01T02:00:00.0000000Z"
    assert (doc["lastRunTime"], doc["lastRunJobId"], doc["lastRunStatus"], doc["runCount"], doc["faultReason"]) == (
        None,
        None,
        None,
        0,
        None,
    )
    assert doc["createdTime"] == doc["updatedTime"]

    got = await api.get(f"/schedules/{s}")
    assert got.status_code == 200
    assert got.json() == doc

    replaced = await put(api, s, recurrence={"cron": "0 0 12 * * *"}, enabled=False)
    assert replaced.status_code == 200, replaced.text
    again = replaced.json()
    assert (again["state"], again["enabled"], again["nextRunTime"], again["timeZone"], again["overlap"]) == (
        "disabled",
        False,
        None,
        "UTC",
        "skip",
    )
    assert again["recurrence"]["cron"] == "0 0 12 * * *"
    assert again["createdTime"] == doc["createdTime"]

    deleted = await api.delete(f"/schedules/{s}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert_iothub_error(await api.get(f"/schedules/{s}"), 404, "ScheduleNotFound", says=s)


async def test_unknown_schedules_are_404_everywhere(api: httpx.AsyncClient) -> None:
    s = sid()
    for method, path in [
        ("GET", f"/schedules/{s}"),
        ("DELETE", f"/schedules/{s}"),
        ("POST", f"/schedules/{s}/run"),
        ("POST", f"/schedules/{s}/enable"),
        ("POST", f"/schedules/{s}/disable"),
        ("GET", f"/schedules/{s}/runs"),
    ]:
        assert_iothub_error(await api.request(method, path), 404, "ScheduleNotFound", says=s)


async def test_bad_bodies_get_400_naming_the_field(api: httpx.AsyncClient) -> None:
    s = sid()
    cases: list[tuple[Any, str]] = [
        ([], "body"),
        ({"recurrence": DAILY}, "job is required"),
        ({"job": TEMPLATE}, "recurrence is required"),
        ({"job": {**TEMPLATE, "jobId": "x"}, "recurrence": DAILY}, "job.jobId is not allowed"),
        ({"job": {**TEMPLATE, "startTime": "2030-01-01T00:00:00Z"}, "recurrence": DAILY}, "job.startTime"),
        ({"job": {**TEMPLATE, "type": "nope"}, "recurrence": DAILY}, "job: type must be one of"),
        ({"job": TEMPLATE, "recurrence": {"frequency": "day", "interval": -1}}, "recurrence.interval"),
        ({"job": TEMPLATE, "recurrence": {"cron": "bad"}}, "recurrence.cron"),
        ({"job": TEMPLATE, "recurrence": DAILY, "timeZone": "Nowhere/Town"}, "timeZone"),
        ({"job": TEMPLATE, "recurrence": DAILY, "enabled": "no"}, "enabled must be true or false"),
        ({"job": TEMPLATE, "recurrence": DAILY, "overlap": "later"}, "overlap must be one of"),
        ({"job": TEMPLATE, "recurrence": DAILY, "scheduleId": "other"}, "differs"),
        ({"job": TEMPLATE, "recurrence": DAILY, "extra": 1}, "extra is not a schedule field"),
    ]
    for body, says in cases:
        response = await api.put(f"/schedules/{s}", json=body)
        assert_iothub_error(response, 400, "ArgumentInvalid", says=says)
    too_long = "a" * 48
    assert_iothub_error(await put(api, too_long), 400, "ArgumentInvalid", says="scheduleId")
    assert_iothub_error(await api.get(f"/schedules/{s}"), 404, "ScheduleNotFound")
    for top in ("0", "1001", "many"):
        assert_iothub_error(await api.get(f"/schedules/{s}/runs", params={"top": top}), 400, "ArgumentInvalid")
    assert_iothub_error(
        await api.get("/schedules", headers={"x-ms-max-item-count": "0"}), 400, "ArgumentInvalid", says="x-ms-max"
    )
    assert_iothub_error(await api.get("/schedules", headers={"x-ms-continuation": "garbage"}), 400, "ArgumentInvalid")


async def test_listing_pages_in_id_order(api: httpx.AsyncClient) -> None:
    prefix = sid()
    ids = [f"{prefix}-{i}" for i in range(5)]
    for schedule_id in reversed(ids):
        assert (await put(api, schedule_id)).status_code == 200
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        headers = {"x-ms-max-item-count": "2"}
        if token:
            headers["x-ms-continuation"] = token
        response = await api.get("/schedules", headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["x-ms-item-type"] == "schedule"
        page = response.json()
        assert len(page) <= 2
        seen.extend(item["scheduleId"] for item in page)
        pages += 1
        token = response.headers.get("x-ms-continuation")
        if not token:
            break
    assert seen == sorted(ids)
    assert pages == 3
    everything = (await api.get("/schedules")).json()
    assert [item["scheduleId"] for item in everything] == sorted(ids)
    # A token from another listing (the jobs query's form) is refused.
    raw = json.dumps({"v": 1, "s": "jobs::", "after": "x"}).encode()
    foreign = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    refused = await api.get("/schedules", headers={"x-ms-continuation": foreign})
    assert_iothub_error(refused, 400, "ArgumentInvalid", says="different listing")


async def test_run_now_enable_disable_and_runs(api: httpx.AsyncClient) -> None:
    s = sid()
    assert (await put(api, s, enabled=False)).status_code == 200
    run = await api.post(f"/schedules/{s}/run")
    assert run.status_code == 200, run.text
    job = run.json()
    assert job["jobId"].startswith(f"{s}-")
    assert len(job["jobId"]) == len(s) + 17
    assert job["scheduleId"] == s
    assert job["type"] == "scheduleDeviceMethod"
    assert job["cloudToDeviceMethod"]["methodName"] == "reboot"
    assert job["status"] in ("queued", "running", "completed")

    second = await api.post(f"/schedules/{s}/run")
    if second.status_code == 409:  # the same second: refused, not a second job with the same id
        assert_iothub_error(second, 409, "JobAlreadyExists", says="a run of this schedule started this second")
    else:
        assert second.status_code == 200, second.text

    doc = (await api.get(f"/schedules/{s}")).json()
    assert doc["state"] == "disabled"
    assert doc["runCount"] == (2 if second.status_code == 200 else 1)
    assert doc["lastRunJobId"] is not None
    assert doc["lastRunStatus"] in ("queued", "running", "completed")

    runs = await api.get(f"/schedules/{s}/runs")
    assert runs.status_code == 200
    items = runs.json()
    assert len(items) == doc["runCount"]
    assert items[0]["jobId"] == doc["lastRunJobId"]
    assert set(items[0]) == {
        "jobId",
        "status",
        "createdTime",
        "startTime",
        "endTime",
        "failureReason",
        "statusMessage",
        "deviceJobStatistics",
    }
    assert set(items[0]["deviceJobStatistics"]) >= {"deviceCount", "succeededCount", "failedCount"}
    top_one = (await api.get(f"/schedules/{s}/runs", params={"top": 1})).json()
    assert [item["jobId"] for item in top_one] == [items[0]["jobId"]]
    events = await api.get(f"/jobs/v2/{job['jobId']}/events")
    assert events.status_code == 200
    assert f"run of schedule {s}: run now, by request" in [e["message"] for e in events.json()]

    enabled = await api.post(f"/schedules/{s}/enable")
    assert enabled.status_code == 200
    assert (enabled.json()["state"], enabled.json()["enabled"]) == ("enabled", True)
    assert enabled.json()["nextRunTime"] == "2030-01-01T03:00:00.0000000Z"
    disabled = await api.post(f"/schedules/{s}/disable")
    assert disabled.status_code == 200
    assert (disabled.json()["state"], disabled.json()["nextRunTime"]) == ("disabled", None)

    # Deleting the schedule leaves its runs as jobs.
    assert (await api.delete(f"/schedules/{s}")).status_code == 204
    kept = await api.get(f"/jobs/v2/{job['jobId']}")
    assert kept.status_code == 200
    assert kept.json()["scheduleId"] == s


async def test_schedules_need_service_connect(hub: Hub) -> None:
    assert hub.endpoints is not None
    s = sid()
    body = {"job": TEMPLATE, "recurrence": DAILY}
    async with httpx.AsyncClient(base_url=hub.endpoints.http_url, timeout=30) as anonymous:
        assert_iothub_error(await anonymous.put(f"/schedules/{s}", json=body), 401, "IotHubUnauthorizedAccess")
        assert_iothub_error(await anonymous.get("/schedules"), 401, "IotHubUnauthorizedAccess")
        reader = {"Authorization": service_token(hub, "registryRead")}
        assert_iothub_error(
            await anonymous.put(f"/schedules/{s}", json=body, headers=reader), 403, "IotHubUnauthorized"
        )
        service = {"Authorization": service_token(hub, "service")}
        response = await anonymous.put(f"/schedules/{s}", json=body, headers=service)
        assert response.status_code == 200, response.text
