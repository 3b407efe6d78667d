"""A burst of reported patches from many connected devices at once (the acknowledgements of a
twin update job): every device gets its own 204 with its own ``$version``, through the
hub's group commit of reported patches."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import pytest

from hub.runtime import Hub
from tests.e2e.conftest import DeviceCreds, create_device, mqtt_client, next_message

DEVICES = 200

pytestmark = pytest.mark.timeout(120)


async def test_concurrent_reported_patches_all_answered_with_their_versions(hub: Hub, api: httpx.AsyncClient) -> None:
    assert hub.services is not None
    assert hub.services.twins._reported.is_running  # the group commit is on
    creds: list[DeviceCreds] = list(
        await asyncio.gather(*(create_device(api, f"burst-{index:03d}") for index in range(DEVICES)))
    )

    async with contextlib.AsyncExitStack() as stack:
        clients = list(await asyncio.gather(*(stack.enter_async_context(mqtt_client(hub, device)) for device in creds)))
        await asyncio.gather(*(client.subscribe("$iothub/twin/res/#") for client in clients))
        # Each device first reports once on its own, then all report together: versions 2, then 3.
        await asyncio.gather(
            *(
                client.publish("$iothub/twin/PATCH/properties/reported/?$rid=first", json.dumps({"boot": index}))
                for index, client in enumerate(clients)
            )
        )
        firsts = await asyncio.gather(*(next_message(client, "$iothub/twin/res/", timeout=60) for client in clients))
        assert {str(reply.topic) for reply in firsts} == {"$iothub/twin/res/204/?$rid=first&$version=2"}

        start = asyncio.Event()

        async def acknowledge(index: int) -> str:
            client = clients[index]
            await start.wait()
            body = json.dumps({"ack": {"job": "j1", "value": index}, "firmware": "2.0"})
            await client.publish(f"$iothub/twin/PATCH/properties/reported/?$rid=ack-{index}", body)
            return str((await next_message(client, "$iothub/twin/res/", timeout=60)).topic)

        tasks = [asyncio.create_task(acknowledge(index)) for index in range(DEVICES)]
        start.set()
        replies = await asyncio.gather(*tasks)

    assert replies == [f"$iothub/twin/res/204/?$rid=ack-{index}&$version=3" for index in range(DEVICES)]
    for index in (0, DEVICES // 2, DEVICES - 1):
        response = await api.get(f"/twins/{creds[index].device_id}")
        assert response.status_code == 200, response.text
        reported = response.json()["properties"]["reported"]
        assert reported["$version"] == 3
        assert (reported["boot"], reported["ack"], reported["firmware"]) == (
            index,
            {"job": "j1", "value": index},
            "2.0",
        )
    assert hub.services is not None
    stored = await hub.services.store.get_twins([device.device_id for device in creds])
    assert [stored[device.device_id].reported.properties["ack"] for device in creds] == [
        {"job": "j1", "value": index} for index in range(DEVICES)
    ]
