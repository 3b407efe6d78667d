"""Rollout control on jobs through a real hub and simulated devices: pacing (rate, ramp,
concurrency) on an injected clock, abort criteria, retries with attempts shown, and
continuous jobs that take devices which come to match their query."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from device_sim import Behaviours
from device_sim.behaviours import MethodCall, MethodProfile, MethodReply
from hub.domain.devices import new_device
from hub.runtime import Hub
from job_client import AsyncRegistryClient
from job_client.jobs import AsyncJobClient
from tests.e2e.conftest import api_client, connection_string, fleet_of, hub_settings

LOCK = {"methodName": "lockDoor", "payload": {}, "responseTimeoutInSeconds": 10}


class VirtualClock:
    """Hub time that moves only when the hub waits on it: pacing and back-off take no real
    time, and the start times the hub records are exact multiples of its intervals."""

    def __init__(self) -> None:
        self._start = datetime.now(UTC)
        self._elapsed = 0.0

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        return self._elapsed

    async def sleep(self, seconds: float) -> None:
        self._elapsed += max(0.0, seconds)
        await asyncio.sleep(0)


async def put_job(api: httpx.AsyncClient, job_id: str, **fields: Any) -> dict[str, Any]:
    body = {"type": "scheduleDeviceMethod", "cloudToDeviceMethod": LOCK, "queryCondition": "*", **fields}
    response = await api.put(f"/jobs/v2/{job_id}", json=body)
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


async def finished(api: httpx.AsyncClient, job_id: str, timeout: float = 60) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            job: dict[str, Any] = (await api.get(f"/jobs/v2/{job_id}")).json()
            if job["status"] in ("completed", "failed", "cancelled"):
                return job
            await asyncio.sleep(0.05)


async def device_results(api: httpx.AsyncClient, job_id: str) -> dict[str, dict[str, Any]]:
    response = await api.get(f"/jobs/v2/{job_id}/devices", headers={"x-ms-max-item-count": "1000"})
    assert response.status_code == 200, response.text
    return {row["deviceId"]: row for row in response.json()}


async def event_log(api: httpx.AsyncClient, job_id: str, *, until: str) -> list[str]:
    """The job's log once an entry starting with ``until`` is in it (events are written in batches)."""
    async with asyncio.timeout(10):
        while True:
            messages = [e["message"] for e in (await api.get(f"/jobs/v2/{job_id}/events")).json()]
            if any(m.startswith(until) for m in messages):
                return messages
            await asyncio.sleep(0.05)


@pytest.fixture
async def virtual_hub(tmp_path: Path) -> AsyncIterator[Hub]:
    async with Hub(hub_settings(tmp_path / "data"), clock=VirtualClock()) as running:
        yield running


@pytest.fixture
async def clients(virtual_hub: Hub) -> AsyncIterator[tuple[httpx.AsyncClient, AsyncRegistryClient]]:
    assert virtual_hub.endpoints is not None
    registry = AsyncRegistryClient.from_connection_string(
        connection_string(virtual_hub), url=virtual_hub.endpoints.http_url
    )
    async with api_client(virtual_hub) as api, registry:
        yield api, registry


def start_gaps(results: dict[str, dict[str, Any]]) -> list[float]:
    starts = sorted(datetime.fromisoformat(row["startTimeUtc"]) for row in results.values())
    return [round((b - a).total_seconds(), 3) for a, b in itertools.pairwise(starts)]


# -- the request ---------------------------------------------------------------------------


