"""``/metrics`` counts what operators watch: finished and aborted jobs, device results,
retries and schedule runs. Counters are process-wide, so each test compares before and after."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from device_sim import Behaviours
from device_sim.behaviours import MethodProfile
from hub.runtime import Hub
from job_client import AsyncRegistryClient
from tests.e2e.conftest import fleet_of

LOCK = {"methodName": "lockDoor", "payload": {}, "responseTimeoutInSeconds": 10}


async def counters(api: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await api.get("/metrics")
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        if family.name.startswith("fleethub_")
        for sample in family.samples
        if sample.name.endswith("_total")
    }


def delta(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def finished(api: httpx.AsyncClient, path: str) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            doc: dict[str, Any] = (await api.get(path)).json()
            if doc["status"] in ("completed", "failed", "cancelled"):
                return doc
            await asyncio.sleep(0.05)


async def test_aborts_retries_and_device_results_are_counted(
    hub: Hub, api: httpx.AsyncClient, registry: AsyncRegistryClient
) -> None:
    broken = Behaviours(profiles={"lockDoor": MethodProfile(failure_rate=1.0)})
    async with fleet_of(hub, registry, 2, "m-bad-", broken), fleet_of(hub, registry, 3, "m-ok-"):
        before = await counters(api)
        body = {
            "type": "scheduleDeviceMethod",
            "cloudToDeviceMethod": LOCK,
            "queryCondition": "*",
            "rollout": {"maxConcurrency": 1},
            "retry": {"maxAttempts": 2, "backoffSeconds": 0, "retryOn": ["failed"]},
            # Retried failures are not final: the two broken devices fail for good last, 2 of 5 = 40%.
            "abort": [{"failureType": "failed", "thresholdPercentage": 40, "minNumberOfExecutedDevices": 5}],
        }
        assert (await api.put("/jobs/v2/counted", json=body)).status_code == 200
        job = await finished(api, "/jobs/v2/counted")
        assert job["status"] == "failed"
        after = await counters(api)
    method = "scheduleDeviceMethod"
    kind = {"type": method, "status": "failed", "reason": "abort"}
    assert delta(before, after, "fleethub_jobs_finished_total", **kind) == 1
    assert delta(before, after, "fleethub_job_retries_total", outcome="failed") == 2  # one per broken device
    assert delta(before, after, "fleethub_job_device_results_total", type=method, status="failed") == 2
    assert delta(before, after, "fleethub_job_device_results_total", type=method, status="completed") == 3


async def test_schedule_runs_are_counted(api: httpx.AsyncClient) -> None:
    before = await counters(api)
    body = {
        "job": {"type": "scheduleUpdateTwin", "updateTwin": {"tags": {"a": 1}}, "queryCondition": "*"},
        "recurrence": {"frequency": "day", "startTime": "2099-01-01T00:00:00Z"},
    }
    assert (await api.put("/schedules/counted", json=body)).status_code == 200
    assert (await api.post("/schedules/counted/run")).status_code == 200
    after = await counters(api)
    assert delta(before, after, "fleethub_schedule_runs_total", outcome="requested") == 1
