"""Direct-method round trips through the REST API against simulated devices; prints one line.

    python -m bench.methods [--devices 100] [--calls 5000] [--concurrency 64]

The hub and the simulated fleet run as separate processes; this process is the back end,
calling ``POST /twins/{id}/methods`` with ``concurrency`` requests in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time

import httpx

from bench.harness import percentile, running_fleet, running_hub

try:
    import uvloop
except ImportError:  # Windows has no uvloop
    uvloop = None  # type: ignore[assignment]


async def _run(devices: int, calls: int, concurrency: int) -> str:
    async with running_hub() as hub, running_fleet(hub, devices):
        ids = [f"bench-{i:04d}" for i in range(devices)]
        targets = itertools.cycle(ids)
        latencies: list[float] = []
        failures = 0

        async def worker(n: int) -> None:
            # One single-connection client per worker: httpcore scans its whole pool on every request
            # (a getpeername per connection), which made one shared 64-connection client the bottleneck.
            nonlocal failures
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            async with httpx.AsyncClient(
                base_url=hub.url, headers=hub.auth_header(), limits=limits, timeout=60
            ) as client:
                for _ in range(n):
                    started = time.perf_counter()
                    response = await client.post(
                        f"/twins/{next(targets)}/methods",
                        json={"methodName": "lockDoor", "payload": {"door": "front"}, "responseTimeoutInSeconds": 30},
                    )
                    latencies.append(time.perf_counter() - started)
                    if response.status_code != 200 or response.json().get("status") != 200:
                        failures += 1

        await asyncio.gather(*(worker(10) for _ in range(concurrency)))  # warm-up: connections, caches
        latencies.clear()
        failures = 0
        per_worker = [calls // concurrency + (1 if i < calls % concurrency else 0) for i in range(concurrency)]
        started = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in per_worker))
        elapsed = time.perf_counter() - started
        rss = hub.rss_mb()
    return (
        f"methods: devices={devices} calls={calls} concurrency={concurrency} calls/s={calls / elapsed:.0f} "
        f"p50_ms={percentile(latencies, 0.5) * 1000:.1f} p99_ms={percentile(latencies, 0.99) * 1000:.1f} "
        f"failures={failures} hub_peak_rss_mb={rss:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    run = asyncio.run if uvloop is None else uvloop.run
    print(run(_run(args.devices, args.calls, args.concurrency)))


if __name__ == "__main__":
    main()