async def test_controls_are_stored_and_returned(api: httpx.AsyncClient) -> None:
    controls = {
        "rollout": {"maxPerMinute": 120, "maxConcurrency": 4},
        "abort": {"criteria": [{"failureType": "all", "thresholdPercentage": 20, "minNumberOfExecutedDevices": 5}]},
        "retry": {"maxAttempts": 3, "backoffSeconds": 1, "retryOn": ["GatewayTimeout"]},
        "continuous": True,
    }
    created = await put_job(api, "with-controls", startTime="2099-01-01T00:00:00Z", **controls)
    fetched = (await api.get("/jobs/v2/with-controls")).json()
    for doc in (created, fetched):
        assert doc["rollout"] == {"maxPerMinute": 120, "maxConcurrency": 4}
        assert doc["abort"]["criteria"][0]["failureType"] == "all"
        assert doc["retry"]["maxAttempts"] == 3
        assert doc["retry"]["retryOn"] == ["GatewayTimeout"]
        assert doc["continuous"] is True
    plain = await put_job(api, "plain", startTime="2099-01-01T00:00:00Z")
    assert not {"rollout", "abort", "retry", "continuous", "scheduleId"} & set(plain)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"rollout": {"maxPerMinute": 0}}, "maxPerMinute"),
        ({"rollout": {"maxPerMinute": 10, "speed": 1}}, "speed"),
        ({"abort": {"criteria": []}}, "abort.criteria"),
        ({"abort": [{"failureType": "boom", "thresholdPercentage": 1, "minNumberOfExecutedDevices": 1}]}, "boom"),
        ({"retry": {"maxAttempts": 11}}, "maxAttempts"),
        ({"retry": {"maxAttempts": 2, "retryOn": ["Sometimes"]}}, "retryOn"),
        ({"continuous": "yes"}, "continuous"),
    ],
)
async def test_bad_controls_are_refused_with_the_field_named(
    api: httpx.AsyncClient, fields: dict[str, Any], reason: str
) -> None:
    response = await api.put(
        "/jobs/v2/bad",
        json={"type": "scheduleDeviceMethod", "cloudToDeviceMethod": LOCK, "queryCondition": "*", **fields},
    )
    assert response.status_code == 400
    assert reason in response.json()["Message"]
    assert (await api.get("/jobs/v2/bad")).status_code == 404


async def test_retry_is_refused_on_twin_jobs(api: httpx.AsyncClient) -> None:
    body = {
        "type": "scheduleUpdateTwin",
        "updateTwin": {"tags": {"a": 1}},
        "queryCondition": "*",
        "retry": {"maxAttempts": 2},
    }
    response = await api.put("/jobs/v2/twin-retry", json=body)
    assert response.status_code == 400
    assert "retry" in response.json()["Message"]


# -- pacing, on the hub's own (virtual) clock ----------------------------------------------


async def test_max_per_minute_spaces_device_starts(
    virtual_hub: Hub, clients: tuple[httpx.AsyncClient, AsyncRegistryClient]
) -> None:
    api, registry = clients
    async with fleet_of(virtual_hub, registry, 6, "paced-"):
        await put_job(api, "paced", rollout={"maxPerMinute": 30})
        job = await finished(api, "paced")
        assert job["status"] == "completed"
        assert job["deviceJobStatistics"]["succeededCount"] == 6
        # 30 a minute: the first at once, then one every 2 s.
        assert start_gaps(await device_results(api, "paced")) == [2.0] * 5


async def test_exponential_ramp_speeds_up_as_devices_are_notified(
    virtual_hub: Hub, clients: tuple[httpx.AsyncClient, AsyncRegistryClient]
) -> None:
    api, registry = clients
    ramp = {
        "baseRatePerMinute": 60,
        "incrementFactor": 2,
        "rateIncreaseCriteria": {"numberOfNotifiedDevices": 3},
    }
    async with fleet_of(virtual_hub, registry, 9, "ramp-"):
        await put_job(api, "ramp", rollout=ramp)
        job = await finished(api, "ramp")
        assert job["deviceJobStatistics"]["succeededCount"] == 9
        # 60/min until 3 notified, 120/min until 6, then 240/min.
        assert start_gaps(await device_results(api, "ramp")) == [1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25]


async def test_max_concurrency_bounds_calls_in_flight(
    hub: Hub, api: httpx.AsyncClient, registry: AsyncRegistryClient
) -> None:
    in_flight = 0
    peak = 0

    async def slow_lock(call: MethodCall) -> MethodReply:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        in_flight -= 1
        return MethodReply(200, {"locked": True})

    behaviours = Behaviours(handlers={"lockDoor": slow_lock})
    async with fleet_of(hub, registry, 12, "conc-", behaviours):
        await put_job(api, "conc", rollout={"maxConcurrency": 3})
        job = await finished(api, "conc")
        assert job["deviceJobStatistics"]["succeededCount"] == 12
        assert 1 <= peak <= 3


# -- abort -----------------------------------------------------------------------------------


async def test_failed_threshold_aborts_the_job_and_cancels_the_rest(
    hub: Hub, api: httpx.AsyncClient, registry: AsyncRegistryClient
) -> None:
    broken = Behaviours(profiles={"lockDoor": MethodProfile(failure_rate=1.0)})
    # Device ids sort the broken ones first, and one call at a time makes the count exact.
    async with fleet_of(hub, registry, 4, "ab-bad-", broken), fleet_of(hub, registry, 6, "ab-ok-"):
        criteria = [{"failureType": "failed", "thresholdPercentage": 50, "minNumberOfExecutedDevices": 3}]
        await put_job(api, "abort-failed", rollout={"maxConcurrency": 1}, abort={"criteria": criteria})
        job = await finished(api, "abort-failed")
        assert job["status"] == "failed"
        assert job["failureReason"] == (
            "abort: 100.0% of 3 executed devices failed (threshold 50%, failureType failed)"
        )
        stats = job["deviceJobStatistics"]
        assert (stats["failedCount"], stats["succeededCount"], stats["canceledCount"]) == (3, 0, 7)
        events = await event_log(api, "abort-failed", until="job failed: abort: ")
        assert any(m.startswith("abort: ") and "canceled" in m for m in events)


