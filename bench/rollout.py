"""Rollout rate: one method job with ``rollout.maxPerMinute`` over a minute; prints one line.

    python -m bench.rollout --per-minute 600              # 600 devices' worth, one minute
    python -m bench.rollout --per-minute 1000 --seconds 30

The hub and the device fleet run as separate processes. The fleet has more devices than the
rate can reach in the window, so the pacer, not the fleet, is what is measured. Figures, all
from the hub's own per-device start times:

- ``achieved_per_minute``: devices started within ``--seconds`` of the first start, per minute;
- ``error_pct``: how far that is from the configured rate;
- ``max_per_10s`` / ``expected_per_10s``: the busiest 10-second window against the rate's
  share (the bucket allows no burst, so they should be within a device or two);
- ``succeeded``: devices whose call completed in the window (all should).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import time
from datetime import datetime

import httpx

from bench.harness import running_fleet, running_hub

try:
    import uvloop
except ImportError:  # Windows has no uvloop
    uvloop = None  # type: ignore[assignment]


async def _start_times(api: httpx.AsyncClient, job_id: str) -> tuple[list[datetime], int]:
    starts: list[datetime] = []
    succeeded = 0
    continuation: str | None = None
    while True:
        headers = {"x-ms-max-item-count": "1000"}
        if continuation:
            headers["x-ms-continuation"] = continuation
        response = await api.get(f"/jobs/v2/{job_id}/devices", headers=headers)
        response.raise_for_status()
        for row in response.json():
            if row.get("startTimeUtc"):
                starts.append(datetime.fromisoformat(row["startTimeUtc"]))
            succeeded += row["status"] == "completed"
        continuation = response.headers.get("x-ms-continuation")
        if not continuation:
            return sorted(starts), succeeded


def _busiest(offsets: list[float], window: float) -> int:
    return max((bisect.bisect_right(offsets, t + window) - i for i, t in enumerate(offsets)), default=0)


async def _run(per_minute: int, seconds: float) -> str:
    devices = int(per_minute * seconds / 60 * 1.2) + 10
    async with running_hub() as hub, running_fleet(hub, devices, prefix="roll-", extra=("--log-level", "ERROR")):
        async with httpx.AsyncClient(base_url=hub.url, headers=hub.auth_header(), timeout=30) as api:
            job_id = f"bench-rollout-{int(time.time())}"
            body = {
                "type": "scheduleDeviceMethod",
                "queryCondition": "STARTSWITH(deviceId, 'roll-')",
                "cloudToDeviceMethod": {"methodName": "lockDoor", "payload": {}, "responseTimeoutInSeconds": 30},
                "rollout": {"maxPerMinute": per_minute},
                "maxExecutionTimeInSeconds": int(seconds) + 60,
            }
            (await api.put(f"/jobs/v2/{job_id}", json=body)).raise_for_status()
            await asyncio.sleep(seconds + 2)
            (await api.post(f"/jobs/v2/{job_id}/cancel")).raise_for_status()
            await asyncio.sleep(1)  # calls in flight finish
            starts, succeeded = await _start_times(api, job_id)
        rss = hub.rss_mb()
    first = starts[0]
    offsets = [(s - first).total_seconds() for s in starts]
    in_window = bisect.bisect_left(offsets, seconds)
    achieved = in_window * 60 / seconds
    expected_10s = per_minute / 6
    return (
        f"rollout: devices={devices} configured_per_minute={per_minute} seconds={seconds:g} "
        f"started={in_window} achieved_per_minute={achieved:.1f} "
        f"error_pct={100 * (achieved - per_minute) / per_minute:+.2f} "
        f"max_per_10s={_busiest(offsets[:in_window], 10.0)} expected_per_10s={expected_10s:.1f} "
        f"succeeded={succeeded} hub_peak_rss_mb={rss:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-minute", type=int, default=600, help="rollout.maxPerMinute (1-1000)")
    parser.add_argument("--seconds", type=float, default=60.0, help="the window measured")
    args = parser.parse_args()
    run = asyncio.run if uvloop is None else uvloop.run
    print(run(_run(args.per_minute, args.seconds)))


if __name__ == "__main__":
    main()
