"""A seconds-frequency schedule in real time: a hub, simulated devices over MQTT, and runs that
are ordinary method jobs which the job runner carries out."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from hub.runtime import Hub
from job_client import AsyncRegistryClient
from tests.e2e.conftest import fleet_of

DEVICES = 3


async def finished_runs(api: httpx.AsyncClient, schedule_id: str) -> list[dict[str, Any]]:
    response = await api.get(f"/schedules/{schedule_id}/runs", params={"top": 100})
    assert response.status_code == 200, response.text
    return [run for run in response.json() if run["status"] in ("completed", "failed", "cancelled")]


async def test_a_two_second_schedule_runs_method_jobs_on_every_device(
    hub: Hub, api: httpx.AsyncClient, registry: AsyncRegistryClient
) -> None:
    prefix = f"tick-{uuid.uuid4().hex[:6]}-"
    schedule_id = f"every2s-{uuid.uuid4().hex[:6]}"
    body = {
        "job": {
            "type": "scheduleDeviceMethod",
            "queryCondition": f"STARTSWITH(deviceId, '{prefix}')",
            "cloudToDeviceMethod": {"methodName": "lockDoor", "payload": {"why": "schedule"}},
            "maxExecutionTimeInSeconds": 60,
        },
        "recurrence": {"frequency": "second", "interval": 2},
    }
    async with fleet_of(hub, registry, DEVICES, prefix) as fleet:
        created = await api.put(f"/schedules/{schedule_id}", json=body)
        assert created.status_code == 200, created.text
        done: list[dict[str, Any]] = []
        async with asyncio.timeout(60):  # an upper bound only
            while len(done) < 2:
                await asyncio.sleep(0.2)
                done = await finished_runs(api, schedule_id)
        for run in done:
            assert run["jobId"].startswith(f"{schedule_id}-")
            assert run["status"] == "completed", run
            stats = run["deviceJobStatistics"]
            assert (stats["deviceCount"], stats["succeededCount"], stats["failedCount"]) == (DEVICES, DEVICES, 0)
            job = (await api.get(f"/jobs/v2/{run['jobId']}")).json()
            assert job["scheduleId"] == schedule_id
            log = [e["message"] for e in (await api.get(f"/jobs/v2/{run['jobId']}/events")).json()]
            assert any(m.startswith(f"run of schedule {schedule_id}: due at ") for m in log)
        assert fleet.stats().totals.methods_handled >= 2 * DEVICES

        disabled = await api.post(f"/schedules/{schedule_id}/disable")
        assert disabled.status_code == 200
        assert disabled.json()["state"] == "disabled"
        # A pass that was creating a run as the request came in still records it; after that, nothing.
        await asyncio.sleep(0.5)
        count = (await api.get(f"/schedules/{schedule_id}")).json()["runCount"]
        assert count >= 2
        await asyncio.sleep(4.5)  # two intervals and more: a run would have come due
        after = (await api.get(f"/schedules/{schedule_id}")).json()
        assert (after["state"], after["runCount"], after["nextRunTime"]) == ("disabled", count, None)
        runs = (await api.get(f"/schedules/{schedule_id}/runs", params={"top": 100})).json()
        assert len(runs) == count
        assert after["lastRunJobId"] == runs[0]["jobId"]