async def test_timed_out_threshold_counts_only_timeouts(
    hub: Hub, api: httpx.AsyncClient, registry: AsyncRegistryClient
) -> None:
    slow = Behaviours(profiles={"lockDoor": MethodProfile(latency=6.0)})
    broken = Behaviours(profiles={"lockDoor": MethodProfile(failure_rate=1.0)})
    async with (
        fleet_of(hub, registry, 2, "to-bad-", broken),
        fleet_of(hub, registry, 2, "to-slow-", slow),
        fleet_of(hub, registry, 4, "to-ok-"),
    ):
        criteria = [{"failureType": "timedOut", "thresholdPercentage": 20, "minNumberOfExecutedDevices": 4}]
        method = {**LOCK, "responseTimeoutInSeconds": 5}
        await put_job(api, "abort-timeout", cloudToDeviceMethod=method, abort=criteria)
        job = await finished(api, "abort-timeout")
        # The 2 failures (a third of the first 6) do not count; the 2 timeouts make 25% of 8.
        # A criterion crossed by the last device still fails the job.
        assert job["status"] == "failed"
        assert job["failureReason"] == (
            "abort: 25.0% of 8 executed devices timed out (threshold 20%, failureType timedOut)"
        )


async def test_a_job_under_its_threshold_completes(
    hub: Hub, api: httpx.AsyncClient, registry: AsyncRegistryClient
) -> None:
    broken = Behaviours(profiles={"lockDoor": MethodProfile(failure_rate=1.0)})
    async with fleet_of(hub, registry, 1, "fine-bad-", broken), fleet_of(hub, registry, 5, "fine-ok-"):
        # Whichever order the results come in, 1 failure is at most 25% of 4 executed.
        criteria = [{"failureType": "all", "thresholdPercentage": 50, "minNumberOfExecutedDevices": 4}]
        await put_job(api, "under", abort=criteria)
        job = await finished(api, "under")
        assert job["status"] == "completed"
        assert job["failureReason"] is None


# -- retry -----------------------------------------------------------------------------------


async def test_retries_until_the_device_succeeds_and_show_attempts(
    virtual_hub: Hub, clients: tuple[httpx.AsyncClient, AsyncRegistryClient]
) -> None:
    api, registry = clients
    calls: Counter[str] = Counter()

    async def flaky(call: MethodCall) -> MethodReply:
        calls[call.device.device_id] += 1
        if call.device.device_id.startswith("rt-flaky") and calls[call.device.device_id] < 3:
            return MethodReply(503, {"busy": True})
        return MethodReply(200, {"locked": True})

    behaviours = Behaviours(handlers={"lockDoor": flaky})
    async with (
        fleet_of(virtual_hub, registry, 2, "rt-flaky-", behaviours),
        fleet_of(virtual_hub, registry, 2, "rt-fine-", behaviours),
    ):
        retry = {"maxAttempts": 3, "backoffSeconds": 5, "retryOn": ["failed"]}
        await put_job(api, "retry-ok", retry=retry)
        job = await finished(api, "retry-ok")
        assert job["status"] == "completed"
        assert job["deviceJobStatistics"]["succeededCount"] == 4
        results = await device_results(api, "retry-ok")
        assert {d: r["attempts"] for d, r in results.items()} == {
            "rt-fine-0000": 1,
            "rt-fine-0001": 1,
            "rt-flaky-0000": 3,
            "rt-flaky-0001": 3,
        }
        assert dict(calls) == {"rt-fine-0000": 1, "rt-fine-0001": 1, "rt-flaky-0000": 3, "rt-flaky-0001": 3}
        # devices.jobs queries show the attempts too.
        query = {"query": "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'retry-ok'"}
        rows = (await api.post("/devices/query", json=query)).json()
        assert sorted(row["attempts"] for row in rows) == [1, 1, 3, 3]


