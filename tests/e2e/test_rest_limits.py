"""REST robustness over real sockets: oversized bodies get 413, slow or silent clients are cut off.

The hub here has small limits (a 128 KiB body, half a second for headers, one second for a
body) so that each case ends quickly; the timing bounds asserted are generous liveness bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hub.config import Settings
from hub.runtime import Hub
from tests.e2e.conftest import api_client, hub_settings, service_token

MAX_BODY = 128 * 1024  # above the 100000 bytes the stalled clients announce
HEADER_TIMEOUT = 0.5
BODY_TIMEOUT = 1.0
CUT_OFF_WITHIN = 5.0  # seconds; the timeouts above are 0.5 and 1


@pytest.fixture
async def tight_hub(tmp_path: Path) -> AsyncIterator[Hub]:
    settings: Settings = hub_settings(tmp_path / "data").model_copy(
        update={
            "http_max_body_bytes": MAX_BODY,
            "http_header_timeout_seconds": HEADER_TIMEOUT,
            "http_body_timeout_seconds": BODY_TIMEOUT,
        }
    )
    async with Hub(settings) as running:
        yield running


@pytest.fixture
async def tight_api(tight_hub: Hub) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(tight_hub, timeout=10) as client:
        yield client


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


class RawClient:
    """One TCP connection to the hub's plain HTTP port, written to byte by byte if need be."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_until_closed(self, timeout: float = CUT_OFF_WITHIN) -> bytes:
        """Everything the hub sends until it closes the connection; fails if it stays open."""
        received = b""
        try:
            async with asyncio.timeout(timeout):
                while chunk := await self.reader.read(65536):
                    received += chunk
        except TimeoutError:
            raise AssertionError(f"the hub kept the connection open for over {timeout} s") from None
        except ConnectionError:
            pass  # a reset after the answer: the hub did not read what we were still sending
        return received

    async def send_until_answered(
        self, pieces: Iterator[bytes], interval: float = 0.1, timeout: float = CUT_OFF_WITHIN
    ) -> bytes:
        """Send ``pieces`` one per ``interval`` until the hub answers or closes; return all it sends."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for piece in pieces:
            if loop.time() > deadline:
                raise AssertionError(f"the hub kept taking a request for over {timeout} s without an answer")
            try:
                self.writer.write(piece)
                async with asyncio.timeout(interval):
                    chunk = await self.reader.read(65536)
            except TimeoutError:
                continue
            except ConnectionError:
                break
            return chunk + await self.read_until_closed() if chunk else b""
        return await self.read_until_closed()

    async def drip_until_closed(self, data: bytes, interval: float = 0.1) -> bytes:
        """Send ``data`` one byte per ``interval``, cycling, until the hub answers or closes."""
        return await self.send_until_answered((bytes([b]) for b in itertools.cycle(data)), interval)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


Connect = Callable[[], Awaitable[RawClient]]


@pytest.fixture
async def connect(tight_hub: Hub) -> AsyncIterator[Connect]:
    """Opens raw connections to the hub's plain HTTP port; all are closed before the hub stops."""
    assert tight_hub.endpoints is not None
    port = tight_hub.endpoints.http_port
    opened: list[RawClient] = []

    async def open_one() -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        opened.append(RawClient(reader, writer))
        return opened[-1]

    yield open_one
    for client in opened:
        await client.close()


def parse_response(raw: bytes) -> RawResponse:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(status_line.split()[1]), headers, body)


