"""The real ``python -m hub`` processes: start-up errors, settings from the environment, the
data dir of a first start, connection strings, and clean shutdown on SIGTERM and SIGINT.

Every hub here is a child process on a tmp_path data dir. Ports are free-port probes (or 0),
never the defaults: 1883 and 8883 may belong to other services. Timeouts are generous upper
bounds, never speed claims.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import signal
import socket
import sqlite3
import ssl
import stat
from contextlib import closing
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from hub.storage import SqlStore
from hub.tls import ensure_tls
from tests.e2e.conftest import DeviceCreds, create_device, next_message
from tests.e2e.processes import (
    EXIT_TIMEOUT,
    HOST,
    START_TIMEOUT,
    Launcher,
    ServeProcess,
    arun_cli,
    assert_clean_failure,
    assert_not_listening,
    connection_string,
    free_ports,
    hub_env,
    listening_socket,
    run_cli,
    service_api,
)

pytestmark = pytest.mark.slow

POLICIES = ("iothubowner", "service", "registryRead", "registryReadWrite")
README = Path(__file__).resolve().parents[2] / "README.md"


async def twin_when(api: httpx.AsyncClient, device_id: str, state: str) -> dict[str, Any]:
    twin: dict[str, Any] = {}
    try:
        async with asyncio.timeout(START_TIMEOUT):
            while True:
                twin = (await api.get(f"/twins/{device_id}")).json()
                if twin.get("connectionState") == state:
                    return twin
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{device_id} never became {state}; last twin: {twin}") from None


def device_client(hub: ServeProcess, creds: DeviceCreds) -> aiomqtt.Client:
    return aiomqtt.Client(
        HOST,
        hub.mqtt_port,
        identifier=creds.device_id,
        username=f"localhost/{creds.device_id}/?api-version=2021-04-12",
        password=creds.token(),
        clean_session=False,
        keepalive=60,
    )


async def read_until_closed(client: aiomqtt.Client) -> None:
    """Read messages until the connection ends (aiomqtt then raises MqttError)."""
    async with asyncio.timeout(EXIT_TIMEOUT):
        async for _message in client.messages:
            pass


# -- 1. a port that is taken ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "env_name"), [("--mqtt-port", "FLEETHUB_MQTT_PORT"), ("--http-port", "FLEETHUB_HTTP_PORT")]
)
def test_port_in_use_stops_the_start_naming_flag_and_variable(tmp_path: Path, flag: str, env_name: str) -> None:
    ports = dict(zip(("--http-port", "--https-port", "--mqtt-port", "--mqtts-port"), free_ports(4), strict=True))
    with listening_socket() as taken:
        ports[flag] = taken
        args = [arg for item in ports.items() for arg in map(str, item)]
        result = run_cli("serve", "--data-dir", tmp_path / "data", "--bind-address", HOST, *args)
        assert_clean_failure(result, flag, env_name, str(taken))
        assert "in use" in result.stderr
        assert_not_listening(*(port for name, port in ports.items() if name != flag))


def test_taken_port_from_the_environment_names_it_too(tmp_path: Path) -> None:
    http, https, mqtts = free_ports(3)
    with listening_socket() as taken:
        env = hub_env(
            FLEETHUB_DATA_DIR=str(tmp_path / "data"),
            FLEETHUB_BIND_ADDRESS=HOST,
            FLEETHUB_HTTP_PORT=str(http),
            FLEETHUB_HTTPS_PORT=str(https),
            FLEETHUB_MQTT_PORT=str(taken),
            FLEETHUB_MQTTS_PORT=str(mqtts),
        )
        result = run_cli("serve", env=env)
        assert_clean_failure(result, "--mqtt-port", "FLEETHUB_MQTT_PORT", str(taken))
        assert_not_listening(http, https, mqtts)


@pytest.mark.parametrize(
    ("setting", "value", "needles"),
    [
        ("FLEETHUB_HTTP_PORT", "eighty", ["--http-port", "FLEETHUB_HTTP_PORT"]),
        ("FLEETHUB_MQTT_PORT", "70000", ["--mqtt-port", "FLEETHUB_MQTT_PORT"]),
        ("FLEETHUB_LOG_LEVEL", "chatty", ["--log-level", "FLEETHUB_LOG_LEVEL"]),
        ("FLEETHUB_DATABASE_URL", "mysql://root:hunter2@db/hub", ["--database-url", "FLEETHUB_DATABASE_URL"]),
        ("FLEETHUB_TLS_CERT", "/only/the/cert.pem", ["--tls-key", "FLEETHUB_TLS_KEY"]),
        ("FLEETHUB_DEVICE_CA", "/no/such/ca.pem", ["cannot read --device-ca /no/such/ca.pem"]),
        ("FLEETHUB_DEVICE_CA", __file__, ["holds no PEM certificate"]),
    ],
)
def test_bad_setting_fails_the_start_with_a_message(
    tmp_path: Path, setting: str, value: str, needles: list[str]
) -> None:
    data = tmp_path / "data"
    result = run_cli("serve", env=hub_env(FLEETHUB_DATA_DIR=str(data), FLEETHUB_BIND_ADDRESS=HOST, **{setting: value}))
    assert_clean_failure(result, *needles)
    assert "hunter2" not in result.stderr  # a database URL may hold a password: never echoed
    assert not data.exists()  # refused before anything was created


def test_unreachable_database_fails_the_start_with_a_message(tmp_path: Path) -> None:
    http, https, mqtt, mqtts, nobody = free_ports(5)
    result = run_cli(
        "serve", "--data-dir", tmp_path / "data", "--bind-address", HOST,
        "--http-port", str(http), "--https-port", str(https), "--mqtt-port", str(mqtt), "--mqtts-port", str(mqtts),
        env=hub_env(FLEETHUB_DATABASE_URL=f"postgresql+asyncpg://fleethub:hunter2@{HOST}:{nobody}/hub"),
    )  # fmt: skip
    assert_clean_failure(result, "database")
    assert "hunter2" not in result.stderr
    assert_not_listening(http, https, mqtt, mqtts)


# -- 2. settings from the environment -------------------------------------------------------------


async def test_every_setting_can_come_from_the_environment(launcher: Launcher, tmp_path: Path) -> None:
    http, https, mqtt, mqtts = free_ports(4)
    data, database = tmp_path / "env-data", tmp_path / "elsewhere" / "hub.db"
    database.parent.mkdir()
    env = {
        "FLEETHUB_DATA_DIR": str(data),
        "FLEETHUB_HOSTNAME": "hub.example.test",
        "FLEETHUB_BIND_ADDRESS": HOST,
        "FLEETHUB_HTTP_PORT": str(http),
        "FLEETHUB_HTTPS_PORT": str(https),
        "FLEETHUB_MQTT_PORT": str(mqtt),
        "FLEETHUB_MQTTS_PORT": str(mqtts),
        "FLEETHUB_DATABASE_URL": f"sqlite+aiosqlite:///{database}",
        "FLEETHUB_LOG_LEVEL": "warning",
    }
    hub = await launcher.serve(data, env=env, flags=False)

    assert (data / "tls" / "ca.pem").is_file()
    assert database.is_file()
    assert not (data / "fleethub.db").exists()
    assert not (tmp_path / "cwd-0" / "fleethub-data").exists()  # not the default data dir
    assert "INFO" not in hub.stderr.read_text()  # FLEETHUB_LOG_LEVEL=warning

    # The certificate names FLEETHUB_HOSTNAME on both TLS ports, and plain MQTT listens.
    context = ssl.create_default_context(cafile=data / "tls" / "ca.pem")
    for port in (https, mqtts):
        with (
            socket.create_connection((HOST, port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="hub.example.test") as tls,
        ):
            assert tls.version() is not None
    with socket.create_connection((HOST, mqtt), timeout=10):
        pass

    # connection-string reads the same variables: the host name, and the database outside the data dir.
    result = await arun_cli("connection-string", env=hub_env(**env))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HostName=hub.example.test;SharedAccessKeyName=iothubowner;")
    assert await hub.stop() == 0


async def test_flags_win_over_the_environment(launcher: Launcher, tmp_path: Path) -> None:
    with listening_socket() as taken:
        env = {"FLEETHUB_HTTP_PORT": str(taken), "FLEETHUB_MQTT_PORT": str(taken)}
        hub = await launcher.serve(tmp_path / "data", env=env)  # --http-port and --mqtt-port are free probes
        assert await hub.stop() == 0


async def test_operator_tls_files_from_the_environment(launcher: Launcher, tmp_path: Path) -> None:
    operator = ensure_tls(tmp_path / "operator-tls", "operator.test")  # stands in for the operator's own CA
    assert operator.ca_cert is not None
    env = {"FLEETHUB_TLS_CERT": str(operator.server_cert), "FLEETHUB_TLS_KEY": str(operator.server_key)}
    data = tmp_path / "data"
    hub = await launcher.serve(data, env=env)
    assert not (data / "tls").exists()  # nothing generated

    # --https-port is 0: the start-up line says which port it got.
    match = re.search(r"https://localhost:(\d+)", hub.stdout.read_text())
    assert match is not None, hub.output()
    context = ssl.create_default_context(cafile=operator.ca_cert)
    with (
        socket.create_connection((HOST, int(match.group(1))), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="operator.test") as tls,
    ):
        assert tls.version() is not None
    assert await hub.stop() == 0


# -- 3. the data dir of a first start, and connection strings -------------------------------------


async def test_first_start_creates_data_dir_policies_and_connection_strings(launcher: Launcher, tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert not data.exists()
    hub = await launcher.serve(data)

    assert (data / "fleethub.db").is_file()
    for name in ("ca.pem", "server.pem", "server-key.pem"):
        assert (data / "tls" / name).is_file(), name
    assert stat.S_IMODE((data / "tls" / "server-key.pem").stat().st_mode) == 0o600

    keys: dict[str, str] = {}
    for policy in POLICIES:
        text = await connection_string(data, "--policy", policy)
        match = re.fullmatch(rf"HostName=localhost;SharedAccessKeyName={policy};SharedAccessKey=(\S+)", text)
        assert match is not None, text
        keys[policy] = match.group(1)
        assert len(base64.b64decode(keys[policy], validate=True)) >= 16
    assert len(set(keys.values())) == len(POLICIES)  # each policy has a key of its own
    assert await connection_string(data) == await connection_string(data, "--policy", "iothubowner")
    assert (await connection_string(data, "--hostname", "hub.example.test")).startswith("HostName=hub.example.test;")

    # The printed keys are the ones the hub checks: each signs a call its policy allows.
    async with service_api(hub) as owner:
        creds = await create_device(owner, "thermostat-1")
        assert (await owner.get("/devices")).status_code == 200
    for policy, call in [
        ("service", "/twins/thermostat-1"),
        ("registryRead", "/devices/thermostat-1"),
        ("registryReadWrite", "/devices/thermostat-1"),
    ]:
        async with service_api(hub, policy) as api:
            response = await api.get(call)
            assert response.status_code == 200, (policy, response.text)

    device = await connection_string(data, "--device", "thermostat-1")
    assert device == f"HostName=localhost;DeviceId=thermostat-1;SharedAccessKey={creds.primary_key}"

    unknown = await arun_cli("connection-string", "--data-dir", data, "--policy", "nope")
    assert_clean_failure(unknown, "nope", "iothubowner", "registryReadWrite")
    assert unknown.stdout == ""
    missing = await arun_cli("connection-string", "--data-dir", data, "--device", "ghost-7")
    assert_clean_failure(missing, "ghost-7")
    assert missing.stdout == ""
    both = await arun_cli("connection-string", "--data-dir", data, "--device", "thermostat-1", "--policy", "service")
    assert_clean_failure(both, "--policy", "--device")

    assert await hub.stop() == 0
    assert "Traceback" not in hub.stderr.read_text()
    with closing(sqlite3.connect(data / "fleethub.db")) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("exists", [False, True])
def test_connection_string_before_any_start_says_to_serve_first(tmp_path: Path, exists: bool) -> None:
    data = tmp_path / "never-served"
    if exists:
        data.mkdir()
    result = run_cli("connection-string", "--data-dir", data)
    assert_clean_failure(result, "serve", str(data))
    assert result.stdout == ""
    # Looking created nothing.
    assert data.exists() == exists
    if exists:
        assert list(data.iterdir()) == []


async def test_connection_string_on_a_database_without_policies_says_to_serve_first(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    async with SqlStore.open(f"sqlite+aiosqlite:///{data / 'fleethub.db'}"):
        pass  # the schema, as a start that stopped before creating the policies would leave it
    result = await arun_cli("connection-string", "--data-dir", data)
    assert_clean_failure(result, "serve")


# -- 4. FLEETHUB_OWNER_KEY ----------------------------------------------------------------------


async def test_owner_key_becomes_iothubowner_primary_key_on_first_start(launcher: Launcher, tmp_path: Path) -> None:
    data = tmp_path / "data"
    owner_key = base64.b64encode(os.urandom(32)).decode()
    hub = await launcher.serve(data, env={"FLEETHUB_OWNER_KEY": owner_key})
    assert (
        await connection_string(data)
        == f"HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey={owner_key}"
    )
    async with service_api(hub) as api:  # and the hub accepts it
        assert (await api.get("/devices")).status_code == 200
    service_key = await connection_string(data, "--policy", "service")
    assert owner_key not in service_key  # only iothubowner takes it
    assert await hub.stop() == 0

    # Only on first start: a later start with another key changes nothing.
    other = base64.b64encode(os.urandom(32)).decode()
    hub = await launcher.serve(data, env={"FLEETHUB_OWNER_KEY": other})
    assert (
        await connection_string(data)
        == f"HostName=localhost;SharedAccessKeyName=iothubowner;SharedAccessKey={owner_key}"
    )
    assert await connection_string(data, "--policy", "service") == service_key
    assert await hub.stop() == 0


@pytest.mark.parametrize(
    "bad_key",
    ["not base64!", base64.b64encode(b"short").decode(), "é" * 44],
    ids=["not-base64", "too-short", "not-ascii"],
)
def test_bad_owner_key_fails_the_start_with_a_message(tmp_path: Path, bad_key: str) -> None:
    data = tmp_path / "data"
    http, https, mqtt, mqtts = free_ports(4)
    result = run_cli(
        "serve", "--data-dir", data, "--bind-address", HOST,
        "--http-port", str(http), "--https-port", str(https), "--mqtt-port", str(mqtt), "--mqtts-port", str(mqtts),
        env=hub_env(FLEETHUB_OWNER_KEY=bad_key),
    )  # fmt: skip
    assert_clean_failure(result, "FLEETHUB_OWNER_KEY")
    assert bad_key not in result.stderr  # a key, even a bad one, is not echoed
    assert_not_listening(http, https, mqtt, mqtts)
    assert not data.exists()
    # The data dir is still fresh: connection-string still says to start serve first.
    assert_clean_failure(run_cli("connection-string", "--data-dir", data), "serve")


# -- 5. clean shutdown ------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_stops_the_hub_cleanly_and_flushes_presence_and_twin(
    launcher: Launcher, tmp_path: Path, sig: signal.Signals
) -> None:
    data = tmp_path / "data"
    hub = await launcher.serve(data)
    async with service_api(hub) as api:
        creds = await create_device(api, "door-1")
    client = device_client(hub, creds)
    async with client:
        await client.subscribe("$iothub/twin/res/#")
        async with service_api(hub) as api:
            connected = await twin_when(api, "door-1", "Connected")
            await client.publish(
                "$iothub/twin/PATCH/properties/reported/?$rid=1", json.dumps({"firmware": "2.1.0", "locked": True})
            )
            reply = await next_message(client, "$iothub/twin/res/", timeout=START_TIMEOUT)
            assert str(reply.topic).startswith("$iothub/twin/res/204/"), reply.topic
            assert "$rid=1" in str(reply.topic)
            # The publish moved lastActivityTime on (in memory; the store catches up in batches).
            last_activity = (await api.get("/twins/door-1")).json()["lastActivityTime"]
            assert last_activity > connected["lastActivityTime"]

        assert await hub.stop(sig) == 0
        # The device sees its connection end.
        with pytest.raises(aiomqtt.MqttError):
            await read_until_closed(client)

    stderr = hub.stderr.read_text()
    assert "Traceback" not in stderr, hub.output()
    assert_not_listening(hub.http_port, hub.mqtt_port)

    # What the hub knew at the signal is in the database for the next start.
    again = await launcher.serve(data)
    async with service_api(again) as api:
        twin = (await api.get("/twins/door-1")).json()
    assert twin["connectionState"] == "Disconnected"
    assert twin["lastActivityTime"] == last_activity
    reported = twin["properties"]["reported"]
    assert reported["firmware"] == "2.1.0"
    assert reported["locked"] is True
    assert await again.stop(sig) == 0


# -- 6. help ----------------------------------------------------------------------------------------


def _readme_settings() -> tuple[set[str], set[str]]:
    """The flags and FLEETHUB_* variables of the README's `Run the hub` table."""
    section = README.read_text().split("### Run the hub", 1)[1].split("\n#", 1)[0]
    rows = [line.split("|") for line in section.splitlines() if line.startswith("|")][2:]  # no header, no ---
    flags = {flag for row in rows for flag in re.findall(r"`(--[a-z-]+)`", row[1])}
    variables = {var for row in rows for var in re.findall(r"`(FLEETHUB_[A-Z_]+)`", row[2])}
    return flags, variables


def test_readme_table_is_parsed() -> None:
    flags, variables = _readme_settings()
    assert {"--data-dir", "--mqtt-port", "--tls-key"} <= flags
    assert {"FLEETHUB_DATA_DIR", "FLEETHUB_OWNER_KEY", "FLEETHUB_TLS_KEY"} <= variables
    assert len(variables) == len(flags) + 1  # FLEETHUB_OWNER_KEY has no flag


def test_help_lists_commands_and_every_serve_setting() -> None:
    top = run_cli("--help")
    assert top.returncode == 0, top.stderr
    for command in ("serve", "connection-string", "demo"):
        assert command in top.stdout

    serve = run_cli("serve", "--help")
    assert serve.returncode == 0, serve.stderr
    flags, variables = _readme_settings()
    for name in sorted(flags | variables):
        assert name in serve.stdout, f"{name} missing from `serve --help`:\n{serve.stdout}"

    connection = run_cli("connection-string", "--help")
    assert connection.returncode == 0, connection.stderr
    for flag in ("--data-dir", "--policy", "--device", "--hostname", "--database-url"):
        assert flag in connection.stdout
