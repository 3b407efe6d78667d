"""``fleethub-sim`` / ``python -m device_sim``: provision and run simulated devices until stopped."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from device_sim.behaviours import Behaviours, parse_profiles
from device_sim.connection import DeviceIdentity, MqttEndpoint
from device_sim.errors import DeviceSimError, ProvisioningError
from device_sim.fleet import Fleet, FleetOptions
from device_sim.options import DeviceOptions
from device_sim.x509 import DeviceCertificateAuthority
from hub.wire.sas import SasTokenError
from job_client.errors import FleetHubError
from job_client.registry import AsyncRegistryClient

try:
    import uvloop
except ImportError:  # Windows has no uvloop
    uvloop = None  # type: ignore[assignment]

__all__ = ["app", "main"]

logger = logging.getLogger(__name__)

app = typer.Typer(
    rich_markup_mode=None,  # plain help: rich panels truncate long flag names in 80 columns
    name="fleethub-sim",
    add_completion=False,
    help="Simulated IoT Hub devices for fleethub: answer methods, follow desired properties.",
)


@dataclass(frozen=True, slots=True)
class _Plan:
    """Everything parsed from the command line that the async part needs."""

    hub_connection_string: str | None
    device_connection_string: str | None
    url: str | None
    ca_cert: Path | None
    mqtt_host: str | None
    mqtt_port: int | None
    tls: bool
    count: int
    prefix: str
    start_index: int
    behaviours: Behaviours
    options: DeviceOptions
    fleet_options: FleetOptions
    duration: float | None
    status_interval: float
    x509: DeviceCertificateAuthority | None = None

    def endpoint(self, hostname: str) -> MqttEndpoint:
        return MqttEndpoint.for_hub(
            hostname, host=self.mqtt_host, port=self.mqtt_port, tls=self.tls, ca_cert=self.ca_cert
        )


async def _build_fleet(plan: _Plan) -> Fleet:
    if plan.device_connection_string:
        identity = DeviceIdentity.from_connection_string(plan.device_connection_string)
        return Fleet(
            [identity],
            plan.endpoint(identity.hostname),
            behaviours=plan.behaviours,
            options=plan.options,
            fleet_options=plan.fleet_options,
        )
    assert plan.hub_connection_string is not None
    async with AsyncRegistryClient.from_connection_string(
        plan.hub_connection_string, url=plan.url, ca_cert=plan.ca_cert
    ) as registry:
        typer.echo(f"provisioning {plan.count} device(s) {plan.prefix}{plan.start_index:04d}... on {registry.hostname}")
        return await Fleet.provision(
            registry,
            plan.endpoint(registry.hostname),
            count=plan.count,
            prefix=plan.prefix,
            start=plan.start_index,
            behaviours=plan.behaviours,
            options=plan.options,
            fleet_options=plan.fleet_options,
            x509=plan.x509,
        )


async def _simulate(plan: _Plan) -> None:
    fleet = await _build_fleet(plan)
    endpoint = next(iter(fleet)).endpoint if len(fleet) else None
    if endpoint is not None:
        typer.echo(
            f"connecting {len(fleet)} device(s) to {endpoint.host}:{endpoint.port}{' (TLS)' if endpoint.tls else ''}"
        )
    async with fleet:
        typer.echo(fleet.stats().line())
        loop = asyncio.get_running_loop()
        deadline = None if plan.duration is None else loop.time() + plan.duration
        while deadline is None or loop.time() < deadline:
            wait = plan.status_interval if deadline is None else min(plan.status_interval, deadline - loop.time())
            await asyncio.sleep(max(wait, 0.0))
            typer.echo(fleet.stats().line())
        typer.echo("duration reached; disconnecting")
    typer.echo(f"stopped: {fleet.stats().line()}")


async def _until_signalled(work: Callable[[], Coroutine[Any, Any, None]]) -> bool:
    """Run ``work``; SIGINT/SIGTERM cancel it so its context managers disconnect cleanly.
    Returns ``True`` when a signal ended it."""
    task = asyncio.current_task()
    assert task is not None
    signalled: list[int] = []

    def on_signal(signum: int) -> None:
        signalled.append(signum)
        task.cancel()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await work()
    except asyncio.CancelledError:
        if not signalled:
            raise
        task.uncancel()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return bool(signalled)


def _x509_authority(
    x509: bool, ca: Path | None, ca_key: Path | None, directory: Path, *, tls: bool, fleet: bool
) -> DeviceCertificateAuthority | None:
    if not x509:
        if ca is not None or ca_key is not None:
            raise typer.BadParameter("--x509-ca and --x509-ca-key go with --x509")
        return None
    if ca is None or ca_key is None:
        raise typer.BadParameter(
            "--x509 needs --x509-ca and --x509-ca-key (the CA that issues the devices' certificates)"
        )
    if not tls:
        raise typer.BadParameter("--x509 devices log in with TLS client certificates: drop --no-tls")
    if not fleet:
        raise typer.BadParameter("--x509 provisions a fleet: give --hub-connection-string, not a device's")
    try:
        return DeviceCertificateAuthority.load(ca, ca_key, directory=directory)
    except DeviceSimError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _new_runner(use_uvloop: bool) -> asyncio.Runner:
    if use_uvloop:
        if uvloop is None:
            logger.info("uvloop is not installed; using the default event loop")
        else:
            return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    return asyncio.Runner()


@app.command()
def run(
    hub_connection_string: Annotated[
        str | None,
        typer.Option(
            envvar="FLEETHUB_CONNECTION_STRING",
            help="Service connection string; devices are provisioned through the REST API.",
        ),
    ] = None,
    device_connection_string: Annotated[
        str | None,
        typer.Option(
            envvar="FLEETHUB_DEVICE_CONNECTION_STRING",
            help="Run this one existing device instead of a provisioned fleet.",
        ),
    ] = None,
    count: Annotated[int, typer.Option(min=1, help="Number of devices.")] = 100,
    prefix: Annotated[str, typer.Option(help="Device id prefix; ids are {prefix}{index:04d}.")] = "sim-",
    start_index: Annotated[int, typer.Option(min=0, help="First device index.")] = 0,
    url: Annotated[
        str | None, typer.Option(envvar="FLEETHUB_URL", help="REST base URL overriding https://{HostName}.")
    ] = None,
    ca_cert: Annotated[
        Path | None, typer.Option(envvar="FLEETHUB_CA_CERT", help="CA certificate the hub's TLS certificate chains to.")
    ] = None,
    mqtt_host: Annotated[str | None, typer.Option(help="Broker host (default: HostName without port).")] = None,
    mqtt_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Broker port (default 8883 with TLS, 1883 without).")
    ] = None,
    tls: Annotated[bool, typer.Option("--tls/--no-tls", help="MQTT over TLS.")] = True,
    x509: Annotated[
        bool,
        typer.Option(
            "--x509",
            help="X.509 devices: registered as certificateAuthority, each with a certificate the --x509-ca "
            "issues (the CA is registered with the hub too). Needs TLS.",
        ),
    ] = False,
    x509_ca: Annotated[Path | None, typer.Option(help="With --x509: the CA certificate (PEM).")] = None,
    x509_ca_key: Annotated[
        Path | None, typer.Option(help="With --x509: the CA's private key (PEM, unencrypted).")
    ] = None,
    x509_dir: Annotated[
        Path, typer.Option(help="With --x509: where the devices' certificates and keys are written.")
    ] = Path("fleethub-sim-certs"),
    method_latency: Annotated[
        list[str] | None,
        typer.Option(help="METHOD=SECONDS or METHOD=LOW:HIGH (jitter); '*' for every method. Repeatable."),
    ] = None,
    failure_rate: Annotated[
        list[str] | None,
        typer.Option(help="METHOD=RATE (0..1): share of calls answered 500; '*' for every method. Repeatable."),
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for latency and failure draws.")] = None,
    reboot_reconnect: Annotated[
        float | None, typer.Option(help="After 'reboot', drop the connection and reconnect this many seconds later.")
    ] = None,
    keepalive: Annotated[int, typer.Option(min=5, help="MQTT keepalive in seconds.")] = 60,
    batch_size: Annotated[int, typer.Option(min=1, help="Devices connected per batch.")] = 200,
    churn: Annotated[
        float,
        typer.Option(min=0.0, max=1.0, help="Share of the devices dropped and reconnected every second (0.1 = 10%)."),
    ] = 0.0,
    duration: Annotated[float | None, typer.Option(min=0, help="Stop after this many seconds.")] = None,
    status_interval: Annotated[float, typer.Option(min=0.1, help="Seconds between status lines.")] = 5.0,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "WARNING",
    use_uvloop: Annotated[bool, typer.Option("--uvloop/--no-uvloop", help="Use uvloop when installed.")] = True,
) -> None:
    """Provision COUNT devices and keep them connected until Ctrl-C (or --duration)."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not hub_connection_string and not device_connection_string:
        raise typer.BadParameter(
            "give --hub-connection-string (or FLEETHUB_CONNECTION_STRING) or --device-connection-string"
        )
    try:
        profiles, default_profile = parse_profiles(method_latency or [], failure_rate or [])
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    authority = _x509_authority(x509, x509_ca, x509_ca_key, x509_dir, tls=tls, fleet=not device_connection_string)
    plan = _Plan(
        hub_connection_string=hub_connection_string,
        device_connection_string=device_connection_string,
        url=url,
        ca_cert=ca_cert,
        mqtt_host=mqtt_host,
        mqtt_port=mqtt_port,
        tls=tls,
        count=count,
        prefix=prefix,
        start_index=start_index,
        behaviours=Behaviours(
            profiles=profiles, default_profile=default_profile, seed=seed, reboot_reconnect_after=reboot_reconnect
        ),
        options=DeviceOptions(keepalive=keepalive),
        fleet_options=FleetOptions(batch_size=batch_size, churn=churn, churn_seed=seed),
        duration=duration,
        status_interval=status_interval,
        x509=authority,
    )
    with _new_runner(use_uvloop) as runner:
        try:
            if runner.run(_until_signalled(lambda: _simulate(plan))):
                typer.echo("stopped by signal")
        except SasTokenError as exc:
            typer.echo(f"error: bad connection string: {exc}", err=True)
            raise typer.Exit(2) from exc
        except (ProvisioningError, FleetHubError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from exc


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``fleethub-sim``)."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="fleethub-sim")