def request_head(hub: Hub, method: str, path: str, extra: str = "") -> bytes:
    return (
        f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: {service_token(hub)}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


def assert_iothub_error(response: RawResponse, status: int, code: str) -> None:
    assert response.status == status, response
    assert response.headers["iothub-errorcode"] == code
    assert response.headers["connection"] == "close"
    body = response.json()
    assert isinstance(body, dict)
    assert body["Message"].startswith(f"ErrorCode:{code};")
    assert body["ExceptionMessage"]


def new_id() -> str:
    return f"lim-{uuid.uuid4().hex[:8]}"


# -- body size -----------------------------------------------------------------------------------


async def test_declared_oversize_body_is_refused_before_the_route_runs(
    connect: Connect, tight_hub: Hub, tight_api: httpx.AsyncClient
) -> None:
    """Content-Length over the limit: 413 at once, nothing read, and not even a body-less route runs."""
    device_id = new_id()
    assert (await tight_api.put(f"/devices/{device_id}", json={})).status_code == 200

    client = await connect()
    # Only the headers go out: the hub must answer without waiting for the body.
    await client.write(
        request_head(tight_hub, "DELETE", f"/devices/{device_id}", f"Content-Length: {MAX_BODY + 1}\r\n")
    )
    response = parse_response(await client.read_until_closed())
    assert_iothub_error(response, 413, "RequestEntityTooLarge")
    assert str(MAX_BODY) in response.json()["Message"]  # type: ignore[index]

    assert (await tight_api.get(f"/devices/{device_id}")).status_code == 200  # the DELETE never ran


async def test_oversize_body_sent_by_an_ordinary_client_gets_413(tight_api: httpx.AsyncClient) -> None:
    device_id = new_id()
    big = {"deviceId": device_id, "statusReason": "x" * (MAX_BODY + 10)}
    response = await tight_api.put(f"/devices/{device_id}", json=big)
    assert response.status_code == 413
    assert response.headers["iothub-errorcode"] == "RequestEntityTooLarge"
    assert (await tight_api.get(f"/devices/{device_id}")).status_code == 404


async def test_chunked_body_growing_past_the_limit_is_cut_off(
    connect: Connect, tight_hub: Hub, tight_api: httpx.AsyncClient
) -> None:
    """No Content-Length: the body is counted as it streams, and refused once it passes the limit."""
    device_id = new_id()
    client = await connect()
    await client.write(request_head(tight_hub, "PUT", f"/devices/{device_id}", "Transfer-Encoding: chunked\r\n"))
    chunk = b" " * 4096
    chunks = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (MAX_BODY // len(chunk) + 4)
    answer = await client.send_until_answered(iter(chunks), interval=0.01)
    assert_iothub_error(parse_response(answer), 413, "RequestEntityTooLarge")
    assert (await tight_api.get(f"/devices/{device_id}")).status_code == 404
    assert (await tight_api.get("/healthz")).status_code == 200


async def test_body_under_the_limit_reaches_the_route(tight_api: httpx.AsyncClient) -> None:
    """Just under the limit, chunked or not, the route answers on the content (here: a 400 for the query)."""
    body = {"query": "SELECT * FROM devices WHERE deviceId = '" + "x" * (MAX_BODY - 200) + "'"}
    assert len(json.dumps(body)) < MAX_BODY
    response = await tight_api.post("/devices/query", json=body)
    assert response.status_code == 400
    assert response.headers["iothub-errorcode"] != "RequestEntityTooLarge"

    async def chunks() -> AsyncIterator[bytes]:
        text = json.dumps(body).encode()
        for i in range(0, len(text), 8192):
            yield text[i : i + 8192]

    streamed = await tight_api.post("/devices/query", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 400
    assert streamed.headers["iothub-errorcode"] != "RequestEntityTooLarge"


async def test_default_limit_accepts_the_largest_bulk_import(api: httpx.AsyncClient) -> None:
    """The default limit holds IoT Hub's largest request: 1000 devices, 128-character ids, long fields."""
    key = "A" * 86 + "=="  # base64 of 64 bytes, the longest key
    prefix = uuid.uuid4().hex[:8]
    devices = [
        {
            "id": f"{prefix}-{i:04d}-" + "x" * (128 - 14),
            "importMode": "create",
            "status": "disabled",
            "statusReason": "r" * 128,
            "authentication": {
                "type": "sas",
                "symmetricKey": {"primaryKey": key, "secondaryKey": key},
                "x509Thumbprint": {"primaryThumbprint": None, "secondaryThumbprint": None},
            },
            "capabilities": {"iotEdge": False},
            # The rest of IoT Hub's ExportImportDevice, as the SDKs send it.
            **dict.fromkeys(["moduleId", "eTag", "twinETag", "tags", "properties", "deviceScope", "parentScopes"]),
        }
        for i in range(1000)
    ]
    content = json.dumps(devices, indent=2).encode()
    assert len(content) > 900_000
    response = await api.post("/devices", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text[:500]
    assert response.json()["isSuccessful"] is True


# -- slow and silent clients -----------------------------------------------------------------------


async def test_silent_connection_is_closed(connect: Connect) -> None:
    client = await connect()
    assert await client.read_until_closed() == b""  # closed without an answer: nothing was asked


async def test_slowloris_headers_get_408(connect: Connect) -> None:
    """Headers one byte per 0.1 s: every byte comes well within any idle timeout, yet the request
    as a whole must be cut off."""
    client = await connect()
    head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + b"X-Padding: " + b"p" * 10_000
    answer = await client.drip_until_closed(head)
    assert_iothub_error(parse_response(answer), 408, "RequestTimeout")


async def test_slowloris_on_a_kept_alive_connection_is_cut_off(connect: Connect) -> None:
    """The deadline also holds for the second request on a connection, not only the first."""
    client = await connect()
    await client.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    first = await client.reader.readuntil(b"}")
    assert first.startswith(b"HTTP/1.1 200")
    answer = await client.drip_until_closed(b"GET /healthz HTTP/1.1\r\nX-Padding: " + b"p" * 10_000)
    assert_iothub_error(parse_response(answer), 408, "RequestTimeout")


async def test_body_stalled_midway_gets_408_and_changes_nothing(
    connect: Connect, tight_hub: Hub, tight_api: httpx.AsyncClient
) -> None:
    device_id = new_id()
    client = await connect()
    await client.write(request_head(tight_hub, "PUT", f"/devices/{device_id}", "Content-Length: 100000\r\n"))
    await client.write(b'{"deviceId": "' + device_id.encode())  # then nothing more
    response = parse_response(await client.read_until_closed())
    assert_iothub_error(response, 408, "RequestTimeout")
    assert (await tight_api.get(f"/devices/{device_id}")).status_code == 404


async def test_body_dripping_after_an_early_answer_is_cut_off(connect: Connect) -> None:
    """A route that reads no body answers at once; a body still dripping in after that may not keep
    the connection open (each byte would otherwise reset uvicorn's keep-alive timer)."""
    client = await connect()
    await client.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: 60000\r\n\r\n")
    first = await client.reader.readuntil(b"}")
    assert first.startswith(b"HTTP/1.1 200")
    await client.drip_until_closed(b"x")


async def test_hub_keeps_serving_while_slow_clients_hang_on(
    connect: Connect, tight_hub: Hub, tight_api: httpx.AsyncClient
) -> None:
    """Silent, slow-header and stalled-body clients at once, many of each: others are served meanwhile,
    and every one of the bad connections is closed in the end."""
    bad: list[RawClient] = []
    for i in range(30):
        client = await connect()
        if i % 3 == 1:
            await client.write(b"GET /healthz HTTP/1.1\r\nHost: loc")
        elif i % 3 == 2:
            await client.write(request_head(tight_hub, "PUT", f"/devices/{new_id()}", "Content-Length: 100000\r\n"))
            await client.write(b'{"status": "ena')
        bad.append(client)

    for _ in range(5):
        response = await tight_api.get("/devices")
        assert response.status_code == 200
        assert (await tight_api.put(f"/devices/{new_id()}", json={})).status_code == 200

    answers = await asyncio.gather(*(client.read_until_closed() for client in bad))
    assert answers[0::3] == [b""] * 10
    for answer in answers[1::3] + answers[2::3]:
        assert parse_response(answer).status == 408
    assert (await tight_api.get("/healthz")).json()["status"] == "ok"
