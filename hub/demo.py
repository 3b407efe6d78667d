"""The README's demo: a hub on its defaults, simulated devices, a lockDoor job and a twin update job.

Everything runs in one process and is gone at the end: the fleet disconnects, the hub stops and
the temporary data directory is removed (a ``data_dir`` given by the caller is kept).
"""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.json import JSON
from rich.table import Table

from device_sim.connection import MqttEndpoint
from device_sim.fleet import Fleet
from hub.config import Settings
from hub.runtime import Hub
from hub.wire.sas import ConnectionString
from job_client.errors import FleetHubError
from job_client.jobs import AsyncJobClient
from job_client.models import DeviceJobResult, Job, JobStatus, MethodParams, Twin
from job_client.progress import JobProgress
from job_client.registry import AsyncRegistryClient

__all__ = ["DEFAULT_DEVICES", "run_demo"]

DEFAULT_DEVICES = 100
_PREFIX = "demo-"
_QUERY = "tags.building = '42'"
_LOCK = MethodParams("lockDoor", {"door": "front"}, response_timeout_in_seconds=10)
_MOVE = {"tags": {"building": "43"}, "properties": {"desired": {"building": "43", "floor": 3}}}
_MAX_EXECUTION_SECONDS = 30  # the hub fails devices it could not reach by then
_WAIT_SECONDS = 45.0  # the demo gives up on a job after this long
_POLL_SECONDS = 0.2
_SHOWN_DEVICES = 10


def _free_or_any(port: int, wanted: bool = True) -> int:
    """The default port when it is free, else 0 (any free port): the demo must run on a busy machine."""
    if not wanted:
        return 0
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port


@dataclass(frozen=True, slots=True)
class _JobRun:
    """One watched job: its final state, every device's outcome and how long it took."""

    kind: str
    job: Job
    results: dict[str, DeviceJobResult]
    seconds: float

    @property
    def ok(self) -> bool:
        stats = self.job.statistics
        return (
            self.job.status is JobStatus.COMPLETED
            and stats.failed_count == 0
            and stats.device_count > 0
            and stats.succeeded_count == stats.device_count
        )


async def run_demo(
    *,
    device_count: int = DEFAULT_DEVICES,
    data_dir: Path | None = None,
    console: Console | None = None,
    default_ports: bool = True,
) -> int:
    """Run the demo; 0 when both jobs completed on every device, 1 otherwise.

    ``default_ports=False`` takes free ports even when the defaults are free (for tests)."""
    console = console or Console()
    own_dir = data_dir is None
    directory = Path(tempfile.mkdtemp(prefix="fleethub-demo-")) if data_dir is None else data_dir
    settings = Settings(
        data_dir=directory,
        bind_address="127.0.0.1",
        http_port=_free_or_any(8080, default_ports),
        https_port=_free_or_any(8443, default_ports),
        mqtt_port=_free_or_any(1883, default_ports),
        mqtts_port=_free_or_any(8883, default_ports),
    )
    try:
        async with Hub(settings) as hub:
            assert hub.endpoints is not None
            assert hub.services is not None
            ep = hub.endpoints
            console.print(
                f"[bold]fleethub[/] up: REST {ep.http_url}, MQTT/TLS 127.0.0.1:{ep.mqtts_port}, data in {directory}"
            )
            owner = hub.services.policies["iothubowner"]
            service_cs = str(ConnectionString(settings.hostname, owner.primary_key, key_name=owner.name))
            endpoint = MqttEndpoint.for_hub(
                settings.hostname, host="127.0.0.1", port=ep.mqtts_port, tls=True, ca_cert=ep.ca_cert
            )
            async with (
                AsyncRegistryClient.from_connection_string(service_cs, url=ep.http_url) as registry,
                AsyncJobClient.from_connection_string(service_cs, url=ep.http_url) as jobs,
            ):
                started = time.monotonic()
                fleet = await Fleet.provision(registry, endpoint, count=device_count, prefix=_PREFIX)
                await _tag(registry, [device.device_id for device in fleet], {"building": "42"})
                async with fleet:
                    await fleet.wait_connected(timeout=30)
                    console.print(
                        f"{fleet.connected_count}/{len(fleet)} simulated devices in building 42 connected over "
                        f"MQTT/TLS in {time.monotonic() - started:.1f} s"
                    )
                    ok = await _jobs(console, registry, jobs, fleet)
            _print_reproduce(console, None if own_dir else directory)
            console.print("[bold green]demo finished[/]" if ok else "[bold red]demo failed[/]")
            return 0 if ok else 1
    finally:
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)


