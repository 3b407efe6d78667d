"""The ``fleethub`` / ``python -m hub`` command line: serve, connection-string, demo."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from hub.config import Settings
from hub.connstrings import ConnectionStringError, hub_hostname, lookup_connection_string
from hub.demo import DEFAULT_DEVICES, run_demo
from hub.errors import HubError
from hub.netbind import BindError
from hub.runtime import Hub
from hub.tls import TlsError

try:
    import uvloop
except ImportError:  # Windows has no uvloop; asyncio's own loop is used there
    uvloop = None  # type: ignore[assignment]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    # Plain help text: rich markup would swallow the "[env: FLEETHUB_...]" notes as unknown tags.
    rich_markup_mode=None,
    help="fleethub: an IoT fleet job hub speaking Azure IoT Hub's MQTT dialect and REST API.",
)

_DATA_DIR = typer.Option("--data-dir", help="Where the database, TLS files and keys live. [env: FLEETHUB_DATA_DIR]")


# Settings whose values may be secret: never echoed back in an error message.
_SECRET_SETTINGS = {"owner_key", "database_url"}


def _settings(**options: Any) -> Settings:
    """Flags win over ``FLEETHUB_*`` variables, which win over defaults.

    A bad value (flag or variable) ends the command with a message naming both, not a traceback.
    """
    try:
        return Settings(**{k: v for k, v in options.items() if v is not None})
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            message = str(error["msg"]).removeprefix("Value error, ")
            if error["loc"]:
                field = str(error["loc"][0])
                shown = "" if field in _SECRET_SETTINGS else f" (got {error['input']!r})"
                name = f"FLEETHUB_{field.upper()}"
                if field in options:
                    name = f"--{field.replace('_', '-')} / {name}"
                message = f"invalid {name}: {message}{shown}"
            typer.echo(f"fleethub: {message}", err=True)
        raise typer.Exit(2) from None


def _use_uvloop() -> None:
    if uvloop is None:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# The Azure IoT SDKs take no port from a connection string's HostName that all of them honour:
# the device SDKs connect to 8883, the service SDKs to https://{HostName}, that is 443.
SDK_MQTTS_PORT = 8883
SDK_HTTPS_PORT = 443


def sdk_readiness(hostname: str, https_port: int, mqtts_port: int) -> str:
    """One line saying whether the real Azure IoT SDKs can reach this hub as it listens."""
    missing = []
    if mqtts_port != SDK_MQTTS_PORT:
        missing.append(f"--mqtts-port {SDK_MQTTS_PORT}")
    if https_port != SDK_HTTPS_PORT:
        missing.append(f"--https-port {SDK_HTTPS_PORT}")
    if not missing:
        return f"Azure IoT SDKs: ready (devices on {hostname}:{SDK_MQTTS_PORT}, service SDKs on https://{hostname})"
    return (
        f"Azure IoT SDKs: they expect MQTT/TLS on {SDK_MQTTS_PORT} and HTTPS on {SDK_HTTPS_PORT}; "
        f"start with {' '.join(missing)} to use them (README: Use with the Azure IoT SDKs)"
    )


async def _serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Hub(settings) as hub:
        assert hub.endpoints is not None
        ep = hub.endpoints
        typer.echo(
            f"fleethub is up: REST http://{settings.bind_address}:{ep.http_port} "
            f"and https://{settings.hostname}:{ep.https_port}; MQTT {ep.mqtt_port}, MQTT/TLS {ep.mqtts_port}; "
            f"CA certificate {ep.ca_cert}"
        )
        typer.echo(f"service connection string: python -m hub connection-string --data-dir {settings.data_dir}")
        typer.echo(sdk_readiness(settings.hostname, ep.https_port, ep.mqtts_port))
        await stop.wait()
        typer.echo("fleethub: shutting down")


@app.command()
def serve(
    data_dir: Annotated[Path | None, _DATA_DIR] = None,
    hostname: Annotated[
        str | None,
        typer.Option(help="Host name devices and clients use; goes into the TLS certificate. [env: FLEETHUB_HOSTNAME]"),
    ] = None,
    bind_address: Annotated[str | None, typer.Option(help="Address to listen on. [env: FLEETHUB_BIND_ADDRESS]")] = None,
    http_port: Annotated[
        int | None, typer.Option(help="Plain HTTP REST port (0: any free). [env: FLEETHUB_HTTP_PORT]")
    ] = None,
    https_port: Annotated[int | None, typer.Option(help="HTTPS REST port. [env: FLEETHUB_HTTPS_PORT]")] = None,
    mqtt_port: Annotated[int | None, typer.Option(help="Plain MQTT port. [env: FLEETHUB_MQTT_PORT]")] = None,
    mqtts_port: Annotated[int | None, typer.Option(help="MQTT over TLS port. [env: FLEETHUB_MQTTS_PORT]")] = None,
    database_url: Annotated[
        str | None,
        typer.Option(
            help="sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db (default: SQLite in the data dir). "
            "[env: FLEETHUB_DATABASE_URL]"
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="Operator TLS certificate (PEM). [env: FLEETHUB_TLS_CERT]")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="Operator TLS private key (PEM). [env: FLEETHUB_TLS_KEY]")
    ] = None,
    device_ca: Annotated[
        Path | None,
        typer.Option(
            help="PEM file of CA certificates whose signed device certificates log in as certificateAuthority "
            "devices (more can be registered with PUT /certificates/{name}). [env: FLEETHUB_DEVICE_CA]"
        ),
    ] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING. [env: FLEETHUB_LOG_LEVEL]")] = None,
    max_active_jobs: Annotated[
        int | None, typer.Option(help="Jobs running at once; more wait queued. [env: FLEETHUB_MAX_ACTIVE_JOBS]")
    ] = None,
    job_retention_days: Annotated[
        int | None, typer.Option(help="Days finished jobs are kept. [env: FLEETHUB_JOB_RETENTION_DAYS]")
    ] = None,
    job_call_window: Annotated[
        int | None,
        typer.Option(help="Direct-method calls one job keeps in flight. [env: FLEETHUB_JOB_CALL_WINDOW]"),
    ] = None,
    continuous_job_interval_seconds: Annotated[
        float | None,
        typer.Option(
            help="Longest wait between a continuous job's looks for new matching devices; changes "
            "made through this hub are seen at once. [env: FLEETHUB_CONTINUOUS_JOB_INTERVAL_SECONDS]"
        ),
    ] = None,
    node_id: Annotated[
        str | None,
        typer.Option(
            help="This hub's name among hubs sharing one database (default: the host name). [env: FLEETHUB_NODE_ID]"
        ),
    ] = None,
    http_max_body_bytes: Annotated[
        int | None,
        typer.Option(help="Largest REST request body; larger ones get 413. [env: FLEETHUB_HTTP_MAX_BODY_BYTES]"),
    ] = None,
    http_header_timeout_seconds: Annotated[
        float | None,
        typer.Option(
            help="Seconds a REST connection has to send a request's headers; then 408 or closed. "
            "[env: FLEETHUB_HTTP_HEADER_TIMEOUT_SECONDS]"
        ),
    ] = None,
    http_body_timeout_seconds: Annotated[
        float | None,
        typer.Option(
            help="Seconds a REST request has to send its whole body; then 408. "
            "[env: FLEETHUB_HTTP_BODY_TIMEOUT_SECONDS]"
        ),
    ] = None,
    max_token_lifetime_seconds: Annotated[
        int | None,
        typer.Option(
            help="Refuse SAS tokens (REST and MQTT) that expire further ahead than this; default one year. "
            "[env: FLEETHUB_MAX_TOKEN_LIFETIME_SECONDS]"
        ),
    ] = None,
    max_method_calls_per_device: Annotated[
        int | None,
        typer.Option(
            help="Direct-method calls in flight to one device; more get 429. "
            "[env: FLEETHUB_MAX_METHOD_CALLS_PER_DEVICE]"
        ),
    ] = None,
    schedule_grace_seconds: Annotated[
        int | None,
        typer.Option(
            help="How late a schedule's missed run may still start (one catch-up run at most); default 600. "
            "[env: FLEETHUB_SCHEDULE_GRACE_SECONDS]"
        ),
    ] = None,
    schedule_run_history: Annotated[
        int | None,
        typer.Option(
            help="Runs GET /schedules/{id}/runs lists without ?top=; default 30. [env: FLEETHUB_SCHEDULE_RUN_HISTORY]"
        ),
    ] = None,
) -> None:
    """Run the hub: MQTT gateway for devices and the REST API for back ends.

    On first start FLEETHUB_OWNER_KEY (base64, at least 16 bytes), when set, becomes the
    iothubowner policy's primary key; otherwise every key is random.
    """
    settings = _settings(
        data_dir=data_dir,
        hostname=hostname,
        bind_address=bind_address,
        http_port=http_port,
        https_port=https_port,
        mqtt_port=mqtt_port,
        mqtts_port=mqtts_port,
        database_url=database_url,
        tls_cert=tls_cert,
        tls_key=tls_key,
        device_ca=device_ca,
        log_level=log_level,
        max_active_jobs=max_active_jobs,
        job_retention_days=job_retention_days,
        job_call_window=job_call_window,
        continuous_job_interval_seconds=continuous_job_interval_seconds,
        node_id=node_id,
        http_max_body_bytes=http_max_body_bytes,
        http_header_timeout_seconds=http_header_timeout_seconds,
        http_body_timeout_seconds=http_body_timeout_seconds,
        max_token_lifetime_seconds=max_token_lifetime_seconds,
        max_method_calls_per_device=max_method_calls_per_device,
        schedule_grace_seconds=schedule_grace_seconds,
        schedule_run_history=schedule_run_history,
    )
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _quiet_dependencies()
    _use_uvloop()
    try:
        asyncio.run(_serve(settings))
    except (BindError, TlsError, PermissionError) as exc:
        typer.echo(f"fleethub: {exc}", err=True)
        raise typer.Exit(2) from None
    except HubError as exc:  # e.g. the database cannot be reached
        typer.echo(f"fleethub: {exc.message}", err=True)
        raise typer.Exit(1) from None


def _quiet_dependencies() -> None:
    # amqtt logs every connection at INFO and every refused token at WARNING; keep the hub's log readable.
    for name in ("amqtt", "transitions", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # alembic announces each of its plugins at INFO on import; its migration messages stay.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)


@app.command("connection-string")
def connection_string(
    data_dir: Annotated[Path | None, _DATA_DIR] = None,
    policy: Annotated[
        str | None,
        typer.Option(help="Policy name (iothubowner, service, registryRead, registryReadWrite). Default: iothubowner."),
    ] = None,
    device: Annotated[str | None, typer.Option(help="Print this device's connection string instead.")] = None,
    hostname: Annotated[
        str | None,
        typer.Option(
            help="HostName to put in the string (default: the name the hub in --data-dir serves as). "
            "[env: FLEETHUB_HOSTNAME]"
        ),
    ] = None,
    database_url: Annotated[str | None, typer.Option(help="[env: FLEETHUB_DATABASE_URL]")] = None,
) -> None:
    """Print a service (policy) or device connection string read from the hub's database."""
    if policy and device:
        typer.echo("give --policy or --device, not both", err=True)
        raise typer.Exit(2)
    settings = _settings(data_dir=data_dir, hostname=hostname, database_url=database_url)
    try:
        text = asyncio.run(lookup_connection_string(settings, policy=policy, device_id=device))
    except ConnectionStringError as exc:
        typer.echo(f"fleethub: {exc}", err=True)
        raise typer.Exit(1) from None
    _, note = hub_hostname(settings)
    if note is not None:
        typer.echo(f"fleethub: note: {note}", err=True)
    typer.echo(text)


@app.command()
def demo(
    devices: Annotated[int, typer.Option(min=1, help="How many simulated devices.")] = DEFAULT_DEVICES,
    data_dir: Annotated[Path | None, typer.Option(help="Data dir (default: a fresh temporary one).")] = None,
    free_ports: Annotated[
        bool, typer.Option("--free-ports", help="Listen on any free ports instead of the defaults.")
    ] = False,
) -> None:
    """Start a hub on its defaults (free ports if taken) with simulated devices, run a lockDoor job and a
    twin update job on them to the end, show the results and leave nothing running."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_dependencies()
    _use_uvloop()
    sys.exit(asyncio.run(run_demo(device_count=devices, data_dir=data_dir, default_ports=not free_ports)))


def main() -> None:
    app()
