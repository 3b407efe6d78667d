"""The README's demo: a hub on its defaults, simulated devices, a direct method and a twin update."""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from device_sim.connection import MqttEndpoint
from device_sim.fleet import Fleet
from hub.config import Settings
from hub.runtime import Hub
from hub.wire.sas import ConnectionString
from job_client.registry import AsyncRegistryClient

__all__ = ["run_demo"]


def _free_or_any(port: int) -> int:
    """The default port when it is free, else 0 (any free port): the demo must run on a busy machine."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return 0
    return port


async def _wait_for(condition: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return True
        await asyncio.sleep(0.05)
    return False


async def run_demo(*, device_count: int = 20, data_dir: Path | None = None) -> int:
    console = Console()
    own_dir = data_dir is None
    directory = Path(tempfile.mkdtemp(prefix="fleethub-demo-")) if own_dir else data_dir
    assert directory is not None
    settings = Settings(
        data_dir=directory,
        bind_address="127.0.0.1",
        http_port=_free_or_any(8080),
        https_port=_free_or_any(8443),
        mqtt_port=_free_or_any(1883),
        mqtts_port=_free_or_any(8883),
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
            async with AsyncRegistryClient.from_connection_string(service_cs, url=ep.http_url) as registry:
                started = time.monotonic()
                fleet = await Fleet.provision(registry, endpoint, count=device_count, prefix="demo-")
                async with fleet:
                    await fleet.wait_connected(timeout=30)
                    console.print(
                        f"{fleet.connected_count}/{len(fleet)} simulated devices connected over "
                        f"MQTT/TLS in {time.monotonic() - started:.1f} s"
                    )
                    return await _show(console, registry, fleet)
    finally:
        if own_dir:
            shutil.rmtree(directory, ignore_errors=True)


async def _show(console: Console, registry: AsyncRegistryClient, fleet: Fleet) -> int:
    devices = list(fleet)
    target, patched = devices[0], devices[min(1, len(devices) - 1)]

    result = await registry.invoke_method(target.device_id, "lockDoor", {"door": "front"}, response_timeout=10)
    console.print(f"lockDoor on [cyan]{target.device_id}[/]: status {result.status}, payload {result.payload}")

    twin = await registry.update_twin(patched.device_id, {"properties": {"desired": {"building": "43", "floor": 3}}})
    version = twin.properties.desired.get("$version")
    console.print(f"desired building=43, floor=3 set on [cyan]{patched.device_id}[/] (desired $version {version})")
    acked = await _wait_for(lambda: patched.desired.get("floor") == 3, 10)
    await asyncio.sleep(0.3)  # let the device's reported acknowledgement land
    twin = await registry.get_twin(patched.device_id)
    reported = {k: v for k, v in twin.properties.reported.items() if not k.startswith("$")}
    console.print(f"device applied it: {acked}; reported now {reported}")

    table = Table(title="devices")
    for column in ("deviceId", "connectionState", "status"):
        table.add_column(column)
    for device in await registry.list_devices(max_count=10):
        table.add_row(device.device_id, str(device.connection_state), str(device.status))
    console.print(table)
    ok = result.status == 200 and acked
    console.print("[bold green]demo finished[/]" if ok else "[bold red]demo failed[/]")
    return 0 if ok else 1