async def test_retries_stop_at_max_attempts_with_the_last_outcome(
    virtual_hub: Hub, clients: tuple[httpx.AsyncClient, AsyncRegistryClient]
) -> None:
    api, registry = clients
    broken = Behaviours(profiles={"lockDoor": MethodProfile(failure_rate=1.0)})
    async with fleet_of(virtual_hub, registry, 2, "rt-dead-", broken):
        await put_job(api, "retry-out", retry={"maxAttempts": 2, "backoffSeconds": 1, "retryOn": ["failed"]})
        job = await finished(api, "retry-out")
        assert job["deviceJobStatistics"]["failedCount"] == 2
        for row in (await device_results(api, "retry-out")).values():
            assert row["status"] == "failed"
            assert row["attempts"] == 2
            assert row["outcome"]["deviceMethodResponse"]["status"] == 500


async def test_outcomes_outside_retry_on_are_final(
    virtual_hub: Hub, clients: tuple[httpx.AsyncClient, AsyncRegistryClient]
) -> None:
    api, registry = clients
    broken = Behaviours(profiles={"lockDoor": MethodProfile(failure_rate=1.0)})
    async with fleet_of(virtual_hub, registry, 1, "rt-final-", broken):
        await put_job(api, "retry-final", retry={"maxAttempts": 5, "retryOn": ["GatewayTimeout"]})
        await finished(api, "retry-final")
        [row] = (await device_results(api, "retry-final")).values()
        assert (row["status"], row["attempts"]) == ("failed", 1)


async def test_gateway_timeouts_are_retried(hub: Hub, api: httpx.AsyncClient, registry: AsyncRegistryClient) -> None:
    calls: Counter[str] = Counter()

    async def slow_then_quick(call: MethodCall) -> MethodReply:
        calls[call.device.device_id] += 1
        if calls[call.device.device_id] == 1:
            await asyncio.sleep(6)  # past the 5 s response timeout
        return MethodReply(200, {"locked": True})

    async with fleet_of(hub, registry, 1, "rt-slow-", Behaviours(handlers={"lockDoor": slow_then_quick})):
        method = {**LOCK, "responseTimeoutInSeconds": 5}
        retry = {"maxAttempts": 2, "backoffSeconds": 0, "retryOn": ["GatewayTimeout"]}
        await put_job(api, "retry-timeout", cloudToDeviceMethod=method, retry=retry)
        job = await finished(api, "retry-timeout")
        assert job["deviceJobStatistics"]["succeededCount"] == 1
        [row] = (await device_results(api, "retry-timeout")).values()
        assert row["attempts"] == 2


# -- continuous --------------------------------------------------------------------------------


async def test_continuous_job_takes_devices_that_come_to_match(tmp_path: Path) -> None:
    # The interval is far beyond the deadline: only the twin change can make the job look again.
    settings = hub_settings(tmp_path / "data").model_copy(update={"continuous_job_interval_seconds": 600})
    async with Hub(settings) as hub, api_client(hub) as api:
        assert hub.endpoints is not None
        registry = AsyncRegistryClient.from_connection_string(connection_string(hub), url=hub.endpoints.http_url)
        jobs = AsyncJobClient.from_connection_string(connection_string(hub), url=hub.endpoints.http_url)
        async with registry, jobs, fleet_of(hub, registry, 3, "cont-") as fleet:
            devices = [d.device_id for d in fleet]
            for device_id in devices[:2]:
                await registry.update_twin(device_id, {"tags": {"site": "north"}})
            await put_job(
                api, "follow", queryCondition="tags.site = 'north'", continuous=True, maxExecutionTimeInSeconds=4
            )
            async with asyncio.timeout(30):
                while (await api.get("/jobs/v2/follow")).json()["deviceJobStatistics"]["succeededCount"] < 2:
                    await asyncio.sleep(0.05)
            # Re-tagged after the job started: it joins and is called.
            await registry.update_twin(devices[2], {"tags": {"site": "north"}})
            job = await finished(api, "follow")
            assert job["status"] == "completed"
            assert job["deviceJobStatistics"]["succeededCount"] == 3
            assert sorted(await device_results(api, "follow")) == sorted(devices)
            assert "1 devices joined the job" in await event_log(api, "follow", until="job completed")


def _drop_on_first_call(calls: Counter[str], first_call: asyncio.Event) -> Behaviours:
    async def hang_once(call: MethodCall) -> MethodReply:
        calls[call.device.device_id] += 1
        if calls[call.device.device_id] == 1:
            first_call.set()
            await asyncio.sleep(60)  # no answer: the test drops the connection meanwhile
        return MethodReply(200, {"locked": True})

    return Behaviours(handlers={"lockDoor": hang_once})


