"""The hub process: storage, engine, MQTT gateway and REST servers, started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import uvicorn
from cryptography import x509

from broker_config import load_gateway_config
from hub.api.app import create_app
from hub.api.limits import header_deadline_protocol
from hub.config import Settings
from hub.datadir import write_run_record
from hub.domain.certificates import load_ca_bundle
from hub.domain.clock import Clock, SystemClock
from hub.engine.bootstrap import ensure_policies
from hub.engine.services import Services
from hub.errors import BadRequestError
from hub.gateway.broker import packet_limit
from hub.gateway.gateway import Gateway
from hub.gateway.tlsbio import server_context
from hub.netbind import bind_listener
from hub.storage.sql import SqlStore
from hub.tls import TlsError, TlsFiles, ensure_tls

__all__ = ["Hub", "HubEndpoints"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HubEndpoints:
    """Where a running hub listens (ports as bound, so 0 in the settings becomes a real port)."""

    hostname: str
    http_port: int
    https_port: int
    mqtt_port: int
    mqtts_port: int
    ca_cert: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https_url(self) -> str:
        return f"https://{self.hostname}:{self.https_port}"


# Room in a WebSocket frame beside the largest MQTT packet (its fixed header, a client
# that packs a PINGREQ in the same frame).
_WS_FRAME_SLACK = 1024


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the hub owns shutdown for all its servers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bind_all(settings: Settings) -> dict[str, socket.socket]:
    wanted = [
        ("http", settings.http_port, "--http-port", "FLEETHUB_HTTP_PORT", "HTTP"),
        ("https", settings.https_port, "--https-port", "FLEETHUB_HTTPS_PORT", "HTTPS"),
        ("mqtt", settings.mqtt_port, "--mqtt-port", "FLEETHUB_MQTT_PORT", "MQTT"),
        ("mqtts", settings.mqtts_port, "--mqtts-port", "FLEETHUB_MQTTS_PORT", "MQTT over TLS"),
    ]
    bound: dict[str, socket.socket] = {}
    try:
        for name, port, flag, env, what in wanted:
            bound[name] = bind_listener(settings.bind_address, port, flag=flag, env=env, what=what)
    except BaseException:
        for sock in bound.values():
            sock.close()
        raise
    return bound


def _device_cas(settings: Settings) -> list[x509.Certificate]:
    if settings.device_ca is None:
        return []
    try:
        pem = settings.device_ca.read_bytes()
    except OSError as exc:
        raise TlsError(f"cannot read --device-ca {settings.device_ca}: {exc}", path=settings.device_ca) from exc
    try:
        cas = load_ca_bundle(pem, f"--device-ca {settings.device_ca}")
    except BadRequestError as exc:
        raise TlsError(exc.message, path=settings.device_ca) from exc
    log.info("%d CA certificates from %s admit certificateAuthority devices", len(cas), settings.device_ca)
    return cas


def _port(sock: socket.socket) -> int:
    port: int = sock.getsockname()[1]
    return port


class Hub:
    """``async with Hub(settings) as hub:`` runs everything until the block ends."""

    def __init__(self, settings: Settings, *, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self._stack = contextlib.AsyncExitStack()
        self._servers: list[_QuietServer] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.services: Services | None = None
        self.endpoints: HubEndpoints | None = None

    def _tls(self) -> TlsFiles:
        s = self.settings
        if s.tls_cert and s.tls_key:
            return TlsFiles.from_operator(s.tls_cert, s.tls_key)
        return ensure_tls(s.tls_dir, s.hostname)

    async def __aenter__(self) -> Hub:
        try:
            await self._start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _start(self) -> None:
        s = self.settings
        device_cas = _device_cas(s)  # a bad --device-ca stops the start before anything is made
        s.data_dir.mkdir(parents=True, exist_ok=True)
        sockets = _bind_all(s)
        for sock in sockets.values():
            self._stack.callback(sock.close)
        tls = self._tls()
        device_tls = server_context(tls.server_cert, tls.server_key)

        store = await self._stack.enter_async_context(SqlStore.open(s.resolved_database_url))
        gateway = Gateway(
            mqtt_socket=sockets["mqtt"],
            mqtts_socket=sockets["mqtts"],
            tls=device_tls,
            config=load_gateway_config(session_expiry_seconds=s.session_expiry_seconds),
        )
        services = Services.build(
            hostname=s.hostname,
            store=store,
            clock=self.clock,
            link=gateway,
            flush_interval=s.presence_flush_seconds,
            max_token_lifetime=s.max_token_lifetime_seconds,
            node_id=s.node_id,
            max_active_jobs=s.max_active_jobs,
            job_retention_days=s.job_retention_days,
            job_call_window=s.job_call_window,
            continuous_job_interval=s.continuous_job_interval_seconds,
            max_method_calls_per_device=s.max_method_calls_per_device,
            max_twin_gets_per_device=s.max_twin_gets_per_device,
            schedule_grace_seconds=s.schedule_grace_seconds,
            schedule_run_history=s.schedule_run_history,
            device_cas=device_cas,
        )
        services.policies.update(await ensure_policies(store, s.owner_key))
        await self._stack.enter_async_context(services.presence.running())
        # Inside presence and outside the gateway: stopped devices' last patches still land.
        await self._stack.enter_async_context(services.twins.running())
        await self._stack.enter_async_context(gateway.serving(services.device_events))
        await self._stack.enter_async_context(services.job_runner.running())
        # After the job runner: the runs it creates are jobs that runner is told about.
        await self._stack.enter_async_context(services.scheduler.running())
        self.services = services

        app = create_app(
            services,
            max_token_lifetime=s.max_token_lifetime_seconds,
            max_body_bytes=s.http_max_body_bytes,
            body_timeout=s.http_body_timeout_seconds,
            device_streams=gateway,
        )
        http_protocol = header_deadline_protocol(s.http_header_timeout_seconds)
        for name, sock in (("http", sockets["http"]), ("https", sockets["https"])):
            https = name == "https"
            config = uvicorn.Config(
                app,
                http=http_protocol,
                log_level="warning",
                lifespan="off",
                access_log=False,
                timeout_keep_alive=30,
                limit_concurrency=10_000,
                # MQTT over WebSockets: a frame may hold the largest packet a device may send.
                ws_max_size=packet_limit(gateway.config) + _WS_FRAME_SLACK,
                ssl_certfile=str(tls.server_cert) if https else None,
                ssl_keyfile=str(tls.server_key) if https else None,
            )
            server = _QuietServer(config)
            self._servers.append(server)
            self._tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name=f"uvicorn-{name}"))
        while not all(server.started for server in self._servers):
            if any(task.done() for task in self._tasks):
                for task in self._tasks:
                    if task.done() and task.exception():
                        raise RuntimeError("REST server failed to start") from task.exception()
                raise RuntimeError("REST server stopped during start-up")
            await asyncio.sleep(0.01)
        self.endpoints = HubEndpoints(
            hostname=s.hostname,
            http_port=_port(sockets["http"]),
            https_port=_port(sockets["https"]),
            mqtt_port=_port(sockets["mqtt"]),
            mqtts_port=_port(sockets["mqtts"]),
            ca_cert=tls.ca_cert or tls.server_cert,
        )
        write_run_record(
            s.data_dir,
            hostname=s.hostname,
            http_port=self.endpoints.http_port,
            https_port=self.endpoints.https_port,
            mqtt_port=self.endpoints.mqtt_port,
            mqtts_port=self.endpoints.mqtts_port,
        )
        services.ready = True
        log.info(
            "fleethub ready: REST http://%s:%s https://%s:%s, MQTT %s, MQTTS %s",
            s.bind_address,
            self.endpoints.http_port,
            s.hostname,
            self.endpoints.https_port,
            self.endpoints.mqtt_port,
            self.endpoints.mqtts_port,
        )

    async def stop(self) -> None:
        """Stop REST first (no new work), then devices, then flush presence and close the store."""
        if self.services is not None:
            self.services.ready = False
        for server in self._servers:
            server.should_exit = True
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self._servers.clear()
        await self._stack.aclose()


@contextlib.asynccontextmanager
async def running_hub(settings: Settings) -> AsyncIterator[Hub]:
    async with Hub(settings) as hub:
        yield hub
