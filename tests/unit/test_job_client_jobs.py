"""The job client's request shaping, response parsing and paging, against httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from job_client import (
    AsyncJobClient,
    DeviceJobStatus,
    FleetHubTimeoutError,
    Job,
    JobClient,
    JobNotFoundError,
    JobStatus,
    JobType,
    MethodParams,
)
from job_client.models import DeviceJobResult

KEY = "c2VydmljZS1rZXktZm9yLXRlc3RzLW9ubHktMzItYnl0ZXM="
CONNECTION_STRING = f"HostName=hub.test;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}"

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
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


def _async(recorder: Recorder) -> AsyncJobClient:
    return AsyncJobClient.from_connection_string(CONNECTION_STRING, transport=httpx.MockTransport(recorder))


def _sync(recorder: Recorder) -> JobClient:
    return JobClient.from_connection_string(CONNECTION_STRING, transport=httpx.MockTransport(recorder))


def _job_doc(status: str = "queued", **stats: int) -> dict[str, Any]:
    return {
        "jobId": "job1",
        "type": "scheduleDeviceMethod",
        "status": status,
        "queryCondition": "*",
        "createdTime": "2026-01-02T03:04:05.1234567Z",
        "endTime": "9999-12-30T00:00:00Z",
        "maxExecutionTimeInSeconds": 3600,
        "deviceJobStatistics": {"deviceCount": 3, **stats},
        "newerField": 1,
    }


def test_schedule_device_method_puts_a_job_request() -> None:
    recorder = Recorder(httpx.Response(200, json=_job_doc()))
    start = datetime(2026, 1, 2, 5, 0, tzinfo=timezone(timedelta(hours=2)))
    with _sync(recorder) as client:
        job = client.schedule_device_method(
            "job1", "tags.building = '43'", {"methodName": "lockDoor", "payload": {"a": 1}}, start_time=start
        )
    request = recorder.last
    assert request.method == "PUT"
    assert request.url.path == "/jobs/v2/job1"
    assert request.url.params["api-version"] == "2021-04-12"
    assert request.headers["Authorization"].startswith("SharedAccessSignature ")
    assert recorder.body() == {
        "jobId": "job1",
        "type": "scheduleDeviceMethod",
        "cloudToDeviceMethod": {
            "methodName": "lockDoor",
            "payload": {"a": 1},
            "responseTimeoutInSeconds": 30,
            "connectTimeoutInSeconds": 0,
        },
        "queryCondition": "tags.building = '43'",
        "startTime": "2026-01-02T03:00:00Z",
        "maxExecutionTimeInSeconds": 3600,
    }
    assert job.status is JobStatus.QUEUED
    assert job.type is JobType.DEVICE_METHOD
    assert job.end_time is None  # the 9999 sentinel
    assert job.created_time == datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert job.device_job_statistics.device_count == 3
    assert job.raw["newerField"] == 1


def test_typed_method_params_and_no_start_time() -> None:
    recorder = Recorder(httpx.Response(200, json=_job_doc()))
    with _sync(recorder) as client:
        client.schedule_device_method(
            "job1", "*", MethodParams("reboot", None, 10, 5), max_execution_time_in_seconds=60
        )
    body = recorder.body()
    assert "startTime" not in body
    assert body["maxExecutionTimeInSeconds"] == 60
    assert body["cloudToDeviceMethod"] == {
        "methodName": "reboot",
        "payload": None,
        "responseTimeoutInSeconds": 10,
        "connectTimeoutInSeconds": 5,
    }


def test_method_params_need_a_method_name() -> None:
    recorder = Recorder(httpx.Response(200, json=_job_doc()))
    with _sync(recorder) as client, pytest.raises(ValueError, match="methodName"):
        client.schedule_device_method("job1", "*", {"payload": 1})
    assert recorder.requests == []


def test_schedule_twin_update_forces_etag_star() -> None:
    recorder = Recorder(httpx.Response(200, json={**_job_doc(), "type": "scheduleUpdateTwin"}))
    patch = {"tags": {"building": "43"}, "properties": {"desired": {"floor": 3}}}
    with _sync(recorder) as client:
        job = client.schedule_twin_update("job1", "*", patch, start_time=datetime(2026, 1, 1))
    body = recorder.body()
    assert body["type"] == "scheduleUpdateTwin"
    assert body["updateTwin"] == {**patch, "etag": "*"}
    assert body["startTime"] == "2026-01-01T00:00:00Z"
    assert "cloudToDeviceMethod" not in body
    assert job.type is JobType.UPDATE_TWIN


def test_get_and_cancel() -> None:
    recorder = Recorder(httpx.Response(200, json=_job_doc("running")), httpx.Response(200, json=_job_doc("cancelled")))
    with _sync(recorder) as client:
        assert client.get_job("job1").status is JobStatus.RUNNING
        cancelled = client.cancel_job("job1")
    assert [(r.method, r.url.path) for r in recorder.requests] == [
        ("GET", "/jobs/v2/job1"),
        ("POST", "/jobs/v2/job1/cancel"),
    ]
    assert cancelled.is_terminal


def test_errors_are_typed() -> None:
    recorder = Recorder(
        httpx.Response(404, json={"Message": "ErrorCode:JobNotFound;no such job", "ExceptionMessage": ""})
    )
    with _sync(recorder) as client, pytest.raises(JobNotFoundError):
        client.get_job("nope")


@pytest.mark.parametrize(
    ("wire", "parsed", "terminal"),
    [
        ("enqueued", JobStatus.QUEUED, False),
        ("canceled", JobStatus.CANCELLED, True),
        ("unknown", "unknown", False),
        ("finished-ish", "finished-ish", False),
        ("completed", JobStatus.COMPLETED, True),
    ],
)
def test_job_statuses_parse_gracefully(wire: str, parsed: object, terminal: bool) -> None:
    job = Job.from_json({"jobId": "j", "status": wire, "deviceJobStatistics": None})
    assert job.status == parsed
    assert job.is_terminal is terminal
    assert job.device_job_statistics.device_count == 0


def _paged(items: list[Any], size_header: str = "x-ms-max-item-count") -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        size = int(request.headers[size_header])
        start = int(request.headers.get("x-ms-continuation", "0"))
        chunk = items[start : start + size]
        headers = {"x-ms-continuation": str(start + size)} if start + size < len(items) else {}
        return httpx.Response(200, json=chunk, headers=headers)

    return handle


def test_query_jobs_follows_continuations_with_filters() -> None:
    docs = [{**_job_doc("completed"), "jobId": f"job{i}"} for i in range(5)]
    recorder = Recorder(_paged(docs))
    with _sync(recorder) as client:
        jobs = list(client.query_jobs(JobType.DEVICE_METHOD, "completed", page_size=2))
    assert [j.job_id for j in jobs] == [f"job{i}" for i in range(5)]
    assert len(recorder.requests) == 3
    first = recorder.requests[0]
    assert first.url.path == "/jobs/v2/query"
    assert first.url.params["jobType"] == "scheduleDeviceMethod"
    assert first.url.params["jobStatus"] == "completed"
    assert first.headers["x-ms-max-item-count"] == "2"
    assert recorder.requests[1].headers["x-ms-continuation"] == "2"


def test_query_jobs_without_filters_sends_none() -> None:
    recorder = Recorder(httpx.Response(200, json=[]))
    with _sync(recorder) as client:
        assert list(client.query_jobs()) == []
    assert set(recorder.last.url.params) == {"api-version"}


DEVICE_RESULTS = [
    {
        "deviceId": "d1",
        "jobId": "job1",
        "jobType": "scheduleDeviceMethod",
        "status": "completed",
        "startTimeUtc": "2026-01-02T03:04:05Z",
        "endTimeUtc": "2026-01-02T03:04:06Z",
        "createdDateTimeUtc": "2026-01-02T03:04:00Z",
        "lastUpdatedDateTimeUtc": "2026-01-02T03:04:06Z",
        "outcome": {"deviceMethodResponse": {"status": 200, "payload": {"locked": True}}},
    },
    {
        "deviceId": "d2",
        "jobId": "job1",
        "jobType": "scheduleDeviceMethod",
        "status": "failed",
        "error": {"code": "GatewayTimeout", "description": "Timed out waiting for the response from device."},
    },
    {"deviceId": "d3", "jobId": "job1", "status": "cancelled"},
]


def test_list_device_results_pages_and_parses() -> None:
    recorder = Recorder(_paged(DEVICE_RESULTS))
    with _sync(recorder) as client:
        results = list(client.list_device_results("job1", status=DeviceJobStatus.FAILED, page_size=2))
    assert recorder.requests[0].url.path == "/jobs/v2/job1/devices"
    assert recorder.requests[0].url.params["status"] == "failed"
    assert len(recorder.requests) == 2
    ok, failed, cancelled = results
    assert ok.status is DeviceJobStatus.COMPLETED
    assert ok.method_response is not None
    assert ok.method_response.payload == {"locked": True}
    assert ok.end_time_utc == datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC)
    assert failed.error is not None
    assert failed.error.code == "GatewayTimeout"
    assert failed.method_response is None
    assert cancelled.status is DeviceJobStatus.CANCELED


def test_list_device_results_via_the_devices_jobs_query() -> None:
    recorder = Recorder(httpx.Response(200, json=DEVICE_RESULTS[:1]))
    with _sync(recorder) as client:
        results = list(client.list_device_results("job'1", status="failed", via_query=True))
    assert recorder.last.method == "POST"
    assert recorder.last.url.path == "/devices/query"
    assert recorder.body() == {
        "query": "SELECT * FROM devices.jobs WHERE devices.jobs.jobId = 'job''1' AND devices.jobs.status = 'failed'"
    }
    assert isinstance(results[0], DeviceJobResult)


def test_list_events() -> None:
    events = [{"time": "2026-01-02T03:04:05Z", "type": "started", "message": "running 3 devices"}, "junk"]
    recorder = Recorder(httpx.Response(200, json=events), httpx.Response(200, json={"events": events[:1]}))
    with _sync(recorder) as client:
        first = client.list_events("job1")
        second = client.list_events("job1")
    assert recorder.last.url.path == "/jobs/v2/job1/events"
    assert [e.kind for e in first] == ["started"]
    assert second[0].message == "running 3 devices"


def _progressing(*statuses: str) -> Recorder:
    return Recorder(*[httpx.Response(200, json=_job_doc(s, succeededCount=i)) for i, s in enumerate(statuses)])


def test_wait_for_job_polls_until_terminal() -> None:
    recorder = _progressing("queued", "running", "completed")
    seen: list[Job] = []
    with _sync(recorder) as client:
        job = client.wait_for_job("job1", poll_interval=0.001, on_progress=seen.append)
    assert job.status is JobStatus.COMPLETED
    assert [j.status for j in seen] == [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.COMPLETED]
    assert len(recorder.requests) == 3


def test_wait_for_job_times_out() -> None:
    recorder = _progressing("running")
    with _sync(recorder) as client, pytest.raises(FleetHubTimeoutError):
        client.wait_for_job("job1", poll_interval=0.01, timeout=0.03)


def test_async_client_directly() -> None:
    async def scenario() -> list[str]:
        recorder = Recorder(_paged([_job_doc("failed")]), _progressing("failed"))
        async with _async(recorder) as client:
            ids = [job.job_id async for job in client.query_jobs(job_status=JobStatus.FAILED)]
            job = await client.wait_for_job("job1", poll_interval=0.001)
            return [*ids, str(job.status)]

    assert asyncio.run(scenario()) == ["job1", "failed"]


def test_from_connection_string_takes_the_shared_endpoint_options() -> None:
    recorder = Recorder(httpx.Response(200, json=_job_doc()))
    transport = httpx.MockTransport(recorder)
    with JobClient.from_connection_string(CONNECTION_STRING, url="http://127.0.0.1:8080/", transport=transport) as c:
        assert c.hostname == "hub.test"
        c.get_job("job1")
    assert str(recorder.last.url).startswith("http://127.0.0.1:8080/jobs/v2/job1?")
    with JobClient.from_connection_string(CONNECTION_STRING, transport=transport) as c:
        c.get_job("job1")
    assert str(recorder.last.url).startswith("https://hub.test/jobs/v2/job1?")
