"""The engine's services wired together; built by the runtime, used by the API and gateway.

Everything is connected here, at construction: components that must hear of each other
meet through ``events`` (hub.ports.EventBroker), and everything that reaches a device goes
through ``router`` (hub.ports.DeviceRouter)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography import x509

from hub.domain.clock import Clock
from hub.domain.policies import AccessPolicy
from hub.engine.events import LocalEventBroker
from hub.engine.jobs.results import ResultWriter
from hub.engine.jobs.runner import JobRunner
from hub.engine.jobs.runs import JobRunContext
from hub.engine.jobs.service import JobService
from hub.engine.query import QueryService
from hub.engine.schedules.scheduler import DEFAULT_GRACE_SECONDS, Scheduler
from hub.engine.schedules.service import DEFAULT_RUN_HISTORY, ScheduleService
from hub.engine.sessions.auth import DeviceAuthenticator
from hub.engine.sessions.certificates import CertificateService
from hub.engine.sessions.handler import DeviceEventHandler
from hub.engine.sessions.methods import DEFAULT_MAX_CALLS_PER_DEVICE, MethodService
from hub.engine.sessions.presence import PresenceService
from hub.engine.sessions.registry import RegistryService
from hub.engine.sessions.router import LocalDeviceRouter
from hub.engine.sessions.twins import MAX_TWIN_GETS_PER_DEVICE, TwinService
from hub.ports import DeviceLink, DeviceRouter, EventBroker, Store

__all__ = ["Services"]


@dataclass
class Services:
    hostname: str
    store: Store
    clock: Clock
    events: EventBroker
    router: DeviceRouter
    presence: PresenceService
    registry: RegistryService
    twins: TwinService
    methods: MethodService
    certificates: CertificateService
    device_events: DeviceEventHandler
    query: QueryService
    jobs: JobService
    job_runner: JobRunner
    schedules: ScheduleService
    scheduler: Scheduler
    policies: dict[str, AccessPolicy] = field(default_factory=dict)
    ready: bool = False

    @classmethod
    def build(
        cls,
        *,
        hostname: str,
        store: Store,
        clock: Clock,
        link: DeviceLink,
        flush_interval: float,
        max_token_lifetime: int,
        node_id: str = "fleethub",
        max_active_jobs: int = 10,
        job_retention_days: int = 30,
        job_call_window: int = 1000,
        continuous_job_interval: float = 10.0,
        max_method_calls_per_device: int = DEFAULT_MAX_CALLS_PER_DEVICE,
        max_twin_gets_per_device: int = MAX_TWIN_GETS_PER_DEVICE,
        schedule_grace_seconds: int = DEFAULT_GRACE_SECONDS,
        schedule_run_history: int = DEFAULT_RUN_HISTORY,
        device_cas: Sequence[x509.Certificate] = (),
        events: EventBroker | None = None,
    ) -> Services:
        """``link``: this node's gateway; ``events``: the broker between components (default:
        a LocalEventBroker, for a hub of one process)."""
        events = events if events is not None else LocalEventBroker()
        methods = MethodService(store, link, max_calls_per_device=max_method_calls_per_device)
        router = LocalDeviceRouter(link, methods)
        presence = PresenceService(store, clock, flush_interval=flush_interval)
        registry = RegistryService(store, clock, presence, router, events)
        twins = TwinService(
            store, clock, presence, router, events, link=link, max_twin_gets_per_device=max_twin_gets_per_device
        )
        certificates = CertificateService(store, clock, events, static=device_cas)
        auth = DeviceAuthenticator(
            store, clock, max_token_lifetime=max_token_lifetime, hostname=hostname, certificates=certificates
        )
        handler = DeviceEventHandler(auth, presence, twins, methods, events, router)
        query = QueryService(store, presence)
        runner = JobRunner(
            JobRunContext(
                store,
                clock,
                ResultWriter(store),
                router,
                call_window=job_call_window,
                continuous_interval=continuous_job_interval,
            ),
            events,
            node_id=node_id,
            max_active_jobs=max_active_jobs,
            retention_days=job_retention_days,
        )
        jobs = JobService(store, clock, events)
        schedules = ScheduleService(store, clock, jobs, events, run_history=schedule_run_history)
        scheduler = Scheduler(schedules, store, clock, events, node_id=node_id, grace_seconds=schedule_grace_seconds)
        return cls(
            hostname=hostname,
            store=store,
            clock=clock,
            events=events,
            router=router,
            presence=presence,
            registry=registry,
            twins=twins,
            methods=methods,
            certificates=certificates,
            device_events=handler,
            query=query,
            jobs=jobs,
            job_runner=runner,
            schedules=schedules,
            scheduler=scheduler,
        )
