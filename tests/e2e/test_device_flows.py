"""The device side through real sockets: login, direct methods, twin GET/PATCH, desired pushes."""

from __future__ import annotations

import asyncio
import json

import aiomqtt
import httpx
import pytest

from hub.runtime import Hub
from tests.e2e.conftest import body, create_device, mqtt_client, next_message


async def _wait_connected(api: httpx.AsyncClient, device_id: str, state: str = "Connected") -> None:
    async with asyncio.timeout(10):
        while (await api.get(f"/twins/{device_id}")).json()["connectionState"] != state:
            await asyncio.sleep(0.05)


async def test_sas_login_accepted_and_presence_recorded(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    async with mqtt_client(hub, creds):
        await _wait_connected(api, creds.device_id)
        twin = (await api.get(f"/twins/{creds.device_id}")).json()
        assert twin["lastActivityTime"] is not None
    await _wait_connected(api, creds.device_id, "Disconnected")


async def test_secondary_key_login_accepted(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    async with mqtt_client(hub, creds, password=creds.token(key=creds.secondary_key)):
        await _wait_connected(api, creds.device_id)


@pytest.mark.parametrize("kind", ["wrong-key", "expired", "malformed", "foreign-device", "empty"])
async def test_bad_tokens_refused_with_connack_5(hub: Hub, api: httpx.AsyncClient, kind: str) -> None:
    creds = await create_device(api)
    other = await create_device(api)
    password = {
        "wrong-key": creds.token(key=other.primary_key),
        "expired": creds.token(ttl=-10),
        "malformed": "SharedAccessSignature sr=nope",
        "foreign-device": other.token(),
        "empty": "",
    }[kind]
    with pytest.raises(aiomqtt.MqttCodeError) as info:
        async with mqtt_client(hub, creds, password=password):
            pass
    assert str(info.value.rc) == "Not authorized"  # CONNACK return code 5


async def test_disabled_device_cannot_connect(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    device = (await api.get(f"/devices/{creds.device_id}")).json()
    response = await api.put(
        f"/devices/{creds.device_id}",
        headers={"If-Match": device["etag"]},
        json={"deviceId": creds.device_id, "status": "disabled"},
    )
    assert response.status_code == 200, response.text
    with pytest.raises(aiomqtt.MqttCodeError):
        async with mqtt_client(hub, creds):
            pass


async def _answer_methods(client: aiomqtt.Client, seen: list[tuple[str, object]]) -> None:
    async for message in client.messages:
        topic = str(message.topic)
        if topic.startswith("$iothub/methods/POST/"):
            name = topic.split("/")[3]
            rid = topic.split("$rid=")[1]
            seen.append((name, body(message)))
            reply = {"locked": True, "echo": body(message)}
            await client.publish(f"$iothub/methods/res/200/?$rid={rid}", json.dumps(reply))


async def test_method_round_trip_with_payload(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    seen: list[tuple[str, object]] = []
    async with mqtt_client(hub, creds) as client:
        await client.subscribe("$iothub/methods/POST/#")
        answering = asyncio.create_task(_answer_methods(client, seen))
        try:
            response = await api.post(
                f"/twins/{creds.device_id}/methods",
                json={"methodName": "lockDoor", "payload": {"door": "front", "n": 3}, "responseTimeoutInSeconds": 10},
            )
        finally:
            answering.cancel()
    assert response.status_code == 200, response.text
    assert response.json() == {"status": 200, "payload": {"locked": True, "echo": {"door": "front", "n": 3}}}
    assert seen == [("lockDoor", {"door": "front", "n": 3})]


async def test_many_calls_in_flight_to_one_device(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    seen: list[tuple[str, object]] = []
    async with mqtt_client(hub, creds) as client:
        await client.subscribe("$iothub/methods/POST/#")
        answering = asyncio.create_task(_answer_methods(client, seen))
        try:
            responses = await asyncio.gather(
                *[
                    api.post(f"/twins/{creds.device_id}/methods", json={"methodName": "count", "payload": i})
                    for i in range(20)
                ]
            )
        finally:
            answering.cancel()
    assert sorted(r.json()["payload"]["echo"] for r in responses) == list(range(20))


async def test_offline_device_is_404_device_not_online(api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    response = await api.post(f"/twins/{creds.device_id}/methods", json={"methodName": "lockDoor"})
    assert response.status_code == 404
    assert response.headers["iothub-errorcode"] == "DeviceNotOnline"
    assert response.json()["Message"].startswith("ErrorCode:DeviceNotOnline;")


async def test_unknown_device_is_404_device_not_found(api: httpx.AsyncClient) -> None:
    response = await api.post("/twins/no-such-device/methods", json={"methodName": "lockDoor"})
    assert response.status_code == 404
    assert response.headers["iothub-errorcode"] == "DeviceNotFound"


async def test_connect_timeout_waits_for_device(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    seen: list[tuple[str, object]] = []
    call = asyncio.create_task(
        api.post(f"/twins/{creds.device_id}/methods", json={"methodName": "lockDoor", "connectTimeoutInSeconds": 20})
    )
    await asyncio.sleep(0.3)
    assert not call.done()
    async with mqtt_client(hub, creds) as client:
        answering = asyncio.create_task(_answer_methods(client, seen))
        try:
            response = await call
        finally:
            answering.cancel()
    assert response.status_code == 200, response.text
    assert seen == [("lockDoor", None)]


async def test_no_reply_is_504_gateway_timeout(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    async with mqtt_client(hub, creds):
        response = await api.post(
            f"/twins/{creds.device_id}/methods", json={"methodName": "lockDoor", "responseTimeoutInSeconds": 5}
        )
    assert response.status_code == 504
    assert response.headers["iothub-errorcode"] == "GatewayTimeout"


async def test_second_device_never_sees_first_devices_method(hub: Hub, api: httpx.AsyncClient) -> None:
    first, second = await create_device(api), await create_device(api)
    seen: list[tuple[str, object]] = []
    async with mqtt_client(hub, first) as one, mqtt_client(hub, second) as two:
        await one.subscribe("$iothub/methods/POST/#")
        await two.subscribe("$iothub/methods/POST/#")
        answering = asyncio.create_task(_answer_methods(one, seen))
        try:
            response = await api.post(
                f"/twins/{first.device_id}/methods", json={"methodName": "lockDoor", "payload": "secret"}
            )
            assert response.status_code == 200
            with pytest.raises(TimeoutError):
                await next_message(two, "$iothub/", timeout=1.0)
        finally:
            answering.cancel()
    assert seen == [("lockDoor", "secret")]


async def test_twin_get_and_reported_patch(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    await api.patch(f"/twins/{creds.device_id}", json={"properties": {"desired": {"fan": "on"}}})
    async with mqtt_client(hub, creds) as client:
        await client.subscribe("$iothub/twin/res/#")
        await client.publish("$iothub/twin/GET/?$rid=get-1", b"")
        reply = await next_message(client, "$iothub/twin/res/")
        assert str(reply.topic).startswith("$iothub/twin/res/200/?$rid=get-1")
        doc = body(reply)
        assert isinstance(doc, dict)
        assert doc["desired"]["fan"] == "on"
        assert doc["desired"]["$version"] == 2
        assert doc["reported"] == {"$version": 1}

        await client.publish(
            "$iothub/twin/PATCH/properties/reported/?$rid=p-1",
            json.dumps({"firmware": "2.0", "battery": {"level": 97}}),
        )
        reply = await next_message(client, "$iothub/twin/res/")
        assert str(reply.topic) == "$iothub/twin/res/204/?$rid=p-1&$version=2"

        # The connection keeps working after $iothub publishes (amqtt's own broker would stall here).
        await client.publish("$iothub/twin/PATCH/properties/reported/?$rid=p-2", b"not json")
        reply = await next_message(client, "$iothub/twin/res/")
        assert str(reply.topic).startswith("$iothub/twin/res/400/?$rid=p-2")

    twin = (await api.get(f"/twins/{creds.device_id}")).json()
    reported = twin["properties"]["reported"]
    assert reported["firmware"] == "2.0"
    assert reported["battery"] == {"level": 97}
    assert reported["$version"] == 2
    assert "$lastUpdated" in reported["$metadata"]["battery"]["level"]


async def test_desired_patch_reaches_device_with_version(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    async with mqtt_client(hub, creds) as client:
        await client.subscribe("$iothub/twin/PATCH/properties/desired/#")
        await _wait_connected(api, creds.device_id)
        response = await api.patch(
            f"/twins/{creds.device_id}", json={"properties": {"desired": {"building": "43", "floor": 3}}}
        )
        assert response.status_code == 200
        message = await next_message(client, "$iothub/twin/PATCH/properties/desired/")
    assert str(message.topic) == "$iothub/twin/PATCH/properties/desired/?$version=2"
    assert body(message) == {"building": "43", "floor": 3, "$version": 2}


async def test_delivery_without_resubscribe_after_reconnect(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    async with mqtt_client(hub, creds) as client:
        await client.subscribe("$iothub/methods/POST/#")
    seen: list[tuple[str, object]] = []
    async with mqtt_client(hub, creds) as client:  # no subscribe this time, like the Python SDK after a restart
        answering = asyncio.create_task(_answer_methods(client, seen))
        try:
            response = await api.post(f"/twins/{creds.device_id}/methods", json={"methodName": "reboot"})
        finally:
            answering.cancel()
    assert response.status_code == 200
    assert seen == [("reboot", None)]


async def test_over_limit_reported_patch_is_400_and_connection_stays(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    async with mqtt_client(hub, creds) as client:
        await client.subscribe("$iothub/twin/res/#")
        huge = {f"k{i}": "v" * 4000 for i in range(9)}  # 36 KB of reported properties, over the 32 KB limit
        await client.publish("$iothub/twin/PATCH/properties/reported/?$rid=big", json.dumps(huge))
        reply = await next_message(client, "$iothub/twin/res/")
        assert str(reply.topic).startswith("$iothub/twin/res/400/?$rid=big")
        await client.publish("$iothub/twin/PATCH/properties/reported/?$rid=ok", json.dumps({"fine": True}))
        reply = await next_message(client, "$iothub/twin/res/")
        assert str(reply.topic) == "$iothub/twin/res/204/?$rid=ok&$version=2"
    reported = (await api.get(f"/twins/{creds.device_id}")).json()["properties"]["reported"]
    assert "k0" not in reported
    assert reported["fine"] is True


async def test_oversized_method_reply_fails_the_call(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api)
    async with mqtt_client(hub, creds) as client:

        async def answer_big() -> None:
            message = await next_message(client, "$iothub/methods/POST/")
            rid = str(message.topic).split("$rid=")[1]
            await client.publish(f"$iothub/methods/res/200/?$rid={rid}", json.dumps({"blob": "x" * (130 * 1024)}))

        answering = asyncio.create_task(answer_big())
        response = await api.post(f"/twins/{creds.device_id}/methods", json={"methodName": "dump"})
        await answering
        assert response.status_code == 502
        assert response.headers["iothub-errorcode"] == "InvalidDeviceReply"
        # The device stays connected and usable.
        assert (await api.get(f"/twins/{creds.device_id}")).json()["connectionState"] == "Connected"


async def test_device_id_with_wildcard_characters_gets_methods(hub: Hub, api: httpx.AsyncClient) -> None:
    creds = await create_device(api, "door#1+a")
    seen: list[tuple[str, object]] = []
    async with mqtt_client(hub, creds) as client:
        await client.subscribe("$iothub/methods/POST/#")
        answering = asyncio.create_task(_answer_methods(client, seen))
        try:
            response = await api.post("/twins/door%231%2Ba/methods", json={"methodName": "lockDoor"})
        finally:
            answering.cancel()
    assert response.status_code == 200, response.text
    assert seen == [("lockDoor", None)]
