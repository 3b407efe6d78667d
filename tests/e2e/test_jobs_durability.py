"""A hub killed with SIGKILL in the middle of a 500-device method job finishes the job after
a restart: every device ends with exactly one terminal result and the statistics add up.

The hub is a child process (``python -m hub serve``) on fixed free ports, so the simulated
devices, which run in this test process, reconnect to the restarted hub by themselves."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from device_sim import Behaviours, Fleet, MqttEndpoint
from device_sim.behaviours import MethodProfile
from device_sim.options import DeviceOptions
from job_client import AsyncRegistryClient
from job_client.jobs import AsyncJobClient
from job_client.models import JobStatus, MethodParams
from tests.e2e.processes import HOST, START_TIMEOUT, Launcher, connection_string, free_ports

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

DEVICES = 500
WINDOW = 50  # calls in flight at once, so the job takes long enough to be killed midway


async def test_sigkill_mid_job_then_restart_finishes_it(launcher: Launcher, tmp_path: Path) -> None:
    data = tmp_path / "data"
    http_port, mqtt_port = free_ports(2)
    env = {"FLEETHUB_JOB_CALL_WINDOW": str(WINDOW), "FLEETHUB_NODE_ID": "node-a"}
    hub = await launcher.serve(data, env=env, ports=(http_port, mqtt_port))
    cs = await connection_string(data)
    url = hub.http_url
    behaviours = Behaviours(profiles={"lockDoor": MethodProfile(latency=(0.2, 0.6))}, seed=7)
    async with (
        AsyncRegistryClient.from_connection_string(cs, url=url) as registry,
        AsyncJobClient.from_connection_string(cs, url=url) as jobs,
    ):
        endpoint = MqttEndpoint.for_hub("localhost", host=HOST, port=mqtt_port, tls=False)
        fleet = await Fleet.provision(
            registry,
            endpoint,
            count=DEVICES,
            prefix="dur-",
            behaviours=behaviours,
            options=DeviceOptions(backoff_max=2.0),  # back soon after the restart
        )
        await fleet.start()
        try:
            assert await fleet.wait_connected(timeout=START_TIMEOUT)
            params = MethodParams("lockDoor", {"why": "durability"}, response_timeout_in_seconds=10)
            await jobs.schedule_device_method("survive", "*", params, max_execution_time_in_seconds=600)

            # Kill it once part of the devices are done and others are in flight.
            async with asyncio.timeout(START_TIMEOUT):
                while (await jobs.get_job("survive")).statistics.succeeded_count < DEVICES // 4:
                    await asyncio.sleep(0.05)
            hub.proc.send_signal(signal.SIGKILL)
            await hub.proc.wait()
            handled_before = fleet.stats().totals.methods_handled
            assert handled_before < DEVICES

            await launcher.serve(data, env=env, ports=(http_port, mqtt_port))
            done = await jobs.wait_for_job("survive", poll_interval=0.2, timeout=180)
        finally:
            await fleet.stop()

        assert done.status is JobStatus.COMPLETED
        stats = done.statistics
        assert stats.device_count == DEVICES
        assert stats.succeeded_count + stats.failed_count + stats.canceled_count == DEVICES
        assert stats.pending_count == 0
        assert stats.running_count == 0
        assert stats.succeeded_count == DEVICES  # every device came back and answered

        results = [r async for r in jobs.list_device_results("survive", page_size=1000)]
        assert sorted(r.device_id for r in results) == sorted(d.device_id for d in fleet)
        assert all(str(r.status) == "completed" for r in results)
        # At-least-once: a call in flight at the kill may be sent again once, nothing more.
        handled = fleet.stats().totals.methods_handled
        assert DEVICES <= handled <= DEVICES + WINDOW
