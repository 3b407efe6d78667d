"""Job fan-out: one job over N simulated devices, from start to completed; prints one line.

    python -m bench.fanout --devices 1000 --kind method     # lockDoor on every device
    python -m bench.fanout --devices 10000 --kind twin      # building "43", floor 3

The hub and the device fleet run as separate processes (``--fleets`` device processes share
the devices). This process schedules the job through the job client SDK and polls it.

Figures, all from the hub's own timestamps:
- ``seconds``: the job's startTime to its endTime (the device set resolved, every device
  called or patched, results written, the job marked completed);
- ``ops/s``: devices / seconds;
- ``p50_ms`` / ``p99_ms``: per device, from the job's start to that device's result
  (how long a device waited for the job to reach it);
- ``call_p50_ms`` / ``call_p99_ms`` (method jobs): each device's own call, from sending the
  request to the reply;
- ``all_acked_s`` (twin jobs): the job's start until every device had reported the new
  floor back (the acknowledgement storm a desired change causes; polled, so +-0.25 s);
- ``hub_peak_rss_mb``: the hub process's peak resident memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from bench.harness import BenchHub, percentile, running_fleet, running_hub
from job_client.jobs import AsyncJobClient
from job_client.models import DeviceJobResult, Job, MethodParams
from job_client.registry import AsyncRegistryClient

try:
    import uvloop
except ImportError:  # Windows has no uvloop
    uvloop = None  # type: ignore[assignment]

PATCH = {"tags": {"building": "43"}, "properties": {"desired": {"building": "43", "floor": 3}}}


@contextlib.asynccontextmanager
async def _fleets(hub: BenchHub, devices: int, fleets: int) -> AsyncIterator[None]:
    """``fleets`` device_sim processes with devices bench-0000.. split between them."""
    per = -(-devices // fleets)
    async with contextlib.AsyncExitStack() as stack:
        for index in range(fleets):
            first, count = index * per, min(per, devices - index * per)
            if count <= 0:
                break
            await stack.enter_async_context(
                running_fleet(
                    hub,
                    count,
                    prefix="bench-",
                    extra=("--start-index", str(first), "--log-level", "ERROR"),
                    expect_connected=first + count,
                )
            )
        yield


async def _acknowledged(hub: BenchHub, devices: int) -> datetime | None:
    """When every device had reported floor 3 back (the simulator acknowledges desired
    changes), polled with a twin query; None if that took more than two minutes."""
    query = "SELECT COUNT() AS n FROM devices WHERE properties.reported.floor = 3"
    async with AsyncRegistryClient.from_connection_string(hub.connection_string, url=hub.url) as registry:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rows = [row async for row in registry.query(query)]
            if rows and rows[0].get("n", 0) >= devices:
                return datetime.now(UTC)
            await asyncio.sleep(0.25)
    return None


def _ms(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return (end - start).total_seconds() * 1000


async def _run(devices: int, kind: str, fleets: int) -> str:
    async with running_hub() as hub, _fleets(hub, devices, fleets):
        async with AsyncJobClient.from_connection_string(hub.connection_string, url=hub.url) as jobs:
            job_id = f"bench-{kind}-{int(time.time())}"
            condition = "STARTSWITH(deviceId, 'bench-')"
            if kind == "method":
                await jobs.schedule_device_method(job_id, condition, MethodParams("lockDoor", {"bench": True}, 30))
            else:
                await jobs.schedule_twin_update(job_id, condition, PATCH)
            job: Job = await jobs.wait_for_job(job_id, poll_interval=0.25, timeout=600)
            results: list[DeviceJobResult] = [r async for r in jobs.list_device_results(job_id, page_size=1000)]
        acked = await _acknowledged(hub, devices) if kind == "twin" else None
        rss = hub.rss_mb()
    assert job.start_time is not None
    assert job.end_time is not None
    seconds = (job.end_time - job.start_time).total_seconds()
    stats = job.statistics
    waits = [w for r in results if (w := _ms(job.start_time, r.end_time_utc)) is not None]
    line = (
        f"fanout: devices={stats.device_count} kind={kind} seconds={seconds:.2f} "
        f"ops/s={stats.device_count / seconds:.0f} p50_ms={percentile(waits, 0.5):.0f} "
        f"p99_ms={percentile(waits, 0.99):.0f}"
    )
    if kind == "method":
        calls = [c for r in results if (c := _ms(r.start_time_utc, r.end_time_utc)) is not None]
        line += f" call_p50_ms={percentile(calls, 0.5):.1f} call_p99_ms={percentile(calls, 0.99):.1f}"
    if acked is not None:
        assert job.start_time is not None
        line += f" all_acked_s={(acked - job.start_time).total_seconds():.2f}"
    return (
        f"{line} succeeded={stats.succeeded_count} failed={stats.failed_count} status={job.status} "
        f"hub_peak_rss_mb={rss:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--kind", choices=("method", "twin"), default="method")
    parser.add_argument("--fleets", type=int, default=1, help="device_sim processes to spread the devices over")
    args = parser.parse_args()
    run = asyncio.run if uvloop is None else uvloop.run
    print(run(_run(args.devices, args.kind, args.fleets)))


if __name__ == "__main__":
    main()
