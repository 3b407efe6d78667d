"""The hub's ports: every interface between its parts, each documented here once.

- ``Store`` (its parts ``DeviceStore`` ... ``ScheduleStore``): the database. hub.storage.sql
  implements it on SQLite and PostgreSQL; one contract suite checks every implementation
  (tests/integration/test_store_contract.py).
- ``DeviceLink``, ``DeviceStreams``: the device gateway (hub.gateway) as the engine sees it,
  one connected device at a time; ``DeviceEvents``: the engine as the gateway sees it.
- ``DeviceRouter``: device work the hub starts (methods, desired pushes, disconnects), for
  the API and the job runs alike; hub.engine.sessions.router implements it over this
  node's gateway, tests.support.devices in memory.
- ``EventBroker``: hub-internal events (hub.domain.events) between components;
  hub.engine.events.LocalEventBroker carries them inside one process.

Rules every Store keeps:
- ``get_*`` raises the matching NotFound error (DeviceNotFoundError for devices and twins).
- Versioned writes (``update_device``, ``save_twin``) succeed only when the stored
  revision equals ``expected_revision``; otherwise ConcurrencyConflictError (or
  DeviceNotFoundError when the row is gone). Nothing is ever silently overwritten.
- Batch methods write in one transaction, never one per row.
- Datetimes go in and come out UTC-aware.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, TypeVar

from hub.domain.certificates import CaCertificate
from hub.domain.devices import ConnectionState, Device, DeviceStatus
from hub.domain.events import HubEvent
from hub.domain.jobs import DeviceJob, DeviceJobStatistics, DeviceJobStatus, Job, JobEvent, JobStatus, JobType
from hub.domain.json import JsonObject
from hub.domain.methods import MethodRequest, MethodResult
from hub.domain.policies import AccessPolicy
from hub.domain.schedules import Schedule
from hub.domain.twin import Twin
from hub.query.ast import Expr, Query

__all__ = [
    "CertificateStore",
    "DeviceEvents",
    "DeviceLink",
    "DeviceRouter",
    "DeviceStore",
    "DeviceStreams",
    "EventBroker",
    "EventHandler",
    "JobStore",
    "PolicyStore",
    "PresenceStore",
    "PresenceUpdate",
    "QueryStore",
    "ScheduleStore",
    "Store",
    "Subscription",
    "TwinJobBatch",
    "TwinStore",
]


class DeviceStore(Protocol):
    async def add_device(self, device: Device) -> Device:
        """Insert a device and its empty twin; DeviceAlreadyExistsError when the id is taken."""
        ...

    async def add_devices(self, devices: Sequence[Device]) -> set[str]:
        """Insert many devices with empty twins in one transaction; return the ids that already existed
        (those are not written)."""
        ...

    async def get_device(self, device_id: str) -> Device: ...

    async def list_devices(self, *, limit: int = 1000, after: str | None = None) -> list[Device]:
        """Devices in device_id order, starting after ``after``."""
        ...

    async def count_devices(self) -> int: ...

    async def count_devices_by_status(self) -> dict[DeviceStatus, int]:
        """How many devices have each status (every status present, 0 when none)."""
        ...

    async def update_device(self, device: Device, *, expected_revision: int) -> Device:
        """Write identity fields (keys, status, status_reason, status_updated_time); the stored
        ``etag_revision`` becomes ``expected_revision + 1`` and the returned Device shows it."""
        ...

    async def remove_device(self, device_id: str, *, expected_revision: int | None = None) -> None:
        """Delete a device and its twin; with ``expected_revision``, only if the etag matches."""
        ...

    async def remove_devices(self, device_ids: Sequence[str]) -> set[str]:
        """Delete many devices in one transaction; return the ids that did not exist."""
        ...


class TwinStore(Protocol):
    async def get_twin(self, device_id: str) -> Twin:
        """The twin, with identity fields (status, connection state, last activity) filled in."""
        ...

    async def save_twin(self, twin: Twin, *, expected_revision: int) -> None:
        """Write tags, desired, reported (with versions and metadata), version and revision."""
        ...

    async def get_twins(self, device_ids: Sequence[str]) -> dict[str, Twin]:
        """The twins of those devices that exist, keyed by device id (as ``get_twin`` fills them);
        ids without a device are simply absent."""
        ...

    async def save_twins(self, writes: Sequence[tuple[Twin, int]]) -> set[str]:
        """Write each ``(twin, expected_revision)`` as ``save_twin`` does, all in one transaction,
        each only when its stored revision is still the expected one; return the device ids that
        were not written (revision changed meanwhile, or device gone). Each device at most once."""
        ...


@dataclass(frozen=True, slots=True)
class PresenceUpdate:
    device_id: str
    connection_state: ConnectionState | None
    at: datetime
    """When the state changed (for ``connection_state``) or the last activity happened."""


class PresenceStore(Protocol):
    async def record_presence(self, updates: Sequence[PresenceUpdate]) -> None:
        """Apply connection state changes and last-activity times in one transaction.
        Updates are applied in order; unknown device ids are ignored."""
        ...

    async def reset_presence(self) -> None:
        """Mark every device Disconnected (at start-up: no connection survives a restart)."""
        ...


class PolicyStore(Protocol):
    async def list_policies(self) -> list[AccessPolicy]: ...

    async def add_policies(self, policies: Sequence[AccessPolicy]) -> None:
        """Insert policies whose names are not present yet; existing ones are kept as they are."""
        ...


class CertificateStore(Protocol):
    """CA certificates operators registered; names are unique, ``revision`` versions a row."""

    async def add_certificate(self, certificate: CaCertificate) -> None:
        """Insert a new one; CertificateAlreadyExistsError when the name is taken."""
        ...

    async def replace_certificate(self, certificate: CaCertificate, *, expected_revision: int | None) -> CaCertificate:
        """Overwrite an existing one (its pem and updated_time; created_time stays); the stored
        revision becomes the old one + 1, checked against ``expected_revision`` when given
        (ConcurrencyConflictError); CertificateNotFoundError when absent."""
        ...

    async def get_certificate(self, name: str) -> CaCertificate: ...

    async def list_certificates(self) -> list[CaCertificate]:
        """All of them, in name order."""
        ...

    async def remove_certificate(self, name: str, *, expected_revision: int | None) -> None:
        """Delete one; CertificateNotFoundError when absent, ConcurrencyConflictError when
        ``expected_revision`` is given and differs."""
        ...


class QueryStore(Protocol):
    """Twin queries run in the database (hub.query.sql compiles them), never over every twin in
    Python. Conditions and results follow hub.query.ast as decided by the reference evaluator
    (hub.query.evaluate); a condition selects a row only when it is exactly true, and
    ``None`` selects every row. Type-checking the query is the caller's (hub.query.check);
    a field the database cannot address raises QuerySyntaxError."""

    async def query_twins(self, condition: Expr | None, *, after: str | None, limit: int) -> list[Twin]:
        """Up to ``limit`` twins the condition selects, in device_id order (by code point),
        starting after the device id ``after`` (keyset paging: rows that change between pages
        are neither skipped nor repeated by position)."""
        ...

    async def query_device_ids(self, condition: Expr | None, *, after: str | None, limit: int) -> list[str]:
        """Like query_twins, but only the device ids (what a job resolves its device set with)."""
        ...

    async def query_device_jobs(
        self, condition: Expr | None, *, after: tuple[str, str] | None, limit: int
    ) -> list[DeviceJob]:
        """Like query_twins over ``devices.jobs`` records, in (device_id, job_id) order, starting
        after the key ``after``."""
        ...

    async def aggregate(self, query: Query) -> list[JsonObject]:
        """The result of a query with aggregates or GROUP BY, computed in the database: one
        object per group, keyed as Projection.key says, undefined values left out, groups in
        the evaluator's order and cut to ``query.top``; exactly what hub.query.evaluate.run_query
        gives over the same rows (sums of non-integers may differ in their last bits)."""
        ...


@dataclass(frozen=True, slots=True)
class TwinJobBatch:
    """What ``JobStore.complete_twin_job_batch`` did: the twins it wrote and the device ids
    whose devices no longer exist (their records are failed)."""

    twins: list[Twin]
    missing: list[str]


class JobStore(Protocol):
    """Jobs, their per-device records and their event history. Each method is one
    transaction; batch methods are never a transaction per row.

    Several nodes may share one database: a node runs a job only while it holds the job's
    lease (``acquired_by`` / ``acquired_until``), taken with ``acquire_jobs`` and renewed or
    released through ``update_job``."""

    async def add_job(self, job: Job) -> Job:
        """Insert a job; JobAlreadyExistsError when the id is taken."""
        ...

    async def get_job(self, job_id: str) -> Job:
        """The job; JobNotFoundError when there is none."""
        ...

    async def list_jobs(
        self,
        *,
        job_type: JobType | None = None,
        status: JobStatus | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs in job_id order, starting after ``after``, optionally of one type and status."""
        ...

    async def update_job(self, job: Job, *, expected_revision: int) -> Job:
        """Write every mutable field of ``job`` when the stored revision is ``expected_revision``;
        the stored and returned revision is ``expected_revision + 1``. ConcurrencyConflictError
        when the revision differs, JobNotFoundError when the job is gone."""
        ...

    async def acquire_jobs(
        self,
        *,
        node_id: str,
        now: datetime,
        lease_seconds: float,
        limit: int,
        statuses: Sequence[JobStatus],
        exclude: Sequence[str] = (),
    ) -> list[Job]:
        """Lease up to ``limit`` jobs in ``statuses`` whose start_time has come (at or before
        ``now``), other than the job ids in ``exclude``
        (those the node runs already), whose lease is free, expired (before ``now``) or
        already this node's: they get ``acquired_by = node_id`` and
        ``acquired_until = now + lease_seconds`` (and a new revision). Concurrent callers never
        receive the same job (PostgreSQL: ``FOR UPDATE SKIP LOCKED``). Jobs in start_time order."""
        ...

    async def add_device_jobs(self, jobs: Sequence[DeviceJob]) -> set[tuple[str, str]]:
        """Insert device records; return the (job_id, device_id) keys that already existed
        (those are not written)."""
        ...

    async def update_device_jobs(self, updates: Sequence[DeviceJob]) -> None:
        """Write status, last_updated_time, start_time, end_time, outcome and error of existing
        records keyed by (job_id, device_id); unknown keys are ignored. A record that is
        already terminal (completed, failed, canceled) is left as it is: the first terminal
        result wins, so a device never has two."""
        ...

    async def complete_twin_job_batch(
        self, job_id: str, device_ids: Sequence[str], change: Callable[[Twin], Twin], now: datetime
    ) -> TwinJobBatch:
        """One transaction for a batch of a twin update job: the job's records for
        ``device_ids`` that are not terminal yet are claimed (others are skipped, so a batch
        run again after a crash changes nothing twice); each claimed device's twin is read,
        passed through ``change`` and written; the claimed records become completed (start,
        end and last update ``now``). Records whose device no longer exists become failed
        with error ``{"code": "DeviceNotFound", ...}``. Returns the twins written (as
        ``change`` returned them) and the ids found missing."""
        ...

    async def list_device_jobs(
        self, job_id: str, *, status: DeviceJobStatus | None = None, after: str | None = None, limit: int = 1000
    ) -> list[DeviceJob]:
        """One job's device records in device_id order, starting after the device id ``after``."""
        ...

    async def count_device_jobs(self, job_id: str) -> DeviceJobStatistics:
        """The job's device records counted by status in one query; ``pending_count`` covers
        pending and scheduled, ``succeeded_count`` completed."""
        ...

    async def pending_device_ids(
        self, job_id: str, *, after: str | None = None, limit: int = 1000, include_running: bool = False
    ) -> list[str]:
        """Ids of the job's devices still pending (or scheduled), and with ``include_running``
        also running (every device not terminal), in device_id order after ``after``."""
        ...

    async def promote_due_jobs(self, now: datetime) -> list[Job]:
        """Scheduled jobs whose start_time is at or before ``now`` become queued (with a new
        revision), in one statement; returns them as stored."""
        ...

    async def defer_future_jobs(self, now: datetime) -> list[Job]:
        """Queued jobs whose start_time is after ``now`` (new ones that start later) become
        scheduled (with a new revision), in one statement; returns them as stored."""
        ...

    async def add_job_events(self, events: Sequence[JobEvent]) -> list[JobEvent]:
        """Append events; return them with the sequence the store assigned (increasing in input order)."""
        ...

    async def list_job_events(self, job_id: str, *, after_sequence: int = 0, limit: int = 1000) -> list[JobEvent]:
        """One job's events in sequence order, those with a sequence above ``after_sequence``."""
        ...

    async def purge_jobs(self, finished_before: datetime) -> int:
        """Delete terminal jobs that ended before ``finished_before`` with their device records
        and events; return how many jobs were deleted."""
        ...


