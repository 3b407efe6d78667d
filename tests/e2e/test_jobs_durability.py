"""A hub killed with SIGKILL in the middle of a job finishes the job after a restart: every
device ends with exactly one terminal result and the statistics add up. Method jobs and twin
update jobs, on SQLite and on PostgreSQL.

The hub is a child process (``python -m hub serve``) on fixed free ports, so the simulated
devices, which run in this test process, reconnect to the restarted hub by themselves."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from device_sim import Behaviours, Fleet, MqttEndpoint
from device_sim.behaviours import MethodCall, MethodProfile, MethodReply
from device_sim.options import DeviceOptions
from job_client import AsyncRegistryClient
from job_client.jobs import AsyncJobClient
from job_client.models import Job, JobStatus, MethodParams
from job_client.rollout import AbortCriterion, RetryPolicy, Rollout
from tests.e2e.processes import HOST, START_TIMEOUT, Launcher, ServeProcess, connection_string, free_ports

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WINDOW = 50  # calls in flight at once, so the job takes long enough to be killed midway
# The original case (a method job on SQLite) keeps its 500 devices; the others need fewer.
METHOD_DEVICES = {"sqlite": 500, "postgres": 200}
TWIN_FLEET = 100  # connected devices that follow the twin job's desired change
TWIN_OFFLINE = 3900  # registered devices that never connect: a twin job patches them as well
TWIN_PATCH = {"properties": {"desired": {"building": "43"}}}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture
def database_env(backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings for the hub process: its data dir's SQLite file, or a fresh PostgreSQL database."""
    if backend == "sqlite":
        return {}
    return {"FLEETHUB_DATABASE_URL": request.getfixturevalue("postgres_url")}


@asynccontextmanager
async def _hub_with_fleet(
    launcher: Launcher,
    data: Path,
    env: dict[str, str],
    *,
    count: int,
    prefix: str,
    behaviours: Behaviours | None = None,
) -> AsyncIterator[tuple[ServeProcess, AsyncRegistryClient, AsyncJobClient, Fleet]]:
    """A hub process on fixed ports (kept across a restart) and ``count`` connected devices."""
    http_port, mqtt_port = free_ports(2)
    hub = await launcher.serve(data, env=env, ports=(http_port, mqtt_port))
    url = env.get("FLEETHUB_DATABASE_URL")
    cs = await connection_string(data, *(["--database-url", url] if url else []))
    async with (
        AsyncRegistryClient.from_connection_string(cs, url=hub.http_url) as registry,
        AsyncJobClient.from_connection_string(cs, url=hub.http_url) as jobs,
    ):
        endpoint = MqttEndpoint.for_hub("localhost", host=HOST, port=mqtt_port, tls=False)
        fleet = await Fleet.provision(
            registry,
            endpoint,
            count=count,
            prefix=prefix,
            behaviours=behaviours,
            options=DeviceOptions(backoff_max=2.0),  # back soon after the restart
        )
        await fleet.start()
        try:
            assert await fleet.wait_connected(timeout=START_TIMEOUT)
            yield hub, registry, jobs, fleet
        finally:
            await fleet.stop()


async def _kill_when(hub: ServeProcess, jobs: AsyncJobClient, job_id: str, succeeded: int) -> Job:
    """SIGKILL the hub once ``succeeded`` devices of the job are done; return the last job seen."""
    async with asyncio.timeout(START_TIMEOUT):
        while (job := await jobs.get_job(job_id)).statistics.succeeded_count < succeeded:
            await asyncio.sleep(0.02)
    hub.proc.send_signal(signal.SIGKILL)
    await hub.proc.wait()
    return job


async def _restart_and_wait(
    launcher: Launcher, hub: ServeProcess, env: dict[str, str], jobs: AsyncJobClient, job_id: str
) -> Job:
    await launcher.serve(hub.data_dir, env=env, ports=(hub.http_port, hub.mqtt_port))
    return await jobs.wait_for_job(job_id, poll_interval=0.2, timeout=180)


async def _assert_all_succeeded_once(jobs: AsyncJobClient, done: Job, device_ids: list[str]) -> None:
    assert done.status is JobStatus.COMPLETED, done
    stats = done.statistics
    assert stats.device_count == len(device_ids)
    assert stats.succeeded_count + stats.failed_count + stats.canceled_count == stats.device_count
    assert stats.pending_count == 0
    assert stats.running_count == 0
    assert stats.succeeded_count == len(device_ids)  # every device came back and answered
    results = [r async for r in jobs.list_device_results(done.job_id, page_size=1000)]
    assert sorted(r.device_id for r in results) == sorted(device_ids)
    assert all(str(r.status) == "completed" for r in results)


