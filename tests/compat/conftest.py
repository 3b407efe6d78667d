"""A hub on the ports the Azure IoT SDKs insist on, and the SDKs' own environments.

The SDKs take host and port from the connection string's ``HostName``: the device SDKs
connect to ``{HostName}:8883`` (Python always; Node by default) and the Node service SDK to
``https://{HostName}`` on 443 (a port inside ``HostName`` does not reach Node's ``https``).
So the hub here listens on 127.0.0.1:8883 and :443 as ``localhost``, the name in its
certificate, exactly as README "Use with the Azure IoT SDKs" tells users to run it. Binding
443 needs root (or CAP_NET_BIND_SERVICE); where that or a free 8883 is missing the tests
skip, and under ``CI`` they fail.

One hub serves the whole compat session (the SDK flows are independent of each other by
device and job ids); the device tests restart it to prove reconnection.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from job_client import JobClient, RegistryClient
from job_client.errors import FleetHubError
from tests.compat.sdkenv import (
    NODE_PACKAGES,
    PYTHON_DEVICE,
    PYTHON_SERVICE,
    NodeEnv,
    PythonEnv,
    node_env,
    python_env,
    unavailable,
)
from tests.e2e.processes import HOST, START_TIMEOUT, free_ports, hub_env, run_cli
from tests.pki import Identity, make_ca, make_device, make_self_signed

HOSTNAME = "localhost"
MQTTS_PORT = 8883
HTTPS_PORT = 443
CLIENTS = Path(__file__).parent / "clients"
# A test may build an SDK environment first (a download) and wait out a job or a reconnect.
COMPAT_TIMEOUT = 600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.compat)
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.timeout(COMPAT_TIMEOUT))


@dataclass
class CompatHub:
    """``python -m hub serve`` on 8883/443 (plus free plain ports), restartable on the same data."""

    data_dir: Path
    log_dir: Path
    http_port: int
    mqtt_port: int
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _connection_strings: dict[str, str] = field(default_factory=dict)

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def ca_pem(self) -> Path:
        return self.data_dir / "tls" / "ca.pem"

    def log(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-6000:]}"
            for path in sorted(self.log_dir.glob("serve-*"))
        )

    def start(self) -> None:
        args = [
            "--data-dir", str(self.data_dir), "--hostname", HOSTNAME, "--bind-address", HOST,
            "--http-port", str(self.http_port), "--https-port", str(HTTPS_PORT),
            "--mqtt-port", str(self.mqtt_port), "--mqtts-port", str(MQTTS_PORT),
        ]  # fmt: skip
        n = self.starts
        self.starts += 1
        with (self.log_dir / f"serve-{n}.out").open("wb") as out, (self.log_dir / f"serve-{n}.err").open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hub", "serve", *args], stdout=out, stderr=err, env=hub_env()
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                text = self.log()
                if "already in use" in text or "administrator rights" in text:
                    unavailable(f"the SDK ports {MQTTS_PORT} and {HTTPS_PORT} cannot be bound here:\n{text[-800:]}")
                raise AssertionError(f"hub exited with {self.proc.returncode}:\n{text}")
            try:
                if httpx.get(f"{self.http_url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"hub never became healthy:\n{self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def connection_string(self, *args: str) -> str:
        key = " ".join(args)
        if key not in self._connection_strings:
            result = run_cli("connection-string", "--data-dir", self.data_dir, *args)
            assert result.returncode == 0, result.stderr
            self._connection_strings[key] = result.stdout.strip()
        return self._connection_strings[key]

    @property
    def service_connection_string(self) -> str:
        return self.connection_string()

    def registry(self) -> RegistryClient:
        """fleethub's own client, over https://localhost (443) like the SDKs."""
        return RegistryClient.from_connection_string(self.service_connection_string, ca_cert=self.ca_pem)

    def jobs(self) -> JobClient:
        return JobClient.from_connection_string(self.service_connection_string, ca_cert=self.ca_pem)

    def register(self, prefix: str, count: int, **tags: Any) -> list[str]:
        """Register ``count`` devices (tagged) without connecting them; return their ids."""
        ids = [f"{prefix}-{n}-{uuid.uuid4().hex[:6]}" for n in range(count)]
        with self.registry() as registry:
            for device_id in ids:
                registry.create_device(device_id)
                if tags:
                    registry.update_twin(device_id, {"tags": tags})
        return ids

    def new_device(self, prefix: str, **tags: Any) -> str:
        """Register a device (tagged), return its connection string."""
        device_id = f"{prefix}-{uuid.uuid4().hex[:6]}"
        with self.registry() as registry:
            registry.create_device(device_id)
            if tags:
                registry.update_twin(device_id, {"tags": tags})
        return self.connection_string("--device", device_id)


@pytest.fixture(scope="session")
def compat_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CompatHub]:
    base = tmp_path_factory.mktemp("compat-hub")
    http_port, mqtt_port = free_ports(2)
    hub = CompatHub(base / "data", base, http_port, mqtt_port)
    try:
        hub.start()
        yield hub
    finally:
        hub.stop()


@pytest.fixture(scope="session")
def py_device_env() -> PythonEnv:
    return python_env("azure-iot-device", PYTHON_DEVICE)


@pytest.fixture(scope="session")
def py_service_env() -> PythonEnv:
    return python_env("azure-iot-hub", PYTHON_SERVICE)


@pytest.fixture(scope="session")
def node_sdks() -> NodeEnv:
    return node_env("node-sdks", NODE_PACKAGES)


def device_id_of(connection_string: str) -> str:
    fields = dict(part.split("=", 1) for part in connection_string.split(";"))
    return fields["DeviceId"]


