"""``fleethub-jobs`` option values for rollout control and schedules: the parsers, and bad
values refused with exit code 2 before the CLI connects to anything."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from hub.domain.recurrence import WeekDay
from job_client import (
    AbortCriterion,
    FailureType,
    RateIncreaseCriterion,
    RetryOn,
    RetryPolicy,
    Rollout,
    RolloutRamp,
    cli,
    cli_options,
)
from job_client.schedules import Frequency


def test_ramp_syntax() -> None:
    assert cli_options.parse_ramp("50,2,notified:1000") == RolloutRamp(50, 2.0, 1000)
    assert cli_options.parse_ramp(" 10 , 1.5 , Succeeded:20 ") == RolloutRamp(
        10, 1.5, 20, RateIncreaseCriterion.SUCCEEDED
    )
    for bad, message in [
        ("50,2", "BASE,FACTOR,notified:N"),
        ("50,2,1000", "BASE,FACTOR,notified:N"),
        ("fast,2,notified:10", "BASE"),
        ("50,x,notified:10", "FACTOR"),
        ("50,2,started:10", "notified:N or succeeded:N"),
        ("50,2,notified:many", "N"),
    ]:
        with pytest.raises(typer.BadParameter, match=message):
            cli_options.parse_ramp(bad)


def test_abort_syntax() -> None:
    assert cli_options.parse_abort("failed:30:10") == AbortCriterion(FailureType.FAILED, 30, 10)
    assert cli_options.parse_abort("timedOut:12.5%:4") == AbortCriterion(FailureType.TIMED_OUT, 12.5, 4)
    assert cli_options.parse_abort("timed-out:5:1").failure_type is FailureType.TIMED_OUT
    assert cli_options.parse_abort("ALL:100:1").failure_type is FailureType.ALL
    for bad, message in [
        ("failed:30", "TYPE:PERCENT:MIN"),
        ("crashed:30:10", "TYPE must be failed, timedOut or all"),
        ("failed:lots:10", "PERCENT"),
        ("failed:30:1.5", "MIN"),
    ]:
        with pytest.raises(typer.BadParameter, match=message):
            cli_options.parse_abort(bad)


def test_retry_options() -> None:
    assert cli_options.retry_options(None, None, None) is None
    assert cli_options.retry_options(3, None, None) == RetryPolicy(3)
    assert cli_options.retry_options(3, "10,2", "failed, gatewaytimeout,failed") == RetryPolicy(
        3, 10, 2, (RetryOn.FAILED, RetryOn.GATEWAY_TIMEOUT)
    )
    assert cli_options.parse_retry_backoff("0.5") == (0.5, None)
    with pytest.raises(typer.BadParameter, match="need --retry"):
        cli_options.retry_options(None, "10", None)
    with pytest.raises(typer.BadParameter, match="SECONDS or SECONDS,FACTOR"):
        cli_options.parse_retry_backoff("1,2,3")
    with pytest.raises(typer.BadParameter, match="'crash' is not one of"):
        cli_options.parse_retry_on("failed,crash")
    with pytest.raises(typer.BadParameter, match="at least one"):
        cli_options.parse_retry_on(" , ")


def test_rollout_options_are_checked_by_the_hub_rules() -> None:
    assert cli_options.rollout_options(None, None, None) is None
    rollout = cli_options.rollout_options(100, "10,2,notified:5", 3)
    assert rollout == Rollout(100, RolloutRamp(10, 2.0, 5), 3)
    cli_options.check_job_options({"rollout": rollout.to_json()}, method_job=True)
    with pytest.raises(typer.BadParameter, match=r"exceeds rollout\.maxPerMinute"):
        cli_options.check_job_options({"rollout": Rollout(10, RolloutRamp(50, 2, 5)).to_json()}, method_job=True)
    with pytest.raises(typer.BadParameter, match="incrementFactor"):
        cli_options.check_job_options({"rollout": Rollout(ramp=RolloutRamp(5, 9.0, 5)).to_json()}, method_job=True)
    with pytest.raises(typer.BadParameter, match="scheduleDeviceMethod jobs only"):
        cli_options.check_job_options({"retry": RetryPolicy(2).to_json()}, method_job=False)


def test_at_times_form_a_grid() -> None:
    assert cli_options.parse_at(["02:00"]) == ((2,), (0,))
    assert cli_options.parse_at(["08:00,08:30", "17:00", "17:30"]) == ((8, 17), (0, 30))
    assert cli_options.parse_at([":15,:45"]) == ((), (15, 45))
    with pytest.raises(typer.BadParameter, match="give all of 08:00,08:30,17:00,17:30"):
        cli_options.parse_at(["08:00,17:30"])
    for bad in ("24:00", "2pm", "07:60", "7"):
        with pytest.raises(typer.BadParameter, match="HH:MM"):
            cli_options.parse_at([bad])
    with pytest.raises(typer.BadParameter, match="not both"):
        cli_options.parse_at(["02:00", ":30"])


def test_week_and_month_days() -> None:
    assert cli_options.parse_week_days("mon-fri") == tuple(list(WeekDay)[:5])
    assert cli_options.parse_week_days("Sunday,wed,mon") == (WeekDay.MONDAY, WeekDay.WEDNESDAY, WeekDay.SUNDAY)
    with pytest.raises(typer.BadParameter, match="runs backwards"):
        cli_options.parse_week_days("fri-mon")
    with pytest.raises(typer.BadParameter, match="not a day"):
        cli_options.parse_week_days("mon,funday")
    with pytest.raises(typer.BadParameter, match="not a day"):
        cli_options.parse_week_days("t")  # tuesday or thursday: too short to tell
    assert cli_options.parse_month_days("15,1,-1,1") == (-1, 1, 15)
    for bad in ("0", "32", "-32", "first"):
        with pytest.raises(typer.BadParameter):
            cli_options.parse_month_days(bad)


def _recurrence(**given: Any) -> dict[str, Any]:
    options: dict[str, Any] = {
        "every": None,
        "unit": None,
        "cron": None,
        "at": [],
        "week_days": None,
        "month_days": None,
        "start": None,
        "end": None,
        "count": None,
    }
    options.update(given)
    return cli_options.recurrence_options(**options).to_json()


def test_recurrence_options_pick_the_unit_from_what_is_given() -> None:
    assert _recurrence(every=10, unit="Second") == {"frequency": "second", "interval": 10}
    assert _recurrence(at=["02:00"], week_days="mon-fri")["frequency"] == Frequency.WEEK
    assert _recurrence(at=["02:00"], month_days="1,-1")["schedule"] == {
        "minutes": [0],
        "hours": [2],
        "monthDays": [-1, 1],
    }
    assert _recurrence(at=["02:00"]) == {"frequency": "day", "interval": 1, "schedule": {"minutes": [0], "hours": [2]}}
    assert _recurrence(at=[":30"])["frequency"] == "hour"
    assert _recurrence(cron="0 */5 * * * *", start="2026-01-01T00:00", count=2) == {
        "cron": "0 */5 * * * *",
        "startTime": "2026-01-01T00:00",
        "count": 2,
    }
    with pytest.raises(typer.BadParameter, match="--every needs --unit"):
        _recurrence(every=2)
    with pytest.raises(typer.BadParameter, match="give --every N --unit UNIT"):
        _recurrence()
    with pytest.raises(typer.BadParameter, match="--cron cannot be combined with --every, --at"):
        _recurrence(cron="* * * * * *", every=1, at=["02:00"])
    with pytest.raises(typer.BadParameter, match="--end 'tomorrow' is not an ISO-8601"):
        _recurrence(every=1, unit="day", end="tomorrow")


def test_check_recurrence_applies_the_hub_rules() -> None:
    weekly = cli_options.recurrence_options(
        every=None,
        unit="day",
        cron=None,
        at=["02:00"],
        week_days="mon",
        month_days=None,
        start=None,
        end=None,
        count=None,
    )
    with pytest.raises(typer.BadParameter, match="weekDays is not allowed with frequency day"):
        cli_options.check_recurrence(weekly, None)
    fine = cli_options.recurrence_options(
        every=1, unit="minute", cron=None, at=[], week_days=None, month_days=None, start=None, end=None, count=None
    )
    cli_options.check_recurrence(fine, "Europe/Berlin")
    with pytest.raises(typer.BadParameter, match="not a known IANA time zone"):
        cli_options.check_recurrence(fine, "Mars/Olympus")


def test_schedule_file_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "schedule.json"
    body = {
        "job": {"type": "scheduleDeviceMethod", "queryCondition": "*", "cloudToDeviceMethod": {"methodName": "m"}},
        "recurrence": {"frequency": "minute", "interval": 1},
    }
    path.write_text(json.dumps(body))
    assert cli_options.read_schedule_file(path) == body
    cli_options.check_schedule_body("nightly", body)
    with pytest.raises(typer.BadParameter, match="scheduleId 'not ok' is invalid"):
        cli_options.check_schedule_body("not ok", body)
    with pytest.raises(typer.BadParameter, match=r"job\.jobId is not allowed"):
        cli_options.check_schedule_body("s", {**body, "job": {**body["job"], "jobId": "x"}})
    path.write_text("[1, 2]")
    with pytest.raises(typer.BadParameter, match="must hold a JSON object"):
        cli_options.read_schedule_file(path)
    path.write_text("{")
    with pytest.raises(typer.BadParameter, match="not valid JSON"):
        cli_options.read_schedule_file(path)
    with pytest.raises(typer.BadParameter, match="cannot be read"):
        cli_options.read_schedule_file(tmp_path / "missing.json")


# -- through the CLI: refused before any connection -----------------------------------------

CONNECTION_STRING = "HostName=hub.test;SharedAccessKeyName=iothubowner;SharedAccessKey=a2V5"


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A real listening socket the CLI is pointed at; a test checks that nobody connected."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    port = server.getsockname()[1]
    monkeypatch.setenv("FLEETHUB_CONNECTION_STRING", CONNECTION_STRING)
    monkeypatch.setenv("FLEETHUB_URL", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("FLEETHUB_CA_CERT", raising=False)
    try:
        yield server
    finally:
        server.close()


def _nobody_connected(server: socket.socket) -> bool:
    try:
        connection, _ = server.accept()
    except BlockingIOError:
        return True
    connection.close()
    return False


CREATE = ["schedule", "create", "s1", "--query", "*"]
EVERY_MINUTE = ["--every", "1", "--unit", "minute"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([*CREATE, "--method", "m", "--every", "1", "--unit", "fortnight"], "--unit must be one of"),
        ([*CREATE, "--method", "m", "--unit", "day", "--at", "02:00", "--week-days", "mon"], "weekDays is not allowed"),
        ([*CREATE, "--method", "m", "--cron", "0 0 2 * *"], "must have 6 fields"),
        ([*CREATE, "--method", "m", *EVERY_MINUTE, "--time-zone", "Nowhere/Land"], "time zone"),
        ([*CREATE, *EVERY_MINUTE], "exactly one of --method NAME and --twin-patch"),
        ([*CREATE, "--method", "m", "--twin-patch", "{}", *EVERY_MINUTE], "exactly one of"),
        ([*CREATE, "--twin-patch", "[]", *EVERY_MINUTE], "must be a JSON object"),
        ([*CREATE, "--twin-patch", "{}", *EVERY_MINUTE, "--retry", "2"], "method schedules"),
        ([*CREATE, "--method", "m", *EVERY_MINUTE, "--max-per-minute", "5000"], "1 to 1000"),
        ([*CREATE, "--method", "m", *EVERY_MINUTE, "--abort", "failed:30"], "TYPE:PERCENT:MIN"),
        ([*CREATE, "--method", "m", *EVERY_MINUTE, "--overlap", "pile"], "pile"),
        (
            ["schedule", "create", "bad id!", "--query", "*", "--method", "m", *EVERY_MINUTE],
            "is invalid",
        ),
        (["schedule", "create", "s1", "--method", "m", *EVERY_MINUTE], "give --query"),
        (["schedule", "create", "s1", "--from-file", "x.json", "--method", "m"], "drop --method"),
        (["schedule", "runs", "s1", "--top", "0"], "greater than or equal to 1"),
        (["schedule-method", "j1", "--query", "*", "--method", "m", "--ramp", "50,2"], "BASE,FACTOR"),
        (["schedule-method", "j1", "--query", "*", "--method", "m", "--retry-on", "failed"], "need --retry"),
        (["schedule-method", "j1", "--query", "*", "--method", "m", "--retry", "20"], "1 to 10"),
        (["schedule-twin-update", "j1", "--query", "*", "--tags", "{}", "--abort", "all:101:1"], "0 to 100"),
    ],
)
def test_bad_values_exit_2_before_any_request(listener: socket.socket, args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert _nobody_connected(listener)


def test_a_good_command_does_connect(listener: socket.socket) -> None:
    # The counterpart of the test above: valid values reach the listener, which hangs up (exit 1).
    accepted: list[bool] = []

    def accept_and_close() -> None:
        listener.setblocking(True)
        listener.settimeout(15)
        connection, _ = listener.accept()
        accepted.append(True)
        connection.close()

    thread = threading.Thread(target=accept_and_close)
    thread.start()
    args = [*CREATE, "--method", "m", *EVERY_MINUTE, "--abort", "failed:30:10", "--retry", "2"]
    result = CliRunner().invoke(cli.app, args)
    thread.join(timeout=20)
    assert accepted, "the CLI never connected"
    assert result.exit_code == 1, result.output


@pytest.mark.parametrize(
    "command",
    [
        ["schedule", "--help"],
        ["schedule", "create", "--help"],
        ["schedule", "runs", "--help"],
        ["schedule-method", "--help"],
        ["schedule-twin-update", "--help"],
    ],
)
def test_help_needs_no_connection_string(monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    monkeypatch.delenv("FLEETHUB_CONNECTION_STRING", raising=False)
    result = CliRunner().invoke(cli.app, command)
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_the_schedule_commands_are_there() -> None:
    group = typer.main.get_command(cli.app).commands["schedule"]  # type: ignore[attr-defined]
    assert set(group.commands) == {"create", "list", "get", "run", "enable", "disable", "delete", "runs"}
