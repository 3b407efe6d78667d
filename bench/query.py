"""Twin query speed on SQLite with 100,000 realistic twins; prints one line.

    python -m bench.query [--twins 100000] [--runs 30]

Measures the engine's query path (parse, compile, SQL, paging, documents) without HTTP:
a selective tag query, a reported-property range query, a COUNT() GROUP BY over all twins,
and a walk of 10,000 results in pages of 1,000.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from bench.harness import percentile
from hub.domain.clock import SystemClock
from hub.domain.devices import new_device
from hub.domain.twin import PropertySet, Twin
from hub.engine.query import QueryService
from hub.engine.sessions.presence import PresenceService
from hub.storage.mappers import new_device_values, twin_values
from hub.storage.sql import SqlStore
from hub.storage.tables import DeviceRow


def _twin(rng: random.Random, device_id: str) -> Twin:
    tags = {
        "location": {
            "region": rng.choice(["US", "EU", "APAC"]),
            "building": str(rng.randint(1, 50)),
            "floor": rng.randint(1, 20),
        },
        "deviceType": rng.choice(["lock", "thermostat", "camera", "sensor"]),
        "customer": f"cust-{rng.randint(1, 2000)}",
    }
    reported = {
        "firmware": rng.choice(["1.0.0", "1.1.0", "2.0.0"]),
        "telemetryConfig": {
            "sendFrequencyInSecs": rng.choice([30, 60, 300, 900]),
            "status": rng.choice(["Pending", "Success", "Failed"]),
        },
        "battery": rng.randint(0, 100),
        "connectivity": rng.choice(["wired", "wifi", "cellular"]),
    }
    return Twin(
        device_id,
        tags=tags,
        desired=PropertySet({"building": "43", "floor": 3}, {}, 2),
        reported=PropertySet(reported, {}, 2),
        version=2,
        revision=3,
    )


async def _load(store: SqlStore, count: int) -> None:
    rng = random.Random(7)
    now = datetime.now(UTC)
    table = DeviceRow.__table__  # type: ignore[attr-defined]
    batch: list[dict[str, object]] = []
    for i in range(count):
        device_id = f"dev-{i:06d}"
        batch.append({**new_device_values(new_device(device_id, now)), **twin_values(_twin(rng, device_id))})
        if len(batch) == 5000 or i == count - 1:
            async with store.engine.begin() as conn:
                await conn.execute(table.insert(), batch)
            batch = []


async def _time(runs: int, call: Callable[[int], Awaitable[object]]) -> list[float]:
    samples = []
    for i in range(runs):
        started = time.perf_counter()
        await call(i)
        samples.append(time.perf_counter() - started)
    return samples


def _ms(samples: list[float]) -> str:
    return f"p50={percentile(samples, 0.5) * 1000:.1f}ms p99={percentile(samples, 0.99) * 1000:.1f}ms"


async def _run(twins: int, runs: int) -> str:
    with tempfile.TemporaryDirectory(prefix="fleethub-qbench-") as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
        async with SqlStore.open(url) as store:
            started = time.perf_counter()
            await _load(store, twins)
            load_s = time.perf_counter() - started
            service = QueryService(store, PresenceService(store, SystemClock()))

            async def selective(i: int) -> object:
                page = await service.run(f"SELECT * FROM devices WHERE tags.customer = 'cust-{i * 37 % 2000 + 1}'")
                return page.items

            async def reported_range(i: int) -> object:
                low = i % 90
                return (
                    await service.run(
                        "SELECT * FROM devices WHERE properties.reported.battery >= "
                        f"{low} AND properties.reported.battery < {low + 2}"
                    )
                ).items

            async def group_by(_: int) -> object:
                return (
                    await service.run(
                        "SELECT properties.reported.telemetryConfig.status AS status, COUNT() AS numberOfDevices "
                        "FROM devices GROUP BY properties.reported.telemetryConfig.status"
                    )
                ).items

            pages: list[float] = []

            async def walk(_: int) -> object:
                token, seen = None, 0
                while seen < 10_000:
                    started = time.perf_counter()
                    page = await service.run(
                        "SELECT * FROM devices WHERE tags.location.region != 'nowhere'",
                        page_size=1000,
                        continuation=token,
                    )
                    pages.append(time.perf_counter() - started)
                    seen += len(page.items)
                    token = page.continuation
                    if token is None:
                        break
                return seen

            await selective(0)  # warm the page cache
            s = await _time(runs, selective)
            r = await _time(runs, reported_range)
            g = await _time(max(5, runs // 3), group_by)
            w = await _time(3, walk)
    return (
        f"query: twins={twins} load_s={load_s:.1f} selective_tag {_ms(s)} | reported_range {_ms(r)} | "
        f"count_group_by {_ms(g)} | walk_10k {_ms(w)} (page of 1000 {_ms(pages)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--twins", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    print(asyncio.run(_run(args.twins, args.runs)))


if __name__ == "__main__":
    main()