async def test_sigkill_mid_job_then_restart_finishes_it(
    backend: str, database_env: dict[str, str], launcher: Launcher, tmp_path: Path
) -> None:
    devices = METHOD_DEVICES[backend]
    env = {**database_env, "FLEETHUB_JOB_CALL_WINDOW": str(WINDOW), "FLEETHUB_NODE_ID": "node-a"}
    behaviours = Behaviours(profiles={"lockDoor": MethodProfile(latency=(0.2, 0.6))}, seed=7)
    async with _hub_with_fleet(
        launcher, tmp_path / "data", env, count=devices, prefix="dur-", behaviours=behaviours
    ) as (hub, _, jobs, fleet):
        params = MethodParams("lockDoor", {"why": "durability"}, response_timeout_in_seconds=10)
        await jobs.schedule_device_method("survive", "*", params, max_execution_time_in_seconds=600)

        # Kill it once part of the devices are done and others are in flight.
        await _kill_when(hub, jobs, "survive", devices // 4)
        handled_before = fleet.stats().totals.methods_handled
        assert handled_before < devices

        done = await _restart_and_wait(launcher, hub, env, jobs, "survive")
        await _assert_all_succeeded_once(jobs, done, [d.device_id for d in fleet])
        # At-least-once: a call in flight at the kill may be sent again once, nothing more.
        handled = fleet.stats().totals.methods_handled
        assert devices <= handled <= devices + WINDOW


async def test_sigkill_mid_twin_job_then_restart_finishes_it(
    database_env: dict[str, str], launcher: Launcher, tmp_path: Path
) -> None:
    env = {**database_env, "FLEETHUB_NODE_ID": "node-a"}
    async with _hub_with_fleet(launcher, tmp_path / "data", env, count=TWIN_FLEET, prefix="durt-") as (
        hub,
        registry,
        jobs,
        fleet,
    ):
        offline = [f"durt-offline-{i:05d}" for i in range(TWIN_OFFLINE)]
        assert not (await registry.bulk_create_devices(offline)).errors
        everyone = [d.device_id for d in fleet] + offline

        await jobs.schedule_twin_update("survive-twin", "*", TWIN_PATCH, max_execution_time_in_seconds=600)
        seen = await _kill_when(hub, jobs, "survive-twin", 1)
        assert seen.statistics.succeeded_count < len(everyone), "the job finished before the kill"

        done = await _restart_and_wait(launcher, hub, env, jobs, "survive-twin")
        await _assert_all_succeeded_once(jobs, done, everyone)
        # Each twin got the patch exactly once: a batch done before the kill was not applied again.
        versions: dict[str, int] = {}
        async for twin in registry.query("SELECT * FROM devices", page_size=1000):
            desired = twin["properties"]["desired"]
            assert desired["building"] == "43", twin
            versions[twin["deviceId"]] = desired["$version"]
        assert sorted(versions) == sorted(everyone)
        assert set(versions.values()) == {2}, Counter(versions.values())
        # The connected devices follow the change, whether pushed before the kill or read after.
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while any(device.desired.get("building") != "43" for device in fleet):
                    await asyncio.sleep(0.05)
        except TimeoutError:
            behind = [
                (d.device_id, d.connected.is_set(), d.desired, d.desired_version, d.stats, d.twin)
                for d in fleet
                if d.desired.get("building") != "43"
            ]
            raise AssertionError(f"devices without the change: {behind}") from None


async def test_sigkill_mid_paced_retrying_job_resumes_its_counts(launcher: Launcher, tmp_path: Path) -> None:
    """Rollout pacing, retries and abort counting pick up from the stored records: every
    device fails its first call and succeeds its second, the hub dies midway, and after the
    restart the job completes, no device past its attempts (retried failures are not final,
    so the abort criterion never trips)."""
    calls: Counter[str] = Counter()

    async def second_time_lucky(call: MethodCall) -> MethodReply:
        calls[call.device.device_id] += 1
        if calls[call.device.device_id] == 1:
            return MethodReply(503, {"busy": True})
        return MethodReply(200, {"locked": True})

    devices = 60
    env = {"FLEETHUB_NODE_ID": "node-a"}
    behaviours = Behaviours(handlers={"lockDoor": second_time_lucky})
    async with _hub_with_fleet(
        launcher, tmp_path / "data", env, count=devices, prefix="durc-", behaviours=behaviours
    ) as (hub, _, jobs, fleet):
        await jobs.schedule_device_method(
            "survive-paced",
            "*",
            MethodParams("lockDoor", {}, response_timeout_in_seconds=10),
            max_execution_time_in_seconds=600,
            rollout=Rollout(max_per_minute=900),
            retry=RetryPolicy(3, backoff_seconds=0.2, retry_on=("failed",)),
            abort=[AbortCriterion("failed", 50, 10)],
        )
        seen = await _kill_when(hub, jobs, "survive-paced", devices // 4)
        assert seen.statistics.succeeded_count < devices, "the job finished before the kill"
        done = await _restart_and_wait(launcher, hub, env, jobs, "survive-paced")
        await _assert_all_succeeded_once(jobs, done, [d.device_id for d in fleet])
        results = [r async for r in jobs.list_device_results("survive-paced", page_size=1000)]
        # Attempts are the calls the records show: a failed first call whose record the kill
        # lost is not counted (1), the usual case is 2, and a second call in flight at the kill
        # is sent again after the restart (at-least-once), which makes it 3. Never more.
        assert {r.attempts for r in results} <= {1, 2, 3}
        assert all(r.attempts is not None and r.attempts <= calls[r.device_id] + 1 for r in results)
        assert max(calls.values()) <= 3
