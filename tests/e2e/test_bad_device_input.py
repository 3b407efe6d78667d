"""Bad input from devices on the twin side (issue 6), over real MQTT connections to a real hub:
malformed or over-limit reported patches, twin GET floods, unknown ``$iothub`` topics and
malformed ``$rid`` parameters. Each gets a clear error reply or a logged drop; the connection
keeps working and the stored twin is left as it was."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import pytest

from hub.runtime import Hub
from tests.e2e.conftest import body, create_device, hub_settings, mqtt_client, next_message, service_token
from tests.integration.gateway.gateway_support import RawClient, raw_client

pytestmark = pytest.mark.timeout(120)

REPORTED = "$iothub/twin/PATCH/properties/reported/"
RESPONSES = "$iothub/twin/res/"


def _nested(depth: int) -> dict[str, Any]:
    """A reported patch whose leaf sits ``depth`` levels down (IoT Hub allows 10)."""
    value: Any = 1
    for level in range(depth, 0, -1):
        value = {f"l{level}": value}
    result: dict[str, Any] = value
    return result


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


BAD_REPORTED: dict[str, bytes] = {
    "not-json": b"not json",
    "empty": b"",
    "truncated": b'{"a": ',
    "invalid-utf8": b'{"a": "\xff\xfe"}',
    "utf8-overlong": b'{"a": "\xc0\xaf"}',
    "array": b"[1, 2]",
    "string": b'"text"',
    "number": b"42",
    "null": b"null",
    "depth-11": _json(_nested(11)),
    "depth-11-array": b'{"a": ' + b"[" * 10 + b"1" + b"]" * 10 + b"}",
    "depth-10000": b'{"a":' * 10_000 + b"1" + b"}" * 10_000,  # past Python's recursion limit
    "array-depth-30000": b"[" * 30_000 + b"]" * 30_000,
    "reported-over-32kb": _json({f"k{i}": "v" * 4000 for i in range(9)}),
    "payload-over-64kb": _json({"a": [1] * 40_000}),
    "key-dollar": b'{"$foo": 1}',
    "key-dollar-nested": b'{"a": {"$version": 1}}',
    "key-dot": b'{"a.b": 1}',
    "key-space": b'{"a b": 1}',
    "key-empty": b'{"": 1}',
    "key-control": b'{"a\\u0001": 1}',
    "key-c1-control": b'{"a\\u0085": 1}',
    "key-nul": b'{"a\\u0000": 1}',
    "key-over-1kb": _json({"k" * 1025: 1}),
    "key-lone-surrogate": b'{"\\ud800": 1}',
    "value-lone-surrogate": b'{"a": "\\udc00"}',
    "value-lone-surrogate-in-array": b'{"a": ["ok", "\\ud83d"]}',
    "int-over-range": b'{"a": 4503599627370496}',
    "int-under-range": b'{"a": -4503599627370497}',
    "int-5000-digits": b'{"a": ' + b"9" * 5000 + b"}",
    "float-overflow": b'{"a": 1e400}',
    "nan": b'{"a": NaN}',
    "infinity": b'{"a": -Infinity}',
    "string-over-4kb": _json({"a": "x" * 4097}),
}


async def _twin(api: httpx.AsyncClient, device_id: str) -> dict[str, Any]:
    response = await api.get(f"/twins/{device_id}")
    assert response.status_code == 200, response.text
    twin: dict[str, Any] = response.json()
    return twin


def _stable(twin: dict[str, Any]) -> dict[str, Any]:
    """The twin without what presence changes on its own."""
    return {key: value for key, value in twin.items() if key not in ("connectionState", "lastActivityTime")}


async def _reply(client: aiomqtt.Client, rid: str, timeout: float = 10) -> aiomqtt.Message:
    """The next twin response, which must be the one for ``rid``."""
    message = await next_message(client, RESPONSES, timeout=timeout)
    topic = str(message.topic)
    assert topic.partition("?$rid=")[2].partition("&")[0] == rid, topic
    return message


def _status(message: aiomqtt.Message) -> int:
    return int(str(message.topic)[len(RESPONSES) :].partition("/")[0])


@pytest.mark.parametrize("case", sorted(BAD_REPORTED))
async def test_bad_reported_patch_gets_400_and_changes_nothing(hub: Hub, api: httpx.AsyncClient, case: str) -> None:
    creds = await create_device(api)
    await api.patch(f"/twins/{creds.device_id}", json={"properties": {"desired": {"fan": "on"}}})
    async with mqtt_client(hub, creds) as client:
        await client.subscribe(f"{RESPONSES}#")
        await client.publish(f"{REPORTED}?$rid=ok-1", _json({"firmware": "1.0"}))
        assert str((await _reply(client, "ok-1")).topic) == f"{RESPONSES}204/?$rid=ok-1&$version=2"
        before = await _twin(api, creds.device_id)

        await client.publish(f"{REPORTED}?$rid=bad", BAD_REPORTED[case], qos=1)
        reply = await _reply(client, "bad")
        assert _status(reply) == 400, str(reply.topic)
        error = body(reply)
        assert isinstance(error, dict)
        assert error.get("message"), error

        # The twin is as it was: same versions, same etag, same contents.
        assert _stable(await _twin(api, creds.device_id)) == _stable(before)
        # The connection keeps working, and the next patch takes the next version.
        await client.publish(f"{REPORTED}?$rid=ok-2", _json({"firmware": "2.0"}))
        assert str((await _reply(client, "ok-2")).topic) == f"{RESPONSES}204/?$rid=ok-2&$version=3"
        await client.publish("$iothub/twin/GET/?$rid=get", b"")
        doc = body(await _reply(client, "get"))
        assert doc == {"desired": {"fan": "on", "$version": 2}, "reported": {"firmware": "2.0", "$version": 3}}
    after = await _twin(api, creds.device_id)
    assert after["properties"]["reported"]["$version"] == 3
    assert after["properties"]["reported"]["firmware"] == "2.0"
    assert after["version"] == before["version"]


@pytest.fixture
async def pg_hub(tmp_path: Path, postgres_url: str) -> AsyncIterator[Hub]:
    async with Hub(hub_settings(tmp_path / "data", database_url=postgres_url)) as running:
        yield running


@pytest.mark.postgres
async def test_a_value_postgres_refuses_fails_only_its_own_patch(pg_hub: Hub) -> None:
    """NUL passes IoT Hub's rules but PostgreSQL's jsonb cannot hold it: that patch alone is
    refused, and the patches of other devices sent at the same moment (one group commit,
    usually) succeed."""
    assert pg_hub.endpoints is not None
    headers = {"Authorization": service_token(pg_hub)}
    async with httpx.AsyncClient(base_url=pg_hub.endpoints.http_url, timeout=30, headers=headers) as api:
        devices = [await create_device(api) for _ in range(5)]
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(mqtt_client(pg_hub, device)) for device in devices]
            await asyncio.gather(*(client.subscribe(f"{RESPONSES}#") for client in clients))
            payloads = [b'{"a": "x\\u0000y"}'] + [_json({"ok": index}) for index in range(1, len(clients))]
            sends = zip(clients, payloads, strict=True)
            await asyncio.gather(*(client.publish(f"{REPORTED}?$rid=p", payload) for client, payload in sends))
            replies = await asyncio.gather(*(_reply(client, "p") for client in clients))
            assert [_status(reply) for reply in replies] == [400] + [204] * (len(clients) - 1)
            assert all(str(reply.topic).endswith("&$version=2") for reply in replies[1:])
            await clients[0].publish(f"{REPORTED}?$rid=again", _json({"a": "xy"}))
            assert str((await _reply(clients[0], "again")).topic) == f"{RESPONSES}204/?$rid=again&$version=2"
        assert (await _twin(api, devices[0].device_id))["properties"]["reported"]["a"] == "xy"
        assert (await _twin(api, devices[1].device_id))["properties"]["reported"]["ok"] == 1


# -- twin GET floods ---------------------------------------------------------------------

FLOOD = 2000


async def _flood_replies(raw: RawClient, replies: dict[str, int]) -> None:
    """Record the status of every twin response the flooding device gets, until it closes."""
    with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
        while True:
            topic, _ = await raw.next_publish(timeout=60)
            if topic.startswith(RESPONSES):
                replies[topic.partition("?$rid=")[2].partition("&")[0]] = int(topic[len(RESPONSES) :].partition("/")[0])


async def test_twin_get_flood_is_answered_or_throttled_and_stalls_nobody(
    hub: Hub, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hub")
    assert hub.endpoints is not None
    flooder, other = await create_device(api), await create_device(api)
    await api.patch(f"/twins/{other.device_id}", json={"properties": {"desired": {"fan": "on"}}})
    replies: dict[str, int] = {}
    async with raw_client(hub.endpoints.mqtt_port) as raw, mqtt_client(hub, other) as calm:
        user = f"localhost/{flooder.device_id}/?api-version=2021-04-12"
        assert await raw.connect(flooder.device_id, flooder.token(), user=user, clean=False) == (0, 0)
        assert await raw.subscribe(f"{RESPONSES}#") == [1]
        await calm.subscribe(f"{RESPONSES}#")
        reading = asyncio.create_task(_flood_replies(raw, replies))
        try:
            # As fast as a client can: the hub runs in this event loop, and publish() does not
            # yield while the socket takes the bytes, so all of them are sent before it reads one.
            for index in range(FLOOD):
                await raw.publish(f"$iothub/twin/GET/?$rid=f{index}")
            # Meanwhile another device's twin GET and a REST call complete (5 s is a liveness
            # bound for what takes milliseconds).
            for attempt in range(3):
                async with asyncio.timeout(5):
                    await calm.publish(f"$iothub/twin/GET/?$rid=c{attempt}", b"")
                    reply = await _reply(calm, f"c{attempt}")
                    assert _status(reply) == 200
                    assert body(reply) == {"desired": {"fan": "on", "$version": 2}, "reported": {"$version": 1}}
                    assert (await api.get(f"/twins/{other.device_id}")).status_code == 200
            # Every GET of the flood gets an answer: the twin, or 429 past the in-flight cap.
            async with asyncio.timeout(30):
                while len(replies) < FLOOD and not reading.done():
                    await asyncio.sleep(0.05)
            assert set(replies) == {f"f{index}" for index in range(FLOOD)}, f"{len(replies)} answered"
            assert set(replies.values()) <= {200, 429}, set(replies.values())
            # The flooding device's connection is healthy afterwards: its next GET gets the twin.
            await raw.publish("$iothub/twin/GET/?$rid=after")
            async with asyncio.timeout(5):
                while "after" not in replies:
                    assert not reading.done(), "the flooding device was disconnected"
                    await asyncio.sleep(0.01)
            assert replies["after"] == 200
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
    assert hub.services is not None
    assert hub.services.twins._gets_in_flight == {}  # every read finished and was counted out
    if 429 in replies.values():  # the flood outran the reads (usual, but it depends on speeds)
        messages = [record.getMessage() for record in caplog.records]
        assert any(f"device {flooder.device_id} has 32 twin GETs in flight" in message for message in messages)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


# -- unknown topics and malformed request ids ----------------------------------------------

DROPPED_TOPICS = [
    "$iothub/unknown/?$rid=u1",
    "$iothub/twin/GET",
    "$iothub/twin/GET/",
    "$iothub/twin/GET/?rid=u2",
    "$iothub/twin/GET/?$rid=",
    "$iothub/twin/GET/?$RID=u3",
    "$iothub/twin/GET/?$rid=%ff",
    "$iothub/twin/GET/?$rid=%C3",
    "$iothub/twin/GET/?$rid=u4&$rid=u5",
    f"{REPORTED}",
    f"{REPORTED}?$version=3",
    f"{REPORTED}?$rid=%80",
    f"{REPORTED}?$rid=u6&$rid=u7",
    "$iothub/twin/PATCH/properties/desired/?$version=1",
    "$iothub/twin/res/200/?$rid=u8",
    "$iothub/methods/POST/reboot/?$rid=u9",
    "$iothub/methods/res/abc/?$rid=u10",
    "$iothub/methods/res/200",
    "$iothub/methods/res/200/?$rid=%fe",
    "$iothub/methods/res/200/?$rid=no-such-call",  # well formed, but answers no call
]


async def test_unknown_iothub_topics_and_bad_rids_are_dropped_and_the_connection_keeps_working(
    hub: Hub, api: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hub.engine")
    creds = await create_device(api)
    before = await _twin(api, creds.device_id)
    async with mqtt_client(hub, creds) as client:
        await client.subscribe(f"{RESPONSES}#")
        for index, topic in enumerate(DROPPED_TOPICS):
            await client.publish(topic, _json({"bad": index}), qos=1)
        # Messages of one connection are handled in order: had any of the above been
        # answered, that answer would come before this one.
        await client.publish("$iothub/twin/GET/?$rid=get", b"")
        reply = await _reply(client, "get")
        assert _status(reply) == 200
        assert body(reply) == {"desired": {"$version": 1}, "reported": {"$version": 1}}
        with pytest.raises(TimeoutError):
            await next_message(client, RESPONSES, timeout=0.5)
    assert _stable(await _twin(api, creds.device_id)) == _stable(before)
    dropped = [record.getMessage() for record in caplog.records if "dropped" in record.getMessage()]
    assert len(dropped) == len(DROPPED_TOPICS), dropped
    assert any("not percent-encoded UTF-8" in message for message in dropped)
    assert any("more than once" in message for message in dropped)
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]
