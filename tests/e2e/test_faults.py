"""Faults (issue 6): the database going away in the middle of a job, and a fleet that keeps
dropping and reconnecting devices while a job runs.

The database outage is a TCP proxy (tests/e2e/pgproxy.py) between the hub and PostgreSQL that
the test cuts and restores: the machine's PostgreSQL server itself is never restarted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from device_sim import Behaviours, Fleet, FleetOptions, MethodProfile, MqttEndpoint
from device_sim.options import DeviceOptions
from hub.domain.devices import ConnectionState, new_device
from hub.ports import PresenceUpdate
from hub.runtime import Hub
from hub.storage import SqlStore
from job_client import AsyncRegistryClient
from job_client.jobs import AsyncJobClient
from job_client.models import Job, JobStatus, MethodParams
from tests.e2e.conftest import connection_string, device_endpoint, hub_settings, service_token
from tests.e2e.pgproxy import PgProxy, proxied_url, upstream_of
from tests.e2e.processes import HOST, START_TIMEOUT, Launcher
from tests.e2e.processes import connection_string as process_connection_string

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

OUTAGE_SECONDS = 4.0


@pytest.fixture
async def pg_proxy(postgres_url: str) -> AsyncIterator[PgProxy]:
    async with PgProxy(*upstream_of(postgres_url)) as proxy:
        yield proxy


@pytest.fixture
async def pg_hub(tmp_path: Path, postgres_url: str, pg_proxy: PgProxy) -> AsyncIterator[Hub]:
    """A hub on PostgreSQL reached through the proxy, with a small call window so that a method
    job lasts long enough to lose its database midway."""
    settings = hub_settings(tmp_path / "data", database_url=proxied_url(postgres_url, pg_proxy))
    async with Hub(settings.model_copy(update={"job_call_window": 20})) as running:
        yield running


@asynccontextmanager
async def _clients(hub: Hub) -> AsyncIterator[tuple[httpx.AsyncClient, AsyncRegistryClient, AsyncJobClient]]:
    """Raw REST, registry and job clients for ``hub``, as iothubowner."""
    assert hub.endpoints is not None
    url, cs = hub.endpoints.http_url, connection_string(hub)
    async with (
        httpx.AsyncClient(base_url=url, timeout=30, headers={"Authorization": service_token(hub)}) as api,
        AsyncRegistryClient.from_connection_string(cs, url=url) as registry,
        AsyncJobClient.from_connection_string(cs, url=url) as jobs,
    ):
        yield api, registry, jobs


async def _assert_every_device_has_one_result(jobs: AsyncJobClient, done: Job, fleet: Fleet) -> None:
    stats = done.statistics
    assert stats.device_count == len(fleet)
    assert stats.pending_count == 0
    assert stats.running_count == 0
    assert stats.succeeded_count + stats.failed_count + stats.canceled_count == stats.device_count
    results = [r async for r in jobs.list_device_results(done.job_id, page_size=1000)]
    assert sorted(r.device_id for r in results) == sorted(d.device_id for d in fleet)
    assert all(str(r.status) in {"completed", "failed", "canceled"} for r in results)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "latency",
    [
        pytest.param((0.2, 0.6), id="calls-outlast-the-outage"),
        pytest.param((0.02, 0.08), id="calls-end-during-the-outage"),
    ],
)
async def test_database_outage_mid_job_answers_503_keeps_devices_and_loses_nothing(
    latency: tuple[float, float], pg_hub: Hub, pg_proxy: PgProxy
) -> None:
    async with _clients(pg_hub) as (api, registry, jobs):
        await _outage_mid_job(pg_hub, pg_proxy, api, registry, jobs, latency)


async def _outage_mid_job(
    hub: Hub,
    pg_proxy: PgProxy,
    api: httpx.AsyncClient,
    registry: AsyncRegistryClient,
    jobs: AsyncJobClient,
    latency: tuple[float, float],
) -> None:
    count = 300
    behaviours = Behaviours(profiles={"lockDoor": MethodProfile(latency=latency)}, seed=11)
    fleet = await Fleet.provision(
        registry,
        device_endpoint(hub),
        count=count,
        prefix="db-out-",
        behaviours=behaviours,
        options=DeviceOptions(backoff_max=2.0),
        fleet_options=FleetOptions(batch_size=100),
    )
    await fleet.start()
    try:
        assert await fleet.wait_connected(timeout=60)
        params = MethodParams("lockDoor", {"why": "outage"}, response_timeout_in_seconds=10)
        await jobs.schedule_device_method("outage", "*", params, max_execution_time_in_seconds=600)
        async with asyncio.timeout(60):
            while (await jobs.get_job("outage")).statistics.succeeded_count < count // 10:
                await asyncio.sleep(0.05)
        drops_before = fleet.stats().totals.disconnects

        async with pg_proxy.outage(OUTAGE_SECONDS):
            # While the database is gone: IoT Hub's 503 for REST, nothing else.
            for path in ("/jobs/v2/outage", "/twins/db-out-0000", "/devices/db-out-0001"):
                response = await api.get(path)
                assert response.status_code == 503, (path, response.text)
                assert response.headers["iothub-errorcode"] == "ServiceUnavailable"
                message = response.json()["Message"]
                assert message.startswith("ErrorCode:ServiceUnavailable;"), message
            health = await api.get("/healthz")
            assert health.status_code == 503
            # The calls go on without the database; their results wait in memory.
            handled = fleet.stats().totals.methods_handled
            async with asyncio.timeout(10):
                while fleet.stats().totals.methods_handled == handled:
                    await asyncio.sleep(0.05)
            assert (await api.get("/jobs/v2/outage")).status_code == 503

        # No device lost its MQTT connection to the outage.
        assert fleet.stats().totals.disconnects == drops_before
        assert fleet.connected_count == count
        assert hub.services is not None
        assert hub.services.presence.connected_count == count

        done = await jobs.wait_for_job("outage", poll_interval=0.2, timeout=120)
    finally:
        await fleet.stop()

    assert done.status is JobStatus.COMPLETED, done
    await _assert_every_device_has_one_result(jobs, done, fleet)
    assert done.statistics.succeeded_count == count  # every device answered; no result was lost
    # A result the outage kept from being written is never re-sent as a second call.
    assert fleet.stats().totals.methods_handled == count


async def test_method_job_over_a_churning_fleet_completes_with_one_result_per_device(
    launcher: Launcher, tmp_path: Path
) -> None:
    """1,000 devices, 10% of them dropped and reconnected every second while the job runs.
    The hub is a child process, so that it does not share a core with the 1,000 devices."""
    count = 1000
    data = tmp_path / "data"
    hub = await launcher.serve(data, env={"FLEETHUB_JOB_CALL_WINDOW": "200"})
    cs = await process_connection_string(data)
    behaviours = Behaviours(profiles={"lockDoor": MethodProfile(latency=(0.3, 0.9))}, seed=5)
    async with (
        AsyncRegistryClient.from_connection_string(cs, url=hub.http_url) as registry,
        AsyncJobClient.from_connection_string(cs, url=hub.http_url) as jobs,
    ):
        fleet = await Fleet.provision(
            registry,
            MqttEndpoint.for_hub("localhost", host=HOST, port=hub.mqtt_port, tls=False),
            count=count,
            prefix="churn-",
            behaviours=behaviours,
            options=DeviceOptions(backoff_max=2.0),
            fleet_options=FleetOptions(churn=0.1, churn_seed=3),
        )
        await fleet.start()
        try:
            assert await fleet.wait_connected(timeout=START_TIMEOUT)
            params = MethodParams("lockDoor", {"why": "churn"}, response_timeout_in_seconds=10)
            await jobs.schedule_device_method("churn", "*", params, max_execution_time_in_seconds=600)
            done = await jobs.wait_for_job("churn", poll_interval=0.2, timeout=180)
            churned = fleet.churned
        finally:
            await fleet.stop()

        assert churned >= count // 10, f"only {churned} drops: the churn did not run during the job"
        assert done.status is JobStatus.COMPLETED, done
        await _assert_every_device_has_one_result(jobs, done, fleet)
        # Every device answered in the end: a call cut off by a drop waits for the reconnect.
        assert done.statistics.succeeded_count == count, done.statistics


@pytest.mark.postgres
async def test_presence_flushes_and_twin_batches_never_deadlock_on_postgres(postgres_url: str) -> None:
    """A presence flush lists devices in the order they connected; a reported batch writes them
    in device_id order. Both lock the same rows, so unless they lock in one order PostgreSQL
    kills one of them as a deadlock and the patches or presence changes in it are lost."""
    t0 = datetime(2024, 5, 1, tzinfo=UTC)
    ids = [f"lock-{i:04d}" for i in range(400)]
    async with SqlStore.open(postgres_url) as store:
        assert not await store.add_devices([new_device(device_id, t0) for device_id in ids])
        for round_ in range(15):
            at = t0 + timedelta(seconds=round_)
            twins = await store.get_twins(ids)
            writes = [(replace(t, version=t.version + 1, revision=t.revision + 1), t.revision) for t in twins.values()]
            presence = [PresenceUpdate(device_id, ConnectionState.CONNECTED, at) for device_id in reversed(ids)]
            conflicts, _ = await asyncio.gather(store.save_twins(writes), store.record_presence(presence))
            assert not conflicts
