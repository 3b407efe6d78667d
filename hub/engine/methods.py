"""Direct methods: send a request to one device and correlate its reply by request id."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections import defaultdict

from hub.domain.json import JsonValue
from hub.domain.methods import MAX_PAYLOAD_BYTES, MethodRequest, MethodResult, encode_payload
from hub.engine.ports import DeviceLink, DeviceStore
from hub.errors import DeviceNotOnlineError, DeviceReplyError, GatewayTimeoutError
from hub.wire.topics import method_request_topic

__all__ = ["MethodService"]

log = logging.getLogger(__name__)


def decode_reply(payload: bytes) -> JsonValue:
    """A device reply body: JSON, or empty for ``null``."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise DeviceReplyError(f"device reply is {len(payload)} bytes, over the limit of {MAX_PAYLOAD_BYTES}")
    if not payload.strip():
        return None
    try:
        value: JsonValue = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DeviceReplyError(f"device reply is not valid UTF-8 JSON: {exc}") from exc
    return value


class MethodService:
    """Many calls to one device may be in flight; each has its own ``$rid``."""

    def __init__(self, store: DeviceStore, link: DeviceLink) -> None:
        self._store = store
        self._link = link
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
        rid = format(next(self._rids), "x")
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