class ScheduleStore(Protocol):
    """Schedules (hub.domain.schedules) and the jobs that are their runs. Each method is one
    transaction.

    Several nodes may share one database: a node handles a schedule's due runs only while it
    holds the schedule's lease (``acquired_by`` / ``acquired_until``), taken with
    ``acquire_due_schedules`` and released through ``update_schedule``."""

    async def add_or_replace_schedule(self, schedule: Schedule, *, expected_revision: int | None) -> Schedule:
        """With ``expected_revision`` None, insert a new schedule (ConcurrencyConflictError when
        the id exists meanwhile); otherwise replace every field of the stored one when its
        revision is ``expected_revision`` (ConcurrencyConflictError when it differs or the
        schedule is gone). Returns it as stored, with revision 1 or ``expected_revision + 1``."""
        ...

    async def get_schedule(self, schedule_id: str) -> Schedule:
        """The schedule; ScheduleNotFoundError when there is none."""
        ...

    async def list_schedules(self, *, after: str | None = None, limit: int = 100) -> list[Schedule]:
        """Schedules in schedule_id order (by code point), starting after ``after``."""
        ...

    async def update_schedule(self, schedule: Schedule, *, expected_revision: int) -> Schedule:
        """Write every mutable field when the stored revision is ``expected_revision``; the
        stored and returned revision is ``expected_revision + 1``. ConcurrencyConflictError
        when the revision differs, ScheduleNotFoundError when the schedule is gone."""
        ...

    async def remove_schedule(self, schedule_id: str) -> None:
        """Delete the schedule (its run jobs stay); ScheduleNotFoundError when there is none."""
        ...

    async def acquire_due_schedules(
        self, *, node_id: str, now: datetime, lease_seconds: float, limit: int
    ) -> list[Schedule]:
        """Lease up to ``limit`` schedules that have work: state ``enabled`` with
        ``next_run_time`` at or before ``now``, or a ``queued_run_time`` set; and whose lease is
        free, expired (at or before ``now``) or already this node's. They get
        ``acquired_by = node_id``, ``acquired_until = now + lease_seconds`` and a new revision.
        Concurrent callers never receive the same schedule (PostgreSQL: ``FOR UPDATE SKIP
        LOCKED``). In next_run_time order."""
        ...

    async def list_schedule_runs(self, schedule_id: str, *, limit: int) -> list[Job]:
        """The latest ``limit`` jobs whose schedule_id is ``schedule_id``, newest first
        (created_time, then job_id, descending); jobs outlive their schedule."""
        ...


