"""The registry client's request shaping and response parsing, against httpx.MockTransport.

These check only what the SDK puts on the wire and how it reads answers; behaviour against a
real hub is covered by the integration tests.
"""

from __future__ import annotations

import asyncio
import json
import warnings
from collections.abc import Callable
from typing import Any

import httpx
import pytest

import job_client
from hub.wire.sas import parse_sas_token, signature_matches
from job_client import (
    AsyncRegistryClient,
    DeviceNotFoundError,
    FleetHubConnectionError,
    FleetHubError,
    FleetHubTimeoutError,
    PreconditionFailedError,
    RegistryClient,
    ServiceCredentials,
    Twin,
)
from job_client.errors import BadRequestError

KEY = "c2VydmljZS1rZXktZm9yLXRlc3RzLW9ubHktMzItYnl0ZXM="
CONNECTION_STRING = f"HostName=hub.test:8443;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}"

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that records requests and answers from a queue or a function."""

    def __init__(self, *responses: httpx.Response | Handler) -> None:
        self.requests: list[httpx.Request] = []
        self._responses = list(responses)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = self._responses.pop(0) if len(self._responses) > 1 else self._responses[0]
        return response(request) if callable(response) else response

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)


def _client(recorder: Recorder, **kwargs: Any) -> AsyncRegistryClient:
    return AsyncRegistryClient.from_connection_string(
        CONNECTION_STRING, transport=httpx.MockTransport(recorder), **kwargs
    )


def _device_doc(device_id: str, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "deviceId": device_id,
        "generationId": "636",
        "etag": "AAAAAAAAAAE=",
        "status": "enabled",
        "connectionState": "Connected",
        "lastActivityTime": "2024-05-06T07:08:09.1234567Z",
        "statusUpdatedTime": "0001-01-01T00:00:00Z",
        "authentication": {"type": "sas", "symmetricKey": {"primaryKey": "cGs=", "secondaryKey": "c2s="}},
    }
    doc.update(extra)
    return doc


def _twin_doc(device_id: str) -> dict[str, Any]:
    return {
        "deviceId": device_id,
        "etag": "AAAAAAAAAAc=",
        "version": 7,
        "status": "enabled",
        "connectionState": "Disconnected",
        "lastActivityTime": None,
        "tags": {"building": "43"},
        "properties": {
            "desired": {"mode": "eco", "$version": 4, "$metadata": {}},
            "reported": {"firmware": "1.0.0", "$version": 9, "$metadata": {}},
        },
    }


def _error(status: int, code: str, text: str = "no") -> httpx.Response:
    return httpx.Response(
        status,
        headers={"iothub-errorcode": code},
        json={"Message": f"ErrorCode:{code};{text}", "ExceptionMessage": text},
    )


# -- endpoint and auth --------------------------------------------------------------------


async def test_requests_go_to_https_hostname_with_a_signed_service_token() -> None:
    recorder = Recorder(httpx.Response(200, json=_device_doc("d1")))
    async with _client(recorder) as client:
        await client.get_device("d1")
    request = recorder.last
    assert str(request.url).startswith("https://hub.test:8443/devices/d1?")
    assert request.url.params["api-version"] == "2021-04-12"
    token = parse_sas_token(request.headers["Authorization"])
    assert token.resource == "hub.test:8443"
    assert token.key_name == "iothubowner"
    assert signature_matches(token, KEY)


async def test_an_explicit_url_overrides_the_hostname_but_not_the_token_resource() -> None:
    recorder = Recorder(httpx.Response(200, json=[]))
    async with _client(recorder, url="http://127.0.0.1:8080/") as client:
        await client.list_devices(max_count=5)
    assert str(recorder.last.url).startswith("http://127.0.0.1:8080/devices?")
    assert recorder.last.url.params["top"] == "5"
    assert parse_sas_token(recorder.last.headers["Authorization"]).resource == "hub.test:8443"


def test_credentials_cache_the_token_and_renew_it_before_expiry() -> None:
    now = [1_000_000.0]
    credentials = ServiceCredentials("hub.test", "service", KEY, ttl=3600, renew_before=300, clock=lambda: now[0])
    first = credentials.token()
    now[0] += 3000
    assert credentials.token() == first
    now[0] += 301
    renewed = credentials.token()
    assert renewed != first
    assert parse_sas_token(renewed).expiry == int(now[0]) + 3600
    assert KEY not in repr(credentials)


def test_a_device_connection_string_is_not_service_credentials() -> None:
    with pytest.raises(ValueError, match="service connection string"):
        ServiceCredentials.from_connection_string(f"HostName=hub.test;DeviceId=d1;SharedAccessKey={KEY}")


# -- devices ------------------------------------------------------------------------------


async def test_create_device_puts_the_identity_and_leaves_absent_keys_to_the_hub() -> None:
    recorder = Recorder(httpx.Response(200, json=_device_doc("d1")))
    async with _client(recorder) as client:
        device = await client.create_device("d1")
        await client.create_device("d1", primary_key="cGs=", secondary_key="c2s=", status="disabled")
    assert recorder.requests[0].method == "PUT"
    assert recorder.body(0) == {
        "deviceId": "d1",
        "status": "enabled",
        "authentication": {"type": "sas", "symmetricKey": {}},
    }
    assert recorder.body(1)["authentication"]["symmetricKey"] == {"primaryKey": "cGs=", "secondaryKey": "c2s="}
    assert recorder.body(1)["status"] == "disabled"
    assert device.primary_key == "cGs="
    assert device.connected
    assert device.last_activity_time is not None
    assert device.last_activity_time.microsecond == 123456
    assert device.status_updated_time is None  # IoT Hub's "never"
    assert device.connection_string("hub.test") == "HostName=hub.test;DeviceId=d1;SharedAccessKey=cGs="


@pytest.mark.parametrize(
    ("device_id", "raw_path"),
    [
        ("plain-1", "/devices/plain-1"),
        ("a#b?c%d$e'f", "/devices/a%23b%3Fc%25d%24e%27f"),
        ("x:y@z(1),+=", "/devices/x%3Ay%40z%281%29%2C%2B%3D"),
    ],
)
async def test_device_ids_are_escaped_in_paths(device_id: str, raw_path: str) -> None:
    recorder = Recorder(httpx.Response(200, json=_device_doc(device_id)))
    async with _client(recorder) as client:
        await client.get_device(device_id)
        await client.get_twin(device_id)
    assert recorder.requests[0].url.raw_path.decode().split("?")[0] == raw_path
    assert recorder.requests[1].url.raw_path.decode().split("?")[0] == raw_path.replace("/devices/", "/twins/")


async def test_delete_device_sends_if_match() -> None:
    recorder = Recorder(httpx.Response(204))
    async with _client(recorder) as client:
        await client.delete_device("d1")
        await client.delete_device("d1", etag="AAAAAAAAAAI=")
    assert [r.method for r in recorder.requests] == ["DELETE", "DELETE"]
    assert recorder.requests[0].headers["If-Match"] == "*"
    assert recorder.requests[1].headers["If-Match"] == "AAAAAAAAAAI="


async def test_bulk_create_chunks_at_1000_and_merges_per_device_errors() -> None:
    exists = {
        "isSuccessful": False,
        "errors": [{"deviceId": "sim-0001", "errorCode": "DeviceAlreadyExists", "errorStatus": "exists"}],
        "warnings": [],
    }
    recorder = Recorder(
        httpx.Response(400, json=exists), httpx.Response(200, json={"isSuccessful": True, "errors": []})
    )
    async with _client(recorder) as client:
        result = await client.bulk_create_devices([f"sim-{i:04d}" for i in range(2500)])
    assert [len(recorder.body(i)) for i in range(3)] == [1000, 1000, 500]
    assert all(r.method == "POST" and r.url.path == "/devices" for r in recorder.requests)
    assert recorder.body(0)[1] == {
        "id": "sim-0001",
        "importMode": "create",
        "status": "enabled",
        "authentication": {"symmetricKey": {}, "type": "sas"},
    }
    assert not result.is_successful
    assert [(e.device_id, e.error_code) for e in result.errors] == [("sim-0001", "DeviceAlreadyExists")]


async def test_bulk_create_of_nothing_makes_no_call() -> None:
    recorder = Recorder(httpx.Response(500))
    async with _client(recorder) as client:
        result = await client.bulk_create_devices([])
    assert result.is_successful
    assert recorder.requests == []


@pytest.mark.parametrize(
    "answer", [_error(400, "ArgumentInvalid", "too many devices"), httpx.Response(400, content=b"too many devices")]
)
async def test_a_bulk_400_that_is_not_a_bulk_result_raises(answer: httpx.Response) -> None:
    async with _client(Recorder(answer)) as client:
        with pytest.raises(BadRequestError, match="too many devices"):
            await client.bulk_create_devices(["a"])


# -- twins and methods ----------------------------------------------------------------------


async def test_twin_reads_typed_fields_and_raw_access() -> None:
    recorder = Recorder(httpx.Response(200, json=_twin_doc("d1")))
    async with _client(recorder) as client:
        twin = await client.get_twin("d1")
    assert (twin.device_id, twin.etag, twin.version) == ("d1", "AAAAAAAAAAc=", 7)
    assert twin.tags == {"building": "43"}
    assert twin.desired["mode"] == "eco"
    assert twin.properties.desired_version == 4
    assert twin.properties.reported_version == 9
    assert twin["connectionState"] == "Disconnected"
    assert twin.last_activity_time is None


async def test_update_twin_patches_with_if_match_only_when_given() -> None:
    recorder = Recorder(httpx.Response(200, json=_twin_doc("d1")))
    patch = {"tags": {"building": "44"}, "properties": {"desired": {"mode": None}}}
    async with _client(recorder) as client:
        await client.update_twin("d1", patch)
        await client.update_twin("d1", patch, etag="AAAAAAAAAAc=")
    assert recorder.requests[0].method == "PATCH"
    assert "If-Match" not in recorder.requests[0].headers
    assert recorder.requests[1].headers["If-Match"] == "AAAAAAAAAAc="
    assert recorder.body(0) == patch


async def test_replace_twin_puts_tags_and_desired_of_a_twin() -> None:
    recorder = Recorder(httpx.Response(200, json=_twin_doc("d1")))
    async with _client(recorder) as client:
        twin = await client.get_twin("d1")
        await client.replace_twin("d1", twin, etag=twin.etag)
    request = recorder.last
    assert request.method == "PUT"
    assert request.headers["If-Match"] == "AAAAAAAAAAc="
    body = recorder.body()
    assert body["tags"] == {"building": "43"}
    assert body["properties"] == {"desired": {"mode": "eco", "$version": 4, "$metadata": {}}}


async def test_precondition_failed_is_raised_with_its_facts() -> None:
    recorder = Recorder(_error(412, "PreconditionFailed", "etag mismatch"))
    async with _client(recorder) as client:
        with pytest.raises(PreconditionFailedError) as caught:
            await client.update_twin("d1", {"tags": {}}, etag="old")
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        412,
        "PreconditionFailed",
        "etag mismatch",
    )


async def test_invoke_method_shapes_the_call_and_waits_long_enough() -> None:
    recorder = Recorder(httpx.Response(200, json={"status": 200, "payload": {"locked": True}}))
    async with _client(recorder, timeout=5.0) as client:
        result = await client.invoke_method("d1", "lockDoor", {"force": True}, response_timeout=60, connect_timeout=15)
    request = recorder.last
    assert (request.method, request.url.path) == ("POST", "/twins/d1/methods")
    assert recorder.body() == {
        "methodName": "lockDoor",
        "payload": {"force": True},
        "responseTimeoutInSeconds": 60,
        "connectTimeoutInSeconds": 15,
    }
    # The HTTP read must outlast the hub's own wait for the device.
    assert request.extensions["timeout"]["read"] > 75
    assert request.extensions["timeout"]["connect"] == 5.0
    assert (result.status, result.payload, result.ok) == (200, {"locked": True}, True)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (404, "DeviceNotOnline", job_client.DeviceNotOnlineError),
        (504, "GatewayTimeout", job_client.GatewayTimeoutError),
        (404, "DeviceNotFound", DeviceNotFoundError),
    ],
)
async def test_invoke_method_failures_raise_their_class(status: int, code: str, expected: type) -> None:
    recorder = Recorder(_error(status, code))
    async with _client(recorder) as client:
        with pytest.raises(expected):
            await client.invoke_method("d1", "lockDoor")


async def test_a_device_error_status_is_a_result_not_an_exception() -> None:
    recorder = Recorder(httpx.Response(200, json={"status": 500, "payload": {"error": "jammed"}}))
    async with _client(recorder) as client:
        result = await client.invoke_method("d1", "lockDoor")
    assert not result.ok
    assert result.payload == {"error": "jammed"}


# -- query ----------------------------------------------------------------------------------


def _paged(pages: dict[str | None, tuple[list[Any], str | None]]) -> Handler:
    def answer(request: httpx.Request) -> httpx.Response:
        items, following = pages[request.headers.get("x-ms-continuation")]
        headers = {"x-ms-item-type": "Twin"}
        if following:
            headers["x-ms-continuation"] = following
        return httpx.Response(200, json=items, headers=headers)

    return answer


async def test_query_follows_continuations_until_the_last_page() -> None:
    recorder = Recorder(
        _paged(
            {
                None: ([{"deviceId": "a"}, {"deviceId": "b"}], "tok1"),
                "tok1": ([{"deviceId": "c"}], "tok2"),
                "tok2": ([], None),
            }
        )
    )
    async with _client(recorder) as client:
        items = [item async for item in client.query("SELECT * FROM devices", page_size=2)]
    assert [item["deviceId"] for item in items] == ["a", "b", "c"]
    assert len(recorder.requests) == 3
    assert all(r.method == "POST" and r.url.path == "/devices/query" for r in recorder.requests)
    assert all(r.headers["x-ms-max-item-count"] == "2" for r in recorder.requests)
    assert "x-ms-continuation" not in recorder.requests[0].headers
    assert [r.headers.get("x-ms-continuation") for r in recorder.requests[1:]] == ["tok1", "tok2"]
    assert recorder.body(0) == {"query": "SELECT * FROM devices"}


async def test_query_pages_expose_the_item_type() -> None:
    recorder = Recorder(_paged({None: ([{"numberOfDevices": 3}], None)}))
    async with _client(recorder) as client:
        pages = [page async for page in client.query_pages("SELECT COUNT() AS numberOfDevices FROM devices")]
    assert [(p.items, p.continuation, p.item_type) for p in pages] == [([{"numberOfDevices": 3}], None, "Twin")]


async def test_a_continuation_that_does_not_move_is_an_error_not_a_loop() -> None:
    recorder = Recorder(_paged({None: ([1], "same"), "same": ([2], "same")}))
    async with _client(recorder) as client:
        with pytest.raises(FleetHubError, match="repeated continuation"):
            _ = [item async for item in client.query("SELECT * FROM devices")]
    assert len(recorder.requests) == 2


# -- transport failures ---------------------------------------------------------------------


def _raise(error: Exception) -> Handler:
    def answer(request: httpx.Request) -> httpx.Response:
        raise error

    return answer


async def test_transport_failures_become_connection_errors_with_their_cause() -> None:
    refused = httpx.ConnectError("connection refused")
    async with _client(Recorder(_raise(refused))) as client:
        with pytest.raises(FleetHubConnectionError) as caught:
            await client.get_device("d1")
    assert caught.value.__cause__ is refused
    assert caught.value.status is None
    assert "connection refused" in caught.value.message


async def test_timeouts_become_timeout_errors() -> None:
    async with _client(Recorder(_raise(httpx.ReadTimeout("slow")))) as client:
        with pytest.raises(FleetHubTimeoutError):
            await client.get_twin("d1")


async def test_a_success_with_a_body_that_is_not_json_is_reported() -> None:
    async with _client(Recorder(httpx.Response(200, content=b"<html>"))) as client:
        with pytest.raises(FleetHubError, match="not JSON"):
            await client.get_device("d1")


# -- the blocking wrapper -------------------------------------------------------------------


def test_sync_client_runs_the_same_core() -> None:
    recorder = Recorder(
        httpx.Response(200, json=_device_doc("d1")),
        _paged({None: ([{"deviceId": "a"}], "t"), "t": ([{"deviceId": "b"}], None)}),
    )
    with RegistryClient.from_connection_string(CONNECTION_STRING, transport=httpx.MockTransport(recorder)) as client:
        assert client.get_device("d1").device_id == "d1"
        assert [item["deviceId"] for item in client.query("SELECT * FROM devices")] == ["a", "b"]
        assert client.hostname == "hub.test:8443"
    assert len(recorder.requests) == 3


def test_sync_client_errors_are_the_same_classes() -> None:
    recorder = Recorder(_error(404, "DeviceNotFound", "Device d9 not found"))
    client = RegistryClient.from_connection_string(CONNECTION_STRING, transport=httpx.MockTransport(recorder))
    with client, pytest.raises(DeviceNotFoundError, match="d9"):
        client.get_device("d9")


def test_sync_query_stopped_early_closes_cleanly() -> None:
    recorder = Recorder(_paged({None: ([{"n": 1}, {"n": 2}], "more"), "more": ([{"n": 3}], None)}))
    client = RegistryClient.from_connection_string(CONNECTION_STRING, transport=httpx.MockTransport(recorder))
    items = client.query("SELECT * FROM devices")
    assert next(items) == {"n": 1}
    items.close()
    client.close()
    client.close()  # idempotent
    assert len(recorder.requests) == 1


async def test_sync_client_refuses_to_run_inside_an_event_loop() -> None:
    client = RegistryClient.from_connection_string(
        CONNECTION_STRING, transport=httpx.MockTransport(Recorder(httpx.Response(200)))
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "coroutine was never awaited"
        with pytest.raises(RuntimeError, match="inside a running event loop"):
            client.get_twin("d1")
        with pytest.raises(RuntimeError, match="inside a running event loop"):
            client.close()
    await asyncio.to_thread(client.close)  # from a thread without a loop it closes normally


def test_twin_to_json_keeps_only_the_writable_parts() -> None:
    twin = Twin.from_json(_twin_doc("d1"))
    assert set(twin.to_json()) == {"deviceId", "etag", "tags", "properties"}
    assert set(twin.to_json()["properties"]) == {"desired"}
