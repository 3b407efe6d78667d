"""Device security on a real hub: logins, keepalive, re-keying, scoping, login cost, limits, method replies.

Every device here speaks MQTT over real sockets to an in-process hub (SQLite); the raw client
from the gateway tests sends exact CONNECT/PUBLISH bytes where a library would get in the way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiomqtt
import httpx
import pytest

from hub.engine.sessions import auth as device_auth
from hub.runtime import Hub
from hub.wire.sas import SasToken, device_resource_uri, generate_sas_token, signature_matches
from tests.e2e.conftest import (
    DeviceCreds,
    create_device,
    hub_settings,
    mqtt_client,
    next_message,
    service_token,
    wait_for_state,
)
from tests.integration.gateway.gateway_support import RawClient, raw_client

NOT_AUTHORIZED = 5
SUBACK_FAILURE = 0x80
METHOD_PREFIX = "$iothub/methods/POST/"

Reply = Callable[[str, bytes], tuple[int, bytes]]


def _echo(name: str, payload: bytes) -> tuple[int, bytes]:
    return 200, json.dumps({"method": name, "echo": json.loads(payload) if payload else None}).encode()


def _rid(topic: str) -> str:
    return topic.split("$rid=", 1)[1]


@contextlib.asynccontextmanager
async def answering(client: aiomqtt.Client, reply: Reply = _echo) -> AsyncIterator[list[str]]:
    """Answer every method request ``client`` receives; yields the method names seen so far."""
    seen: list[str] = []

    async def serve() -> None:
        async for message in client.messages:
            topic = str(message.topic)
            if topic.startswith(METHOD_PREFIX):
                name = topic[len(METHOD_PREFIX) :].split("/", 1)[0]
                seen.append(name)
                payload = message.payload
                assert isinstance(payload, bytes)
                status, body = reply(name, payload)
                await client.publish(f"$iothub/methods/res/{status}/?$rid={_rid(topic)}", body)

    task = asyncio.create_task(serve())
    try:
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def call(
    api: httpx.AsyncClient, device_id: str, method: str = "ping", payload: object = None, timeout: int = 30
) -> httpx.Response:
    return await api.post(
        f"/twins/{quote(device_id, safe='')}/methods",
        json={"methodName": method, "payload": payload, "responseTimeoutInSeconds": timeout},
    )


def mqtt_port(hub: Hub) -> int:
    assert hub.endpoints is not None
    return hub.endpoints.mqtt_port


async def assert_device_answers(api: httpx.AsyncClient, device_id: str, marker: str) -> None:
    response = await call(api, device_id, "check", {"marker": marker})
    assert response.status_code == 200, response.text
    assert response.json() == {"status": 200, "payload": {"method": "check", "echo": {"marker": marker}}}


async def log_in_raw(hub: Hub, client_id: str, password: str, *, user: str | None = None) -> int:
    """A raw CONNECT; the CONNACK return code (the socket is closed afterwards)."""
    async with raw_client(mqtt_port(hub)) as client:
        _, code = await client.connect(client_id, password, user=user)
        if code:
            await client.wait_closed()
        return code


# -- 1. refused logins never disturb the live device -----------------------------------------------


def _bad_login(kind: str, creds: DeviceCreds, other: DeviceCreds) -> tuple[str, str | None]:
    """(password, username or None for the usual one) of each kind of bad login for ``creds``."""
    match kind:
        case "wrong-key":
            return creds.token(key=other.primary_key), None
        case "expired":
            return creds.token(ttl=-10), None
        case "lifetime-too-long":
            return creds.token(ttl=2 * 365 * 24 * 3600), None
        case "malformed":
            return "SharedAccessSignature sr=nope&sig=&se=x", None
        case "not-a-token":
            return "hunter2", None
        case "oversized":
            return creds.token() + "A" * 60_000, None
        case "another-devices-token":
            return other.token(), None
        case "another-hubs-hostname":
            return creds.token(hostname="other-hub.example.net"), None
        case "username-names-another-device":
            return creds.token(), f"localhost/{other.device_id}/?api-version=2021-04-12"
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "wrong-key",
        "expired",
        "lifetime-too-long",
        "malformed",
        "not-a-token",
        "oversized",
        "another-devices-token",
        "another-hubs-hostname",
        "username-names-another-device",
    ],
)
async def test_a_bad_login_gets_connack_5_and_the_live_device_keeps_working(
    hub: Hub, api: httpx.AsyncClient, kind: str
) -> None:
    creds, other = await create_device(api), await create_device(api)
    password, user = _bad_login(kind, creds, other)
    async with mqtt_client(hub, creds) as device, answering(device):
        await device.subscribe("$iothub/methods/POST/#")
        await wait_for_state(api, creds.device_id)
        assert await log_in_raw(hub, creds.device_id, password, user=user) == NOT_AUTHORIZED
        # The same aiomqtt connection (it never reconnects by itself) still answers.
        await assert_device_answers(api, creds.device_id, kind)
        assert (await api.get(f"/twins/{creds.device_id}")).json()["connectionState"] == "Connected"


# -- 2. keepalive --------------------------------------------------------------------------------------


async def test_a_silent_device_is_dropped_and_a_pending_call_fails_at_once(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    async with raw_client(mqtt_port(hub)) as device:
        assert await device.connect(creds.device_id, creds.token(), keepalive=1) == (0, 0)
        await wait_for_state(api, creds.device_id)
        started = time.monotonic()
        pending = asyncio.create_task(call(api, creds.device_id, "lockDoor", timeout=120))
        topic, _ = await device.next_publish()  # the request arrives; the device never answers nor pings
        assert topic.startswith(f"{METHOD_PREFIX}lockDoor/")
        await device.wait_closed(timeout=10)  # 1.5 s of silence is the rule; 10 s is the test's bound
        async with asyncio.timeout(30):  # far below the call's own 120 s
            response = await pending
    assert response.status_code == 404, response.text
    assert response.headers["iothub-errorcode"] == "DeviceNotOnline"
    assert time.monotonic() - started < 60  # a generous bound, half the response timeout
    await wait_for_state(api, creds.device_id, "Disconnected", timeout=10)


# -- 3. disable, delete, re-key --------------------------------------------------------------------


async def _change_registry(api: httpx.AsyncClient, device_id: str, change: str) -> None:
    path = f"/devices/{quote(device_id, safe='')}"
    etag = (await api.get(path)).json()["etag"]
    if change == "delete":
        response = await api.delete(path, headers={"If-Match": etag})
    elif change == "bulk-delete":
        response = await api.post("/devices", json=[{"id": device_id, "importMode": "delete"}])
    else:
        spec: dict[str, Any] = {"deviceId": device_id}
        if change == "disable":
            spec["status"] = "disabled"
        else:
            new_keys = {"primaryKey": "Q" * 43 + "=", "secondaryKey": "R" * 43 + "="}
            spec["authentication"] = {"symmetricKey": new_keys}
        response = await api.put(path, headers={"If-Match": etag}, json=spec)
    assert response.status_code in (200, 204), response.text


@pytest.mark.parametrize("change", ["disable", "delete", "bulk-delete", "rekey"])
async def test_a_registry_change_drops_the_live_connection_and_old_tokens_stop_working(
    hub: Hub, api: httpx.AsyncClient, change: str
) -> None:
    creds = await create_device(api)
    old_tokens = [creds.token(), creds.token(key=creds.secondary_key)]
    async with raw_client(mqtt_port(hub)) as device:
        assert await device.connect(creds.device_id, old_tokens[0]) == (0, 0)
        await wait_for_state(api, creds.device_id)
        await _change_registry(api, creds.device_id, change)
        await device.wait_closed(timeout=5)  # IoT Hub: within a second; 5 s is the test's bound
    for token in old_tokens:
        assert await log_in_raw(hub, creds.device_id, token) == NOT_AUTHORIZED
    if change == "rekey":
        await wait_for_state(api, creds.device_id, "Disconnected", timeout=5)
        new_token = generate_sas_token(device_resource_uri("localhost", creds.device_id), "Q" * 43 + "=")
        assert await log_in_raw(hub, creds.device_id, new_token) == 0
    elif change == "disable":
        await wait_for_state(api, creds.device_id, "Disconnected", timeout=5)


# -- 4. scoping ------------------------------------------------------------------------------------


async def test_a_device_can_neither_see_nor_touch_another_devices_traffic(hub: Hub, api: httpx.AsyncClient) -> None:
    victim, intruder = await create_device(api), await create_device(api)
    vid = victim.device_id
    async with mqtt_client(hub, victim) as device, raw_client(mqtt_port(hub)) as rogue:
        assert await rogue.connect(intruder.device_id, intruder.token()) == (0, 0)
        refused = [
            "#",
            "+/#",
            "+/+/messages/devicebound/#",
            "devices/#",
            "devices/+/messages/devicebound/#",
            f"devices/{vid}/#",
            f"devices/{vid}/messages/devicebound/#",
            f"devices/{vid}/messages/events/#",
            "$iothub/#",
            "$iothub/+/#",
            "$iothub/methods/#",
            "$iothub/twin/#",
            "$iothub/+/POST/#",
            "$SYS/#",
        ]
        assert await rogue.subscribe(*refused) == [SUBACK_FAILURE] * len(refused)
        allowed = ["$iothub/methods/POST/#", "$iothub/twin/res/#", "$iothub/twin/PATCH/properties/desired/#"]
        assert await rogue.subscribe(*allowed) == [1, 1, 1]

        # Traffic of the victim: a method call, a desired patch, a twin GET reply.
        await device.subscribe("$iothub/twin/res/#")
        await device.subscribe("$iothub/twin/PATCH/properties/desired/#")
        pending = asyncio.create_task(call(api, vid, "unlock", {"pin": 1234}))
        request = await next_message(device, METHOD_PREFIX)
        rid = _rid(str(request.topic))
        # The intruder answers the victim's request id and publishes into the victim's topics.
        await rogue.publish(f"$iothub/methods/res/200/?$rid={rid}", b'{"hijacked": true}', qos=1)
        await rogue.publish(f"devices/{vid}/messages/devicebound/x", b"spoofed", qos=1)
        await rogue.publish(f"devices/{vid}/messages/events/", b"spoofed", qos=1)
        await rogue.publish("$iothub/twin/PATCH/properties/reported/?$rid=r1", b'{"owner": "intruder"}', qos=1)
        await asyncio.sleep(0.5)
        assert not pending.done()  # the intruder's reply is no answer to the victim's call
        await device.publish(f"$iothub/methods/res/201/?$rid={rid}", b'{"genuine": true}')
        response = await pending
        assert response.json() == {"status": 201, "payload": {"genuine": True}}

        patched = await api.patch(f"/twins/{vid}", json={"properties": {"desired": {"secret": "s3"}}})
        assert patched.status_code == 200
        assert (await next_message(device, "$iothub/twin/PATCH/properties/desired/")).payload
        await device.publish("$iothub/twin/GET/?$rid=victim-get", b"")
        assert str((await next_message(device, "$iothub/twin/res/")).topic).startswith("$iothub/twin/res/200/")

        # The intruder got only the answer to its own reported patch, then nothing of the victim's.
        topic, _ = await rogue.next_publish()
        assert topic.startswith("$iothub/twin/res/204/?$rid=r1")
        with pytest.raises(TimeoutError):
            await rogue.next_publish(timeout=1.0)
        with pytest.raises(TimeoutError):  # nor did the victim receive the spoofed publish
            await next_message(device, "devices/", timeout=0.5)

    twin = (await api.get(f"/twins/{vid}")).json()
    assert "owner" not in twin["properties"]["reported"]
    assert (await api.get(f"/twins/{intruder.device_id}")).json()["properties"]["reported"]["owner"] == "intruder"


# -- 5. login cost -----------------------------------------------------------------------------------


async def test_each_distinct_token_is_verified_once(
    hub: Hub, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds, other = await create_device(api), await create_device(api)
    checked: list[str] = []  # one entry per signature check the authenticator asks for

    def counting_check(token: SasToken, *keys: str) -> bool:
        checked.append(token.raw_resource)
        return signature_matches(token, *keys)

    monkeypatch.setattr(device_auth, "signature_matches", counting_check)
    wrong = creds.token(key=other.primary_key)
    assert await log_in_raw(hub, creds.device_id, wrong) == NOT_AUTHORIZED
    first = len(checked)
    assert first >= 1
    for _ in range(20):
        assert await log_in_raw(hub, creds.device_id, wrong) == NOT_AUTHORIZED
    assert len(checked) == first  # the refusal came from the cache
    good = creds.token()
    for _ in range(5):
        async with raw_client(mqtt_port(hub)) as device:
            assert await device.connect(creds.device_id, good) == (0, 0)
    second = len(checked)
    assert first < second <= 2 * first  # verified on the first login only
    # A token far longer than any real one is refused before any database read or HMAC.
    oversized = wrong.replace("&sig=", "&sig=" + "A" * 60_000, 1)
    assert await log_in_raw(hub, creds.device_id, oversized) == NOT_AUTHORIZED
    assert len(checked) == second


async def _bad_login_burst(port: int, device_id: str, tokens: list[str]) -> list[int]:
    async def one(token: str) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            _, code = await RawClient(reader, writer).connect(device_id, token)
            return code
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    return await asyncio.gather(*(one(token) for token in tokens))


async def test_a_burst_of_failed_logins_leaves_the_device_and_its_method_calls_working(
    hub: Hub, api: httpx.AsyncClient
) -> None:
    creds, other = await create_device(api), await create_device(api)
    # 1,000 distinct tokens for the live device's own id, each signed with a wrong key: the
    # most expensive refusal (a database read and the HMACs, nothing cached).
    tokens = [creds.token(key=other.primary_key, ttl=3600 + i) for i in range(1000)]
    async with mqtt_client(hub, creds) as device, answering(device) as seen:
        await device.subscribe("$iothub/methods/POST/#")
        await wait_for_state(api, creds.device_id)
        burst = asyncio.create_task(_bad_login_burst(mqtt_port(hub), creds.device_id, tokens))
        during_burst = 0
        statuses: list[int] = []
        async with asyncio.timeout(120):
            while not burst.done():
                response = await call(api, creds.device_id, "during", None, timeout=10)
                statuses.append(response.status_code)
                if not burst.done():
                    during_burst += 1
            codes = await burst
        assert codes == [NOT_AUTHORIZED] * len(tokens)
        assert during_burst >= 1
        assert statuses == [200] * len(statuses), statuses
        await assert_device_answers(api, creds.device_id, "after the burst")
        assert len(seen) == len(statuses) + 1


# -- 6. the per-device cap on calls in flight -----------------------------------------------------


async def test_calls_beyond_the_per_device_cap_get_429_and_the_hub_stays_healthy(
    hub: Hub, api: httpx.AsyncClient
) -> None:
    cap = 64  # MethodService's default
    creds = await create_device(api)
    async with raw_client(mqtt_port(hub)) as device:
        assert await device.connect(creds.device_id, creds.token()) == (0, 0)
        await wait_for_state(api, creds.device_id)
        calls = [asyncio.create_task(call(api, creds.device_id, "hold", i, timeout=120)) for i in range(cap)]
        requests = [await device.next_publish(timeout=30) for _ in range(cap)]
        over = await call(api, creds.device_id, "one-too-many")
        assert over.status_code == 429, over.text
        assert over.headers["iothub-errorcode"] == "ThrottlingException"
        assert over.json()["Message"].startswith("ErrorCode:ThrottlingException;")
        for topic, payload in requests:
            await device.publish(f"$iothub/methods/res/200/?$rid={_rid(topic)}", payload)
        responses = await asyncio.gather(*calls)
        assert sorted(r.json()["payload"] for r in responses) == list(range(cap))
        # Back under the cap: the next call goes through.
        again = asyncio.create_task(call(api, creds.device_id, "again", "x"))
        topic, payload = await device.next_publish()
        await device.publish(f"$iothub/methods/res/200/?$rid={_rid(topic)}", payload)
        assert (await again).json() == {"status": 200, "payload": "x"}
    assert (await api.get("/healthz")).status_code == 200


# -- 7. what devices send back as method replies -------------------------------------------------

BAD_REPLIES = {
    "not-json": b"{not json",
    "invalid-utf8": b'{"text": "\xff\xfe"}',
    "nan": b'{"value": NaN}',
    "infinite-number": b'{"value": 1e400}',
    "overlong-integer": b"1" * 5000,
    "over-128-kb": json.dumps({"blob": "x" * (130 * 1024)}).encode(),
}


@pytest.mark.parametrize("kind", sorted(BAD_REPLIES))
async def test_a_bad_method_reply_fails_the_call_clearly_and_the_connection_stays(
    hub: Hub, api: httpx.AsyncClient, kind: str
) -> None:
    creds = await create_device(api)
    bad = BAD_REPLIES[kind]

    def reply(name: str, payload: bytes) -> tuple[int, bytes]:
        return (200, bad) if name == "bad" else _echo(name, payload)

    async with mqtt_client(hub, creds) as device, answering(device, reply):
        await device.subscribe("$iothub/methods/POST/#")
        async with asyncio.timeout(20):  # at once, not after the call's 120 s
            response = await call(api, creds.device_id, "bad", timeout=120)
        assert response.status_code == 502, response.text
        assert response.headers["iothub-errorcode"] == "InvalidDeviceReply"
        await assert_device_answers(api, creds.device_id, kind)


async def test_replies_for_unknown_or_expired_request_ids_are_dropped(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    async with raw_client(mqtt_port(hub)) as device:
        assert await device.connect(creds.device_id, creds.token()) == (0, 0)
        await wait_for_state(api, creds.device_id)
        for rid in ("1", "ffffffff", "not-a-rid", "x" * 1000):
            await device.publish(f"$iothub/methods/res/200/?$rid={rid}", b'{"unasked": true}', qos=1)
        # A device's messages are handled in order: once this reply is back, those are too.
        await device.publish("$iothub/twin/GET/?$rid=after-unasked")
        assert (await device.next_publish())[0].startswith("$iothub/twin/res/200/?$rid=after-unasked")

        expired = await call(api, creds.device_id, "slow", timeout=5)
        assert expired.status_code == 504
        late_topic, _ = await device.next_publish()
        await device.publish(f"$iothub/methods/res/200/?$rid={_rid(late_topic)}", b'{"late": true}', qos=1)

        # The connection is up and the next call gets its own answer, not the late one.
        pending = asyncio.create_task(call(api, creds.device_id, "next"))
        topic, _ = await device.next_publish()
        assert topic.startswith(f"{METHOD_PREFIX}next/")
        await device.publish(f"$iothub/methods/res/200/?$rid={_rid(topic)}", b'{"mine": true}', qos=1)
        assert (await pending).json() == {"status": 200, "payload": {"mine": True}}
        assert (await api.get(f"/twins/{creds.device_id}")).json()["connectionState"] == "Connected"


async def test_a_reply_from_before_a_hub_restart_does_not_answer_a_new_call(tmp_path: Path) -> None:
    # paho (the Python SDK) re-sends unacknowledged QoS 1 publishes when it reconnects, so a
    # reply to a call of the previous hub process can arrive while a new call is pending.
    settings = hub_settings(tmp_path / "data")
    async with Hub(settings) as first, _api_client(first) as api:
        creds = await create_device(api)
        async with raw_client(mqtt_port(first)) as device:
            assert await device.connect(creds.device_id, creds.token()) == (0, 0)
            await wait_for_state(api, creds.device_id)
            pending = asyncio.create_task(call(api, creds.device_id, "first"))
            old_topic, _ = await device.next_publish()
            await device.publish(f"$iothub/methods/res/200/?$rid={_rid(old_topic)}", b'"first"', qos=1)
            assert (await pending).json() == {"status": 200, "payload": "first"}
    async with Hub(settings) as second, _api_client(second) as api, raw_client(mqtt_port(second)) as device:
        assert await device.connect(creds.device_id, creds.token()) == (0, 0)
        await wait_for_state(api, creds.device_id)
        pending = asyncio.create_task(call(api, creds.device_id, "second"))
        topic, _ = await device.next_publish()
        assert topic.startswith(f"{METHOD_PREFIX}second/")
        await device.publish(f"$iothub/methods/res/200/?$rid={_rid(old_topic)}", b'"stale"', qos=1)
        await device.publish(f"$iothub/methods/res/200/?$rid={_rid(topic)}", b'"second"', qos=1)
        assert (await pending).json() == {"status": 200, "payload": "second"}


@contextlib.asynccontextmanager
async def _api_client(running: Hub) -> AsyncIterator[httpx.AsyncClient]:
    assert running.endpoints is not None
    headers = {"Authorization": service_token(running)}
    async with httpx.AsyncClient(base_url=running.endpoints.http_url, timeout=30, headers=headers) as client:
        yield client