class Store(
    DeviceStore, TwinStore, PresenceStore, PolicyStore, CertificateStore, QueryStore, JobStore, ScheduleStore, Protocol
):
    async def ping(self) -> None:
        """Raise ServiceUnavailableError when the database cannot be reached."""
        ...


class DeviceLink(Protocol):
    """The gateway's side: reach one connected device, never a broadcast."""

    def is_connected(self, device_id: str) -> bool: ...

    async def wait_connected(self, device_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the device to be connected; True if it is."""
        ...

    async def send(self, device_id: str, topic: str, payload: bytes) -> None:
        """Publish to that device's session only (QoS 0); DeviceNotOnlineError if not connected."""
        ...

    async def disconnect(self, device_id: str) -> None:
        """Close the device's connection if it has one."""
        ...


class DeviceStreams(Protocol):
    """The gateway's other door: device connections whose MQTT bytes arrive over a transport
    the gateway does not listen on itself (MQTT over WebSockets on the HTTPS port)."""

    def open_stream(self, transport: asyncio.Transport) -> asyncio.Protocol:
        """Serve one device connection over ``transport``: feed the returned protocol the bytes
        that arrive (``data_received``, then ``eof_received`` / ``connection_lost``); what the
        gateway sends goes to ``transport.write``. Login, scope, limits, keepalive and
        presence are those of the MQTT listener. ConnectionRefusedError when not running."""
        ...


class DeviceEvents(Protocol):
    """The engine's side, called by the gateway for everything a device does."""

    async def authenticate(
        self, client_id: str, username: str | None, password: str | None, certificates: Sequence[bytes] = ()
    ) -> bool:
        """True when the CONNECT credentials log in as this device id: a valid SAS token as
        ``password``, or, for an X.509 device, the TLS client certificate chain ``certificates``
        (DER, leaf first, as the device sent it)."""
        ...

    async def on_connected(self, device_id: str) -> None: ...

    async def on_disconnected(self, device_id: str) -> None: ...

    async def on_message(self, device_id: str, topic: str, payload: bytes) -> tuple[str, bytes] | None:
        """Handle a device publish on ``$iothub/...`` or ``devices/{id}/...``; return the reply
        (topic, payload) to send back to that device, if any."""
        ...


class DeviceRouter(Protocol):
    """Work that must reach a device's live connection, wherever the hub started it (a REST
    call, a job run, a registry change). The device may be connected to any node of the
    hub; an implementation finds its connection."""

    def is_connected(self, device_id: str) -> bool:
        """Whether the device has a live connection now (a job calls only those)."""
        ...

    async def invoke_method(self, device_id: str, request: MethodRequest) -> MethodResult:
        """Call a direct method and wait for the device's answer. DeviceNotFoundError for an
        unknown device; DeviceNotOnlineError when it is not connected within
        ``request.connect_timeout`` or drops before answering; ThrottledError when it already
        has its fill of calls in flight; GatewayTimeoutError after ``response_timeout``;
        DeviceReplyError for an answer that is not JSON or too large."""
        ...

    async def push_desired(self, device_id: str, patch: JsonObject, version: int) -> None:
        """Notify a connected device of a desired-properties patch at twin ``version``; a
        device that is not connected gets nothing (it reads its twin when it connects)."""
        ...

    async def disconnect(self, device_id: str) -> None:
        """Close the device's connection if it has one (its keys or status changed)."""
        ...


E = TypeVar("E", bound=HubEvent)

EventHandler = Callable[[E], Awaitable[None] | None]
"""Told of one event: quick, never blocking; a coroutine function is awaited."""


class Subscription(Protocol):
    def unsubscribe(self) -> None:
        """No more events for this handler (events on their way may still arrive)."""
        ...


class EventBroker(Protocol):
    """Hub-internal events (hub.domain.events) from the component where something happened
    to those that act on it: a device connected, a twin changed, a job was created or
    cancelled, a schedule changed. Events are facts that already happened and are stored;
    a subscriber that misses one (a restart, another node's lost message) finds the same
    facts at its next poll, so an event only makes it act sooner.

    Each subscriber sees the events of one publisher in the order published. A handler that
    raises is logged and stays subscribed; it never fails the publisher."""

    async def publish(self, event: HubEvent) -> None:
        """Deliver to every subscriber of the event's type. Subscribers in this process have
        handled it when this returns; an implementation across processes sends it on (as
        hub.domain.events.encode_event bytes) without waiting for their handlers."""
        ...

    def subscribe(self, handler: EventHandler[E], kinds: Sequence[type[E]]) -> Subscription:
        """Call ``handler`` with each later event whose type is one of ``kinds``."""
        ...
