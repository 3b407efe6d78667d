"""POST /devices/query through real HTTP: item types, paging, continuation tokens, errors."""

from __future__ import annotations

import httpx
import pytest

from hub.runtime import Hub
from tests.e2e.conftest import service_token


async def _make_fleet(api: httpx.AsyncClient, count: int, prefix: str = "q") -> list[str]:
    ids = [f"{prefix}-{i:03d}" for i in range(count)]
    response = await api.post("/devices", json=[{"id": d, "importMode": "create"} for d in ids])
    assert response.status_code == 200, response.text
    for i, device_id in enumerate(ids):
        patch = {"tags": {"location": {"region": "US" if i % 2 == 0 else "EU"}, "n": i}}
        assert (await api.patch(f"/twins/{device_id}", json=patch)).status_code == 200
    return ids


async def _query(
    api: httpx.AsyncClient, query: str, *, page: int | None = None, token: str | None = None
) -> httpx.Response:
    headers = {}
    if page is not None:
        headers["x-ms-max-item-count"] = str(page)
    if token is not None:
        headers["x-ms-continuation"] = token
    return await api.post("/devices/query", json={"query": query}, headers=headers)


async def _walk(api: httpx.AsyncClient, query: str, page: int) -> list[dict[str, object]]:
    items: list[dict[str, object]] = []
    token = None
    while True:
        response = await _query(api, query, page=page, token=token)
        assert response.status_code == 200, response.text
        items.extend(response.json())
        token = response.headers.get("x-ms-continuation")
        if token is None:
            return items


async def test_twin_query_returns_twins_in_device_id_order(api: httpx.AsyncClient) -> None:
    ids = await _make_fleet(api, 12)
    response = await _query(api, "SELECT * FROM devices WHERE tags.location.region = 'US'")
    assert response.status_code == 200
    assert response.headers["x-ms-item-type"] == "twin"
    assert "x-ms-continuation" not in response.headers
    twins = response.json()
    assert [t["deviceId"] for t in twins] == ids[0::2]
    assert twins[0]["tags"]["location"]["region"] == "US"
    assert twins[0]["properties"]["desired"]["$version"] == 1


async def test_paging_with_continuation_covers_everything_once(api: httpx.AsyncClient) -> None:
    ids = await _make_fleet(api, 25)
    items = await _walk(api, "SELECT * FROM devices", page=4)
    assert [t["deviceId"] for t in items] == ids


async def test_continuation_stays_correct_while_twins_change(api: httpx.AsyncClient) -> None:
    ids = await _make_fleet(api, 10)
    first = await _query(api, "SELECT * FROM devices WHERE tags.location.region = 'US'", page=2)
    token = first.headers["x-ms-continuation"]
    assert [t["deviceId"] for t in first.json()] == ["q-000", "q-002"]
    # A device already served stops matching, an unserved one starts matching, one is deleted.
    await api.patch("/twins/q-000", json={"tags": {"location": {"region": "EU"}}})
    await api.patch("/twins/q-005", json={"tags": {"location": {"region": "US"}}})
    assert (await api.delete("/devices/q-004")).status_code == 204
    rest: list[str] = []
    while token:
        response = await _query(api, "SELECT * FROM devices WHERE tags.location.region = 'US'", page=2, token=token)
        rest.extend(t["deviceId"] for t in response.json())
        token = response.headers.get("x-ms-continuation")
    assert rest == ["q-005", "q-006", "q-008"]
    assert len(ids) == 10


async def test_projection_and_aggregate_are_raw(api: httpx.AsyncClient) -> None:
    await _make_fleet(api, 6)
    projected = await _query(api, "SELECT deviceId, tags.location.region AS r FROM devices WHERE tags.n < 2")
    assert projected.headers["x-ms-item-type"] == "raw"
    assert projected.json() == [{"deviceId": "q-000", "r": "US"}, {"deviceId": "q-001", "r": "EU"}]
    grouped = await _query(
        api, "SELECT tags.location.region AS region, COUNT() AS n FROM devices GROUP BY tags.location.region"
    )
    assert grouped.headers["x-ms-item-type"] == "raw"
    assert sorted(grouped.json(), key=lambda g: str(g["region"])) == [
        {"region": "EU", "n": 3},
        {"region": "US", "n": 3},
    ]
    total = await _query(api, "SELECT COUNT() AS total FROM devices")
    assert total.json() == [{"total": 6}]


async def test_top_caps_results_across_pages(api: httpx.AsyncClient) -> None:
    ids = await _make_fleet(api, 10)
    items = await _walk(api, "SELECT TOP 5 * FROM devices", page=2)
    assert [t["deviceId"] for t in items] == ids[:5]


async def test_device_jobs_query_has_device_job_item_type(api: httpx.AsyncClient) -> None:
    response = await _query(api, "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'none'")
    assert response.status_code == 200, response.text
    assert response.headers["x-ms-item-type"] == "deviceJob"
    assert response.json() == []


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM devices WHERE",
        "SELECT * FROM devices WHERE tags.x = 'unterminated",
        "SELEC * FROM devices",
        "SELECT * FROM devices.modules",
        "SELECT * FROM devices WHERE STARTSWITH(deviceId, 3)",
    ],
)
async def test_bad_queries_are_400_naming_the_position(api: httpx.AsyncClient, query: str) -> None:
    response = await _query(api, query)
    assert response.status_code == 400, response.text
    message = response.json()["Message"]
    assert "column" in message or "offset" in message, message


async def test_limits_and_bad_paging_headers(api: httpx.AsyncClient) -> None:
    too_long = "SELECT * FROM devices WHERE deviceId = '" + "x" * 8200 + "'"
    assert (await _query(api, too_long)).status_code == 400
    assert (await _query(api, "SELECT * FROM devices", page=0)).status_code == 400
    assert (await _query(api, "SELECT * FROM devices", page=1001)).status_code == 400
    assert (await _query(api, "SELECT * FROM devices", token="garbage!")).status_code == 400
    assert (await api.post("/devices/query", json={"notquery": 1})).status_code == 400
    assert (await api.post("/devices/query", json={"query": 42})).status_code == 400


async def test_continuation_of_another_query_is_refused(api: httpx.AsyncClient) -> None:
    await _make_fleet(api, 5)
    first = await _query(api, "SELECT * FROM devices", page=2)
    token = first.headers["x-ms-continuation"]
    other = await _query(api, "SELECT * FROM devices WHERE tags.n > 0", page=2, token=token)
    assert other.status_code == 400


async def test_query_needs_twin_read_rights(hub: Hub) -> None:
    assert hub.endpoints is not None
    async with httpx.AsyncClient(base_url=hub.endpoints.http_url) as client:
        body = {"query": "SELECT * FROM devices"}
        assert (await client.post("/devices/query", json=body)).status_code == 401
        for policy in ("service", "registryRead", "iothubowner"):
            headers = {"Authorization": service_token(hub, policy)}
            assert (await client.post("/devices/query", json=body, headers=headers)).status_code == 200