async def _tag(registry: AsyncRegistryClient, device_ids: list[str], tags: Mapping[str, Any]) -> None:
    """Put every device in the demo's starting place (a few twin updates at a time)."""
    gate = asyncio.Semaphore(16)

    async def one(device_id: str) -> None:
        async with gate:
            await registry.update_twin(device_id, {"tags": dict(tags)})

    async with asyncio.TaskGroup() as tg:
        for device_id in device_ids:
            tg.create_task(one(device_id))


async def _jobs(console: Console, registry: AsyncRegistryClient, jobs: AsyncJobClient, fleet: Fleet) -> bool:
    stamp = datetime.now().strftime("%H%M%S")
    lock = await _watch(
        console,
        jobs,
        f"lock-doors-{stamp}",
        "lockDoor",
        f"lockDoor on every device where {_QUERY}",
        lambda job_id: jobs.schedule_device_method(
            job_id, _QUERY, _LOCK, max_execution_time_in_seconds=_MAX_EXECUTION_SECONDS
        ),
    )
    move = await _watch(
        console,
        jobs,
        f"move-{stamp}",
        "twin update",
        f'twin update tags.building "43", desired building "43" floor 3 where {_QUERY}',
        lambda job_id: jobs.schedule_twin_update(
            job_id, _QUERY, _MOVE, max_execution_time_in_seconds=_MAX_EXECUTION_SECONDS
        ),
    )
    runs = [lock, move]
    _print_summary(console, runs)
    _print_devices(console, runs, [device.device_id for device in fleet])

    applied = await _wait_until(lambda: all(d.desired.get("floor") == 3 for d in fleet), 10)
    acked = sum(1 for device in fleet if device.desired.get("floor") == 3)
    console.print(f"{acked}/{len(fleet)} devices applied desired floor 3")
    first = next(iter(fleet)).device_id
    twin = await _acknowledged_twin(registry, first)
    reported_floor = twin.properties.reported.get("floor")
    _print_twin(console, twin)
    return lock.ok and move.ok and applied and reported_floor == 3


async def _watch(
    console: Console,
    jobs: AsyncJobClient,
    job_id: str,
    kind: str,
    title: str,
    schedule: Callable[[str], Awaitable[Job]],
) -> _JobRun:
    """Schedule a job, follow it with the progress display to its end, then read every device's outcome."""
    console.print(f"\n[bold]{job_id}[/]: {title}")
    started = time.monotonic()
    await schedule(job_id)
    with JobProgress(job_id, console=console) as view:
        try:
            job = await jobs.wait_for_job(job_id, _POLL_SECONDS, view.update, timeout=_WAIT_SECONDS)
        except FleetHubError as exc:
            console.print(f"[bold red]{job_id} did not finish:[/] {exc}")
            job = await jobs.get_job(job_id)
    seconds = time.monotonic() - started
    stats = job.statistics
    console.print(
        f"{job_id} {job.status} in {seconds:.1f} s: {stats.succeeded_count} succeeded, "
        f"{stats.failed_count} failed of {stats.device_count} devices"
    )
    results = {result.device_id: result async for result in jobs.list_device_results(job_id)}
    return _JobRun(kind, job, results, seconds)


def _print_summary(console: Console, runs: list[_JobRun]) -> None:
    table = Table(title="jobs")
    for column in ("jobId", "job", "status", "devices", "succeeded", "failed", "seconds"):
        table.add_column(column)
    for run in runs:
        stats = run.job.statistics
        table.add_row(
            run.job.job_id,
            run.kind,
            str(run.job.status),
            str(stats.device_count),
            str(stats.succeeded_count),
            str(stats.failed_count),
            f"{run.seconds:.1f}",
        )
    console.print(table)


