"""``fleethub-jobs`` job commands against a mocked hub: request shaping, output and exit codes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from job_client import cli, cli_common
from job_client.jobs import JobClient

CONNECTION_STRING = "HostName=hub.test;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5"

Handler = Callable[[httpx.Request], httpx.Response]


class Hub:
    """Answers from a queue (the last answer repeats) and records what it was sent."""

    def __init__(self, *responses: httpx.Response | Handler) -> None:
        self.requests: list[httpx.Request] = []
        self._responses = list(responses)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = self._responses.pop(0) if len(self._responses) > 1 else self._responses[0]
        return response(request) if callable(response) else response

    def body(self, index: int = -1) -> Any:
        return json.loads(self.requests[index].content)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Hub]:
    monkeypatch.setenv("FLEETHUB_CONNECTION_STRING", CONNECTION_STRING)
    monkeypatch.delenv("FLEETHUB_URL", raising=False)
    monkeypatch.delenv("FLEETHUB_CA_CERT", raising=False)

    def install(*responses: httpx.Response | Handler) -> Hub:
        recorder = Hub(*responses)

        def jobs(self: cli_common.Target) -> JobClient:
            return JobClient.from_connection_string(
                self.connection_string, url=self.url, transport=httpx.MockTransport(recorder)
            )

        monkeypatch.setattr(cli_common.Target, "jobs", jobs)
        return recorder

    return install


def _job(status: str, device_count: int = 4, **counts: int) -> httpx.Response:
    stats = {"deviceCount": device_count, "pendingCount": 0, "runningCount": 0, "succeededCount": 0, "failedCount": 0}
    stats.update(counts)
    return httpx.Response(
        200,
        json={"jobId": "job1", "type": "scheduleDeviceMethod", "status": status, "deviceJobStatistics": stats},
    )


def _invoke(*args: str) -> Any:
    return CliRunner().invoke(cli.app, list(args))


def test_the_job_commands_are_there() -> None:
    commands = set(typer.main.get_command(cli.app).commands)  # type: ignore[attr-defined]
    assert {"schedule-method", "schedule-twin-update", "get", "list", "cancel", "watch", "results", "query"} <= commands


def test_schedule_method_shapes_the_request(hub: Callable[..., Hub]) -> None:
    recorder = hub(_job("queued"))
    result = _invoke(
        "schedule-method",
        "job1",
        "--query",
        "tags.building = '43'",
        "--method",
        "lockDoor",
        "--payload",
        '{"force": true}',
        "--start-time",
        "2026-01-02T03:04:05+01:00",
        "--max-execution-time",
        "120",
        "--response-timeout",
        "10",
        "--connect-timeout",
        "5",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert recorder.requests[0].method == "PUT"
    assert recorder.requests[0].url.path == "/jobs/v2/job1"
    assert recorder.body() == {
        "jobId": "job1",
        "type": "scheduleDeviceMethod",
        "cloudToDeviceMethod": {
            "methodName": "lockDoor",
            "payload": {"force": True},
            "responseTimeoutInSeconds": 10,
            "connectTimeoutInSeconds": 5,
        },
        "queryCondition": "tags.building = '43'",
        "startTime": "2026-01-02T02:04:05Z",
        "maxExecutionTimeInSeconds": 120,
    }
    assert json.loads(result.output)["status"] == "queued"


def test_schedule_twin_update_from_desired_and_tags(hub: Callable[..., Hub]) -> None:
    recorder = hub(_job("queued"))
    result = _invoke(
        "schedule-twin-update", "job2", "--query", "*", "--tags", '{"building": "43"}', "--desired", '{"floor": 3}'
    )
    assert result.exit_code == 0, result.output
    assert recorder.body()["type"] == "scheduleUpdateTwin"
    assert recorder.body()["updateTwin"] == {
        "tags": {"building": "43"},
        "properties": {"desired": {"floor": 3}},
        "etag": "*",
    }
    assert "job1" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["schedule-twin-update", "j", "--query", "*"],
        ["schedule-twin-update", "j", "--query", "*", "--patch", "{bad"],
        ["schedule-method", "j", "--query", "*", "--method", "m", "--payload", "{"],
        ["schedule-method", "j", "--query", "*", "--method", "m", "--start-time", "tomorrow"],
    ],
)
def test_bad_arguments_are_refused_before_any_request(hub: Callable[..., Hub], args: list[str]) -> None:
    recorder = hub(_job("queued"))
    result = _invoke(*args)
    assert result.exit_code == 2
    assert recorder.requests == []


def test_get_cancel_and_errors(hub: Callable[..., Hub]) -> None:
    recorder = hub(
        _job("running", succeededCount=1),
        _job("cancelled"),
        httpx.Response(404, json={"Message": "ErrorCode:JobNotFound;no job nope"}),
    )
    got = _invoke("get", "job1")
    assert got.exit_code == 0
    assert "running" in got.output
    assert "succeeded 1" in got.output
    cancelled = _invoke("cancel", "job1", "--json")
    assert json.loads(cancelled.output)["status"] == "cancelled"
    assert recorder.requests[1].url.path == "/jobs/v2/job1/cancel"
    missing = _invoke("get", "nope")
    assert missing.exit_code == 1
    assert "error:" in missing.output


def test_list_filters_and_formats(hub: Callable[..., Hub]) -> None:
    recorder = hub(httpx.Response(200, json=[_job("completed").json()]))
    table = _invoke("list", "--type", "scheduleDeviceMethod", "--status", "completed")
    assert table.exit_code == 0, table.output
    assert "job1" in table.output
    assert recorder.requests[0].url.params["jobType"] == "scheduleDeviceMethod"
    assert recorder.requests[0].url.params["jobStatus"] == "completed"
    as_json = _invoke("list", "--json")
    assert [job["jobId"] for job in json.loads(as_json.output)] == ["job1"]


RESULTS = [
    {
        "deviceId": "d1",
        "jobId": "job1",
        "status": "completed",
        "outcome": {"deviceMethodResponse": {"status": 200, "payload": {"locked": True}}},
    },
    {"deviceId": "d2", "jobId": "job1", "status": "failed", "error": {"code": "GatewayTimeout", "description": "x"}},
]


def test_results_table_and_json(hub: Callable[..., Hub]) -> None:
    recorder = hub(httpx.Response(200, json=RESULTS))
    table = _invoke("results", "job1")
    assert table.exit_code == 0, table.output
    assert "d1" in table.output
    assert "locked" in table.output
    assert "GatewayTimeout" in table.output
    filtered = _invoke("results", "job1", "--status", "failed", "--json")
    assert recorder.requests[-1].url.path == "/jobs/v2/job1/devices"
    assert recorder.requests[-1].url.params["status"] == "failed"
    assert [item["deviceId"] for item in json.loads(filtered.output)] == ["d1", "d2"]


def _progressing(final: httpx.Response) -> tuple[httpx.Response, ...]:
    return (_job("queued"), _job("running", pendingCount=2, succeededCount=2), final)


@pytest.mark.parametrize(
    ("final", "extra", "code"),
    [
        (_job("completed", succeededCount=4), [], 0),
        (_job("completed", succeededCount=3, failedCount=1), [], 1),
        (_job("completed", succeededCount=3, failedCount=1), ["--allow-failures"], 0),
        (_job("failed", succeededCount=2), ["--allow-failures"], 1),
        (_job("cancelled", succeededCount=2, canceledCount=2), [], 1),
    ],
)
def test_watch_exit_codes(hub: Callable[..., Hub], final: httpx.Response, extra: list[str], code: int) -> None:
    recorder = hub(*_progressing(final))
    result = _invoke("watch", "job1", "--interval", "0.01", *extra)
    assert result.exit_code == code, result.output
    assert len(recorder.requests) == 3
    assert "succeeded" in result.output


def test_watch_json_prints_the_final_job_only(hub: Callable[..., Hub]) -> None:
    hub(*_progressing(_job("completed", succeededCount=3, failedCount=1)))
    result = _invoke("watch", "job1", "--interval", "0.01", "--json")
    assert result.exit_code == 1
    final = json.loads(result.output)
    assert final["status"] == "completed"
    assert final["deviceJobStatistics"]["failedCount"] == 1
