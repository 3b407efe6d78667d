"""Hub child processes for end-to-end tests: ``python -m hub`` on a tmp data dir, on free
ports (never the defaults: 1883 and 8883 may belong to other services), killed at the end."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from hub.netbind import free_port
from hub.wire.sas import generate_sas_token, parse_connection_string

HOST = "127.0.0.1"
START_TIMEOUT = 60.0  # upper bound for a hub process to answer /healthz, or to give up
EXIT_TIMEOUT = 15.0  # upper bound for a clean shutdown after SIGTERM / SIGINT


# -- running the CLI ----------------------------------------------------------------------------


def hub_env(**settings: str) -> dict[str, str]:
    """This environment without any FLEETHUB_* variable of the developer's, plus ``settings``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLEETHUB_")}
    # A wide terminal so help text is not wrapped inside an option name.
    env.update(COLUMNS="200", NO_COLOR="1", PYTHONUNBUFFERED="1")
    env.update(settings)
    return env


def run_cli(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m hub ARGS`` to completion (killed after START_TIMEOUT)."""
    return subprocess.run(
        [sys.executable, "-m", "hub", *map(str, args)],
        capture_output=True,
        text=True,
        env=env if env is not None else hub_env(),
        cwd=cwd,
        timeout=START_TIMEOUT,
        check=False,
    )


async def arun_cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, *args, env=env)


async def connection_string(data_dir: Path, *args: str) -> str:
    result = await arun_cli("connection-string", "--data-dir", data_dir, *args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout.strip()


def assert_clean_failure(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """A non-zero exit whose stderr says what is wrong (every needle) without a traceback."""
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def assert_not_listening(*ports: int) -> None:
    for port in ports:
        with socket.socket() as probe:
            probe.settimeout(5)
            assert probe.connect_ex((HOST, port)) != 0, f"something still listens on {port}"


def free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port(HOST))
    return sorted(ports)


@contextmanager
def listening_socket() -> Iterator[int]:
    """A port this test holds (bound and listening on 127.0.0.1) until the block ends."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        sock.listen()
        yield sock.getsockname()[1]


# -- hub processes ------------------------------------------------------------------------------


@dataclass
class ServeProcess:
    proc: asyncio.subprocess.Process
    data_dir: Path
    http_port: int
    mqtt_port: int
    stdout: Path
    stderr: Path

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def output(self) -> str:
        out, err = (path.read_text(errors="replace") for path in (self.stdout, self.stderr))
        return f"--- stdout\n{out}\n--- stderr\n{err}"

    async def wait_healthy(self) -> None:
        async with httpx.AsyncClient(base_url=self.http_url, timeout=5) as client:
            try:
                async with asyncio.timeout(START_TIMEOUT):
                    while True:
                        if self.proc.returncode is not None:
                            raise AssertionError(f"hub exited with {self.proc.returncode}:\n{self.output()}")
                        try:
                            if (await client.get("/healthz")).status_code == 200:
                                return
                        except httpx.TransportError:
                            pass
                        await asyncio.sleep(0.1)
            except TimeoutError:
                raise AssertionError(f"hub never became healthy:\n{self.output()}") from None

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Send ``sig`` and wait (at most EXIT_TIMEOUT) for the exit code."""
        self.proc.send_signal(sig)
        try:
            async with asyncio.timeout(EXIT_TIMEOUT):
                return await self.proc.wait()
        except TimeoutError:
            raise AssertionError(f"hub still running {EXIT_TIMEOUT} s after {sig.name}:\n{self.output()}") from None


@dataclass
class Launcher:
    """Starts ``python -m hub serve`` processes and kills whatever is left at the end of the test."""

    tmp_path: Path
    started: list[ServeProcess] = field(default_factory=list)

    async def serve(
        self,
        data_dir: Path,
        *,
        env: dict[str, str] | None = None,
        flags: bool = True,
        ports: Sequence[int] | None = None,
    ) -> ServeProcess:
        """Start and wait for /healthz. With ``flags`` the data dir and ports (``ports`` =
        (http, mqtt), or free ones) go on the command line; without, ``env`` alone configures
        the hub (``data_dir`` is then only where tests look)."""
        env = dict(env or {})
        if flags:
            http_port, mqtt_port = ports or free_ports(2)
            args = [
                "--data-dir", str(data_dir), "--bind-address", HOST,
                "--http-port", str(http_port), "--https-port", "0",
                "--mqtt-port", str(mqtt_port), "--mqtts-port", "0",
            ]  # fmt: skip
        else:
            http_port, mqtt_port = int(env["FLEETHUB_HTTP_PORT"]), int(env["FLEETHUB_MQTT_PORT"])
            args = []
        n = len(self.started)
        out, err = self.tmp_path / f"serve-{n}.stdout", self.tmp_path / f"serve-{n}.stderr"
        cwd = self.tmp_path / f"cwd-{n}"
        cwd.mkdir()
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "hub", "serve", *args, stdout=stdout, stderr=stderr, env=hub_env(**env), cwd=cwd
            )
        hub = ServeProcess(proc, data_dir, http_port, mqtt_port, out, err)
        self.started.append(hub)
        await hub.wait_healthy()
        return hub

    async def kill_all(self) -> None:
        for hub in self.started:
            if hub.proc.returncode is None:
                hub.proc.kill()
            await hub.proc.wait()


@asynccontextmanager
async def service_api(hub: ServeProcess, policy: str = "iothubowner") -> AsyncIterator[httpx.AsyncClient]:
    """A REST client signed with the policy key that ``connection-string`` prints."""
    parsed = parse_connection_string(await connection_string(hub.data_dir, "--policy", policy))
    assert parsed.key_name == policy
    token = generate_sas_token(parsed.hostname, parsed.shared_access_key, key_name=policy)
    async with httpx.AsyncClient(base_url=hub.http_url, timeout=30, headers={"Authorization": token}) as client:
        yield client