def _outcome(result: DeviceJobResult | None) -> str:
    if result is None:
        return "not selected"
    if result.error is not None:
        return f"{result.status}: {result.error.code or ''} {result.error.description or ''}".strip()
    response = result.method_response
    if response is not None:
        return f"{result.status}: {response.status} {json.dumps(response.payload)}"
    return str(result.status)


def _print_devices(console: Console, runs: list[_JobRun], device_ids: list[str]) -> None:
    """The first few devices with their outcome in each job; failed devices are always shown."""
    failed = [d for d in device_ids if any(r.results.get(d) is None or _failed(r.results[d]) for r in runs)]
    shown = list(dict.fromkeys(device_ids[:_SHOWN_DEVICES] + failed))
    hidden = len(device_ids) - len(shown)
    table = Table(
        title="per-device results", caption=f"... and {hidden} more devices, all completed" if hidden > 0 else None
    )
    table.add_column("deviceId")
    for run in runs:
        table.add_column(run.job.job_id)
    for device_id in shown:
        table.add_row(device_id, *(_outcome(run.results.get(device_id)) for run in runs))
    console.print(table)


def _failed(result: DeviceJobResult) -> bool:
    return result.error is not None or str(result.status) != "completed"


async def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def _acknowledged_twin(registry: AsyncRegistryClient, device_id: str, timeout: float = 10) -> Twin:
    """The device's twin once its reported properties acknowledge floor 3 (or as it is after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        twin = await registry.get_twin(device_id)
        if twin.properties.reported.get("floor") == 3 or time.monotonic() >= deadline:
            return twin
        await asyncio.sleep(0.1)


def _print_twin(console: Console, twin: Twin) -> None:
    def plain(section: Mapping[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in section.items() if key != "$metadata"}

    document = {
        "deviceId": twin.device_id,
        "tags": twin.tags,
        "properties": {"desired": plain(twin.properties.desired), "reported": plain(twin.properties.reported)},
    }
    acknowledged = twin.properties.reported.get("floor") == 3
    note = "reported floor 3: the device acknowledged the update" if acknowledged else "not acknowledged yet"
    console.print(f"\ntwin of [cyan]{twin.device_id}[/] ({note})")
    console.print(JSON(json.dumps(document)))


def _print_reproduce(console: Console, data_dir: Path | None) -> None:
    """The same steps with the simulator and the job client CLI, against ``python -m hub serve``."""
    directory = data_dir or Settings().data_dir
    dir_flag = f" --data-dir {shlex.quote(str(data_dir))}" if data_dir is not None else ""
    ca_cert = shlex.quote(str(directory / "tls" / "ca.pem"))
    query = f'"{_QUERY}"'  # no $, ` or " in it: double quotes read better than shlex's
    lines = [
        f"python -m hub serve{dir_flag} &",
        f'export FLEETHUB_CONNECTION_STRING="$(python -m hub connection-string{dir_flag})"'
        " FLEETHUB_URL=http://127.0.0.1:8080",
        f"python -m device_sim --count 100 --prefix {_PREFIX} --ca-cert {ca_cert} &",
        f"python -m job_client schedule-twin-update tag --query \"STARTSWITH(deviceId, '{_PREFIX}')\""
        f" --tags {shlex.quote(json.dumps({'building': '42'}))}",
        "python -m job_client watch tag",
        f"python -m job_client schedule-method lock-doors --query {query} --method lockDoor"
        f" --payload {shlex.quote(json.dumps(_LOCK.payload))}",
        "python -m job_client watch lock-doors",
        f"python -m job_client schedule-twin-update move --query {query} --patch {shlex.quote(json.dumps(_MOVE))}",
        "python -m job_client watch move",
        "python -m job_client results move",
        f"python -m job_client twin get {_PREFIX}0000",
    ]
    console.print("\nThe same by hand, with the simulator and the job client CLI:")
    for line in lines:
        console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)
