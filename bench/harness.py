"""Start a hub and a simulated fleet as separate processes on free ports, for benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from hub.wire.sas import generate_sas_token, parse_connection_string

__all__ = ["BenchHub", "free_port", "percentile", "running_fleet", "running_hub"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@dataclass
class BenchHub:
    process: subprocess.Popen[bytes]
    data_dir: Path
    http_port: int
    mqtt_port: int
    connection_string: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def auth_header(self) -> dict[str, str]:
        cs = parse_connection_string(self.connection_string)
        return {
            "Authorization": generate_sas_token(cs.hostname, cs.shared_access_key, ttl=24 * 3600, key_name=cs.key_name)
        }

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")


@contextlib.contextmanager
def _terminating(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.asynccontextmanager
async def running_hub(*extra: str) -> AsyncIterator[BenchHub]:
    with tempfile.TemporaryDirectory(prefix="fleethub-bench-") as tmp:
        data_dir = Path(tmp)
        http_port, mqtt_port = free_port(), free_port()
        args = [
            sys.executable,
            "-m",
            "hub",
            "serve",
            "--data-dir",
            str(data_dir),
            "--bind-address",
            "127.0.0.1",
            "--http-port",
            str(http_port),
            "--https-port",
            "0",
            "--mqtt-port",
            str(mqtt_port),
            "--mqtts-port",
            "0",
            "--log-level",
            "WARNING",
            *extra,
        ]
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        with _terminating(process):
            async with httpx.AsyncClient() as client:
                deadline = time.monotonic() + 60
                while True:
                    if process.poll() is not None:
                        raise RuntimeError(f"hub exited with {process.returncode}")
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"http://127.0.0.1:{http_port}/healthz")).status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise RuntimeError("hub did not become healthy in 60 s")
                    await asyncio.sleep(0.1)
            cs = subprocess.run(
                [sys.executable, "-m", "hub", "connection-string", "--data-dir", str(data_dir)],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
            yield BenchHub(process, data_dir, http_port, mqtt_port, cs)


@contextlib.asynccontextmanager
async def running_fleet(
    hub: BenchHub,
    count: int,
    *,
    prefix: str = "bench-",
    extra: tuple[str, ...] = (),
    expect_connected: int | None = None,
) -> AsyncIterator[subprocess.Popen[bytes]]:
    """A device_sim process with ``count`` devices, returned once the hub counts
    ``expect_connected`` connected devices (default ``count``: this fleet's alone)."""
    expected = count if expect_connected is None else expect_connected
    args = [
        sys.executable,
        "-m",
        "device_sim",
        "--hub-connection-string",
        hub.connection_string,
        "--url",
        hub.url,
        "--count",
        str(count),
        "--prefix",
        prefix,
        "--mqtt-host",
        "127.0.0.1",
        "--mqtt-port",
        str(hub.mqtt_port),
        "--no-tls",
        "--status-interval",
        "3600",
        *extra,
    ]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    with _terminating(process):
        async with httpx.AsyncClient(base_url=hub.url, headers=hub.auth_header(), timeout=30) as client:
            deadline = time.monotonic() + 120 + count / 50
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"device_sim exited with {process.returncode}")
                response = await client.get("/healthz")
                if response.status_code == 200 and response.json().get("connectedDevices", 0) >= expected:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("fleet did not connect in time")
                await asyncio.sleep(0.2)
        yield process
