"""Direct methods: send a request to one device and correlate its reply by request id."""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
from collections import defaultdict

from hub.domain.json import JsonValue, loads_strict
from hub.domain.methods import MAX_PAYLOAD_BYTES, MethodRequest, MethodResult, encode_payload
from hub.errors import DeviceNotOnlineError, DeviceReplyError, GatewayTimeoutError, ThrottledError
from hub.ports import DeviceLink, DeviceStore
from hub.wire.topics import method_request_topic

__all__ = ["DEFAULT_MAX_CALLS_PER_DEVICE", "MethodService"]

log = logging.getLogger(__name__)

DEFAULT_MAX_CALLS_PER_DEVICE = 64


def decode_reply(payload: bytes) -> JsonValue:
    """A device reply body: strict JSON (no NaN, no infinite numbers), or empty for ``null``."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise DeviceReplyError(f"device reply is {len(payload)} bytes, over the limit of {MAX_PAYLOAD_BYTES}")
    if not payload.strip():
        return None
    try:
        return loads_strict(payload)
    except ValueError as exc:
        raise DeviceReplyError(f"device reply is not valid UTF-8 JSON: {exc}") from exc


class MethodService:
    """Many calls to one device may be in flight, each with its own ``$rid``, up to
    ``max_calls_per_device``; a call beyond that is refused at once with ThrottledError."""

    def __init__(
        self, store: DeviceStore, link: DeviceLink, *, max_calls_per_device: int = DEFAULT_MAX_CALLS_PER_DEVICE
    ) -> None:
        if max_calls_per_device < 1:
            raise ValueError(f"max_calls_per_device must be at least 1, not {max_calls_per_device}")
        self._store = store
        self._link = link
        self._max_per_device = max_calls_per_device
        # Request ids differ between hub processes: a device that re-sends an old reply after a
        # restart (paho re-sends unacknowledged QoS 1 publishes) must not answer a new call.
        self._rid_prefix = secrets.token_hex(4)
        self._rids = itertools.count(1)
        self._pending: dict[tuple[str, str], asyncio.Future[MethodResult]] = {}
        self._by_device: defaultdict[str, set[str]] = defaultdict(set)

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    async def invoke(self, device_id: str, request: MethodRequest) -> MethodResult:
        if not self._link.is_connected(device_id):
            await self._store.get_device(device_id)  # DeviceNotFoundError wins over offline
            if request.connect_timeout <= 0 or not await self._link.wait_connected(device_id, request.connect_timeout):
                raise DeviceNotOnlineError(f"device {device_id!r} is not online", device_id=device_id)
        if len(self._by_device.get(device_id, ())) >= self._max_per_device:
            raise ThrottledError(
                f"device {device_id!r} already has {self._max_per_device} direct method calls in flight; "
                "retry when one has finished",
                device_id=device_id,
            )
        rid = f"{self._rid_prefix}{next(self._rids):x}"
        key = (device_id, rid)
        future: asyncio.Future[MethodResult] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        self._by_device[device_id].add(rid)
        try:
            await self._link.send(
                device_id, method_request_topic(request.method_name, rid), encode_payload(request.payload)
            )
            async with asyncio.timeout(request.response_timeout):
                return await future
        except TimeoutError:
            raise GatewayTimeoutError(
                f"timed out waiting {request.response_timeout} s for device {device_id!r} to answer "
                f"{request.method_name}",
                device_id=device_id,
            ) from None
        finally:
            self._pending.pop(key, None)
            rids = self._by_device.get(device_id)
            if rids is not None:
                rids.discard(rid)
                if not rids:
                    del self._by_device[device_id]

    def on_reply(self, device_id: str, rid: str, status: int, payload: bytes) -> None:
        future = self._pending.get((device_id, rid))
        if future is None or future.done():
            log.debug("reply for unknown or finished request %s from %s dropped", rid, device_id)
            return
        try:
            future.set_result(MethodResult(status, decode_reply(payload)))
        except DeviceReplyError as exc:
            future.set_exception(exc)

    def on_disconnected(self, device_id: str) -> None:
        """Calls waiting on a device that dropped fail at once rather than time out."""
        for rid in list(self._by_device.get(device_id, ())):
            future = self._pending.get((device_id, rid))
            if future is not None and not future.done():
                future.set_exception(
                    DeviceNotOnlineError(f"device {device_id!r} disconnected before answering", device_id=device_id)
                )