@pytest.mark.parametrize(
    ("retry_on", "status", "attempts"), [(["DeviceNotOnline"], "completed", 2), (["GatewayTimeout"], "failed", 1)]
)
async def test_a_device_that_drops_mid_call_is_retried_only_when_retry_on_says_so(
    hub: Hub, api: httpx.AsyncClient, registry: AsyncRegistryClient, retry_on: list[str], status: str, attempts: int
) -> None:
    calls: Counter[str] = Counter()
    first_call = asyncio.Event()
    async with fleet_of(hub, registry, 1, "rt-drop-", _drop_on_first_call(calls, first_call)) as fleet:
        retry = {"maxAttempts": 3, "backoffSeconds": 0, "retryOn": retry_on}
        await put_job(api, "retry-drop", retry=retry)
        async with asyncio.timeout(30):
            await first_call.wait()
        assert fleet["rt-drop-0000"].drop(reconnect_after=0.2)
        job = await finished(api, "retry-drop")
        [row] = (await device_results(api, "retry-drop")).values()
        assert (row["status"], row["attempts"]) == (status, attempts)
        if status == "failed":
            assert row["error"]["code"] == "DeviceNotOnline"
            assert job["deviceJobStatistics"]["failedCount"] == 1


TWIN_PATCH = {"tags": {"building": "43"}, "properties": {"desired": {"floor": 3}}}


async def test_twin_jobs_are_paced_per_device(
    virtual_hub: Hub, clients: tuple[httpx.AsyncClient, AsyncRegistryClient]
) -> None:
    api, registry = clients
    for index in range(4):
        await registry.create_device(f"twin-paced-{index}")
    body = {"type": "scheduleUpdateTwin", "updateTwin": TWIN_PATCH, "queryCondition": "*"}
    response = await api.put("/jobs/v2/twin-paced", json={**body, "rollout": {"maxPerMinute": 60}})
    assert response.status_code == 200, response.text
    job = await finished(api, "twin-paced")
    assert job["deviceJobStatistics"]["succeededCount"] == 4
    assert start_gaps(await device_results(api, "twin-paced")) == [1.0, 1.0, 1.0]


async def test_a_continuous_twin_job_patches_devices_created_after_it_started(tmp_path: Path) -> None:
    # As above: the device's creation itself makes the job look.
    settings = hub_settings(tmp_path / "data").model_copy(update={"continuous_job_interval_seconds": 600})
    async with Hub(settings) as hub, api_client(hub) as api:
        await api.put("/devices/early", json={"deviceId": "early"})
        body = {"type": "scheduleUpdateTwin", "updateTwin": TWIN_PATCH, "queryCondition": "*"}
        response = await api.put(
            "/jobs/v2/twin-follow", json={**body, "continuous": True, "maxExecutionTimeInSeconds": 3}
        )
        assert response.status_code == 200, response.text
        async with asyncio.timeout(30):
            while (await api.get("/jobs/v2/twin-follow")).json()["deviceJobStatistics"]["succeededCount"] < 1:
                await asyncio.sleep(0.05)
        await api.put("/devices/late", json={"deviceId": "late"})
        job = await finished(api, "twin-follow")
        assert (job["status"], job["deviceJobStatistics"]["succeededCount"]) == ("completed", 2)
        late = (await api.get("/twins/late")).json()
        assert late["tags"] == {"building": "43"}
        assert late["properties"]["desired"]["floor"] == 3


async def test_a_continuous_job_finds_devices_another_hub_added_at_its_next_look(tmp_path: Path) -> None:
    """A device written to the shared database by another node raises no event here: the job's
    periodic look finds it."""
    settings = hub_settings(tmp_path / "data").model_copy(update={"continuous_job_interval_seconds": 0.2})
    async with Hub(settings) as hub, api_client(hub) as api:
        assert hub.services is not None
        body = {"type": "scheduleUpdateTwin", "updateTwin": TWIN_PATCH, "queryCondition": "*"}
        response = await api.put(
            "/jobs/v2/twin-poll", json={**body, "continuous": True, "maxExecutionTimeInSeconds": 3}
        )
        assert response.status_code == 200, response.text
        async with asyncio.timeout(30):
            while (await api.get("/jobs/v2/twin-poll")).json()["status"] != "running":
                await asyncio.sleep(0.05)
        await hub.services.store.add_device(new_device("elsewhere", datetime.now(UTC)))
        job = await finished(api, "twin-poll")
        assert (job["status"], job["deviceJobStatistics"]["succeededCount"]) == ("completed", 1)
        assert (await api.get("/twins/elsewhere")).json()["tags"] == {"building": "43"}