class Agent:
    """A long-running SDK client process that prints one JSON event per line.

    ``expect`` waits for the next event matching a predicate (earlier ones that do not match
    are kept in ``seen``); the process is killed on ``close``.
    """

    def __init__(self, args: list[str], *, env: dict[str, str], cwd: Path, name: str) -> None:
        self.name = name
        self.seen: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    self._events.put(json.loads(line))

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def output(self) -> str:
        return f"--- {self.name} (exit {self.proc.poll()})\n" + "\n".join(self.lines[-80:])

    def expect(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no matching event within {timeout} s\n{self.output()}")
            try:
                event = self._events.get(timeout=min(remaining, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None and self._events.empty():
                    raise AssertionError(f"{self.name} exited\n{self.output()}") from None
                continue
            self.seen.append(event)
            if predicate(event):
                return event

    def wait_line(self, text: str, timeout: float = 30) -> str:
        """Wait until a printed line contains ``text`` (for scripts that print prose)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if text in line:
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"{self.name}: no line with {text!r} within {timeout} s\n{self.output()}")

    def event(self, kind: str, timeout: float = 30, **fields: Any) -> dict[str, Any]:
        return self.expect(lambda e: e.get("event") == kind and all(e.get(k) == v for k, v in fields.items()), timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def sdk_env(hub: CompatHub, **extra: str) -> dict[str, str]:
    """The environment for an SDK process: the hub's CA trusted the way each SDK documents."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("FLEETHUB_", "PYTHON"))}
    env.update(
        PYTHONUNBUFFERED="1",
        REQUESTS_CA_BUNDLE=str(hub.ca_pem),  # requests (azure-iot-hub)
        NODE_EXTRA_CA_CERTS=str(hub.ca_pem),  # Node's tls
        FLEETHUB_CA_PEM=str(hub.ca_pem),  # read by the Python device script for server_verification_cert
    )
    env.update(extra)
    return env


def run_flow(args: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 180) -> Any:
    """Run one SDK flow script to completion and return the JSON it printed last."""
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    shown = f"{' '.join(args[1:])}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}"
    assert result.returncode == 0, shown
    lines = [line for line in result.stdout.splitlines() if line.startswith(("{", "["))]
    assert lines, shown
    return json.loads(lines[-1])


DeviceAgents = Callable[..., tuple[str, Agent]]


@pytest.fixture(scope="session")
def device_ca(compat_hub: CompatHub) -> Identity:
    """A CA registered with the compat hub (``PUT /certificates``) for certificateAuthority devices."""
    ca = make_ca("fleethub compat root")
    with compat_hub.registry() as registry:
        registry.put_certificate("compat-root", ca.pem)
    return ca


@pytest.fixture(scope="session")
def device_agents(
    compat_hub: CompatHub, device_ca: Identity, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DeviceAgents]:
    """``start(sdk, prefix, transport="mqtt", auth="sas", **tags)``: register a device (tagged)
    and run it on the real device SDK ``sdk`` ("python" or "node"), over MQTT/TLS on 8883 or
    ``transport="websockets"`` (wss on 443), logging in with a SAS connection string or an X.509
    certificate (``auth="selfSigned"``: registered by thumbprint; ``auth="certificateAuthority"``:
    issued by ``device_ca``). Every agent is stopped at the end of the session."""
    agents: list[Agent] = []
    certificates = tmp_path_factory.mktemp("device-certificates")

    def start(sdk: str, prefix: str, *, transport: str = "mqtt", auth: str = "sas", **tags: Any) -> tuple[str, Agent]:
        if auth == "sas":
            connection_string = compat_hub.new_device(prefix, **tags)
            env = sdk_env(compat_hub, DEVICE_CONNECTION_STRING=connection_string)
        else:
            device_id = f"{prefix}-{uuid.uuid4().hex[:6]}"
            identity = make_self_signed(device_id) if auth == "selfSigned" else make_device(device_id, device_ca)
            with compat_hub.registry() as registry:
                registry.create_device(device_id, authentication=auth, primary_thumbprint=identity.sha1
                                       if auth == "selfSigned" else None)  # fmt: skip
                if tags:
                    registry.update_twin(device_id, {"tags": tags})
            cert_file, key_file = identity.write(certificates, device_id)
            connection_string = f"HostName={HOSTNAME};DeviceId={device_id};x509=true"
            env = sdk_env(
                compat_hub,
                DEVICE_CONNECTION_STRING=connection_string,
                X509_CERT_FILE=str(cert_file),
                X509_KEY_FILE=str(key_file),
            )
        env["DEVICE_TRANSPORT"] = transport
        if sdk == "python":
            python = python_env("azure-iot-device", PYTHON_DEVICE).python
            args, cwd, name = [str(python), str(CLIENTS / "python_device.py")], CLIENTS, "azure-iot-device (Python)"
        else:
            node = node_env("node-sdks", NODE_PACKAGES)
            env["NODE_PATH"] = str(node.root / "node_modules")
            args, cwd, name = [node.node, str(CLIENTS / "node" / "device.js")], node.root, "azure-iot-device (Node)"
        agent = Agent(args, env=env, cwd=cwd, name=f"{name} {prefix} ({transport}, {auth})")
        agents.append(agent)
        agent.event("connected", timeout=60)
        return device_id_of(connection_string), agent

    yield start
    for agent in agents:
        agent.close()


T = TypeVar("T")


def eventually(check: Callable[[], T], timeout: float = 30, what: str = "condition") -> T:
    """Retry ``check`` (a falsy result or a FleetHubError is a miss) until it gives a value."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except FleetHubError as exc:
            last = exc
        else:
            if result:
                return result
            last = result
        time.sleep(0.2)
    raise AssertionError(f"{what} not reached within {timeout} s (last: {last!r})")
