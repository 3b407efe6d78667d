"""``fleethub-jobs schedule ...``: recurring jobs: create or replace, list, show, run now,
enable, disable, delete, and their latest runs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from job_client import cli_options
from job_client.cli_common import (
    Abort,
    Continuous,
    JsonFlag,
    MaxConcurrency,
    MaxPerMinute,
    Ramp,
    Retry,
    RetryBackoff,
    RetryOnOption,
    echo_json,
    job_client_of,
    job_control_members,
    new_table,
    parse_json,
    rich_console,
    show_job,
    utc_text,
)
from job_client.jobs import DEFAULT_MAX_EXECUTION_SECONDS, schedule_body
from job_client.models import MethodParams
from job_client.schedules import JobTemplate, Recurrence, Schedule, ScheduleOverlap, ScheduleRun

__all__ = ["schedule_app"]

schedule_app = typer.Typer(help="Recurring jobs: define, run now, enable, disable, see runs.", no_args_is_help=True)


def _recurrence_text(schedule: Schedule) -> str:
    if schedule.recurrence is None:
        return json.dumps(schedule.raw.get("recurrence"))
    return schedule.recurrence.describe()


def _show_schedule(schedule: Schedule, as_json: bool) -> None:
    if as_json:
        echo_json(schedule.to_json())
        return
    table = Table("field", "value", show_header=False, title=f"schedule {schedule.schedule_id}")
    job = schedule.job
    what = job.get("cloudToDeviceMethod", {}).get("methodName") if "cloudToDeviceMethod" in job else "updateTwin"
    rows = [
        ("state", str(schedule.state)),
        ("recurrence", _recurrence_text(schedule)),
        ("timeZone", schedule.time_zone),
        ("overlap", str(schedule.overlap)),
        ("job", f"{job.get('type', '')} {what or ''} where {job.get('queryCondition', '')}"),
        ("nextRunTime (UTC)", utc_text(schedule.next_run_time)),
        ("lastRunTime (UTC)", utc_text(schedule.last_run_time)),
        ("lastRunJobId", schedule.last_run_job_id or ""),
        ("lastRunStatus", str(schedule.last_run_status or "")),
        ("runCount", str(schedule.run_count)),
    ]
    if schedule.fault_reason:
        rows.append(("faultReason", schedule.fault_reason))
    for name, value in rows:
        table.add_row(name, value)
    rich_console().print(table)


ScheduleId = Annotated[str, typer.Argument(help="1-47 letters, digits or '-'.")]


@schedule_app.command("create")
def schedule_create(
    ctx: typer.Context,
    schedule_id: ScheduleId,
    query_condition: Annotated[
        str | None, typer.Option("--query", help="Which devices: a WHERE condition or '*'.")
    ] = None,
    method: Annotated[str | None, typer.Option(help="Each run calls this direct method.")] = None,
    payload: Annotated[str, typer.Option(help="JSON payload of the method.")] = "null",
    response_timeout: Annotated[int, typer.Option(min=5, max=300)] = 30,
    connect_timeout: Annotated[int, typer.Option(min=0, max=300)] = 0,
    twin_patch: Annotated[
        str | None, typer.Option(help='Each run applies this twin patch: {"tags": .., "properties": {"desired": ..}}.')
    ] = None,
    max_execution_time: Annotated[
        int, typer.Option(min=1, help="Seconds each run may take.")
    ] = DEFAULT_MAX_EXECUTION_SECONDS,
    every: Annotated[int | None, typer.Option(min=1, metavar="N", help="Run every N --unit.")] = None,
    unit: Annotated[str | None, typer.Option(help="second, minute, hour, day, week or month.")] = None,
    cron: Annotated[str | None, typer.Option(help='Six cron fields, seconds first, e.g. "0 0 2 * * mon-fri".')] = None,
    at: Annotated[
        list[str] | None, typer.Option(metavar="HH:MM", help="Time(s) of day; :MM for a minute of every hour.")
    ] = None,
    week_days: Annotated[str | None, typer.Option(help="Days of a weekly schedule: mon,wed or mon-fri.")] = None,
    month_days: Annotated[
        str | None, typer.Option(help="Days of a monthly schedule: 1,15,-1 (-1 = the month's last day).")
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="ISO-8601 first possible run (default now); no offset = --time-zone.")
    ] = None,
    end: Annotated[str | None, typer.Option(help="ISO-8601 time after which it never runs.")] = None,
    count: Annotated[int | None, typer.Option(min=1, help="At most this many runs.")] = None,
    time_zone: Annotated[str | None, typer.Option(help="IANA time zone of the times, e.g. Europe/Berlin.")] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it disabled.")] = False,
    overlap: Annotated[
        ScheduleOverlap | None, typer.Option(help="A run due while the last one is active: skip (default) or queue.")
    ] = None,
    max_per_minute: MaxPerMinute = None,
    ramp: Ramp = None,
    max_concurrency: MaxConcurrency = None,
    abort: Abort = None,
    retry: Retry = None,
    retry_backoff: RetryBackoff = None,
    retry_on: RetryOnOption = None,
    continuous: Continuous = False,
    from_file: Annotated[
        Path | None, typer.Option(help="The whole schedule body as JSON (then no other job or timing option).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create or replace a schedule: a method call or twin patch on the matching devices, run on a recurrence."""
    if from_file is not None:
        given = [
            f"--{name.replace('_', '-')}"
            for name in ctx.params
            if name not in ("schedule_id", "from_file", "as_json") and _given(ctx, name)
        ]
        if given:
            raise typer.BadParameter(f"--from-file holds the whole schedule; drop {', '.join(given)}")
        body = cli_options.read_schedule_file(from_file)
    else:
        body = _schedule_from_options(
            query_condition=query_condition,
            method=method,
            payload=payload,
            response_timeout=response_timeout,
            connect_timeout=connect_timeout,
            twin_patch=twin_patch,
            max_execution_time=max_execution_time,
            recurrence=cli_options.recurrence_options(
                every=every,
                unit=unit,
                cron=cron,
                at=at or [],
                week_days=week_days,
                month_days=month_days,
                start=start,
                end=end,
                count=count,
            ),
            time_zone=time_zone,
            enabled=not disabled,
            overlap=overlap,
            options=dict(
                max_per_minute=max_per_minute,
                ramp=ramp,
                max_concurrency=max_concurrency,
                abort=abort,
                retry=retry,
                retry_backoff=retry_backoff,
                retry_on=retry_on,
                continuous=continuous,
            ),
        )
    cli_options.check_schedule_body(schedule_id, body)
    with job_client_of(ctx) as client:
        schedule = client.put_schedule(schedule_id, body)
    _show_schedule(schedule, as_json)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the option was given (on the command line or by its environment variable)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


def _schedule_from_options(
    *,
    query_condition: str | None,
    method: str | None,
    payload: str,
    response_timeout: int,
    connect_timeout: int,
    twin_patch: str | None,
    max_execution_time: int,
    recurrence: Recurrence,
    time_zone: str | None,
    enabled: bool,
    overlap: ScheduleOverlap | None,
    options: dict[str, Any],
) -> dict[str, Any]:
    if query_condition is None:
        raise typer.BadParameter("give --query (which devices: a WHERE condition or '*'), or --from-file")
    if (method is None) == (twin_patch is None):
        raise typer.BadParameter("give exactly one of --method NAME and --twin-patch JSON")
    method_job = method is not None
    if not method_job and any(options[name] is not None for name in ("retry", "retry_backoff", "retry_on")):
        raise typer.BadParameter("--retry applies to method schedules (--method) only")
    job_options = job_control_members(method_job=method_job, **options)
    cli_options.check_recurrence(recurrence, time_zone)
    template: JobTemplate
    if method is not None:
        params = MethodParams(method, parse_json(payload, "--payload"), response_timeout, connect_timeout)
        template = JobTemplate.device_method(query_condition, params, max_execution_time_in_seconds=max_execution_time)
    else:
        patch = parse_json(twin_patch or "", "--twin-patch")
        if not isinstance(patch, dict):
            raise typer.BadParameter("--twin-patch must be a JSON object")
        template = JobTemplate.twin_update(query_condition, patch, max_execution_time_in_seconds=max_execution_time)
    template = replace(template, options=job_options)
    return schedule_body(template, recurrence, time_zone=time_zone, enabled=enabled, overlap=overlap)


@schedule_app.command("list")
def schedule_list(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """List schedules with their state and next run."""
    with job_client_of(ctx) as client:
        schedules = list(client.list_schedules())
    if as_json:
        echo_json([schedule.to_json() for schedule in schedules])
        return
    table = new_table("scheduleId", "state", "recurrence", "timeZone", "next run (UTC)", "last run", "runs")
    for schedule in schedules:
        table.add_row(
            schedule.schedule_id,
            str(schedule.state),
            _recurrence_text(schedule),
            schedule.time_zone,
            utc_text(schedule.next_run_time),
            str(schedule.last_run_status or ""),
            str(schedule.run_count),
        )
    rich_console().print(table)


@schedule_app.command("get")
def schedule_get(ctx: typer.Context, schedule_id: ScheduleId, as_json: JsonFlag = False) -> None:
    """Show a schedule: its state, recurrence, next and last run."""
    with job_client_of(ctx) as client:
        schedule = client.get_schedule(schedule_id)
    _show_schedule(schedule, as_json)


@schedule_app.command("run")
def schedule_run(ctx: typer.Context, schedule_id: ScheduleId, as_json: JsonFlag = False) -> None:
    """Run a schedule once now (also when disabled) and show the job it created."""
    with job_client_of(ctx) as client:
        job = client.run_schedule(schedule_id)
    show_job(job, as_json)


@schedule_app.command("enable")
def schedule_enable(ctx: typer.Context, schedule_id: ScheduleId, as_json: JsonFlag = False) -> None:
    """Let a schedule's runs come due again."""
    with job_client_of(ctx) as client:
        schedule = client.enable_schedule(schedule_id)
    _show_schedule(schedule, as_json)


@schedule_app.command("disable")
def schedule_disable(ctx: typer.Context, schedule_id: ScheduleId, as_json: JsonFlag = False) -> None:
    """Stop a schedule's runs from coming due (schedule run still works)."""
    with job_client_of(ctx) as client:
        schedule = client.disable_schedule(schedule_id)
    _show_schedule(schedule, as_json)


@schedule_app.command("delete")
def schedule_delete(ctx: typer.Context, schedule_id: ScheduleId, as_json: JsonFlag = False) -> None:
    """Delete a schedule; the jobs of its runs stay."""
    with job_client_of(ctx) as client:
        client.delete_schedule(schedule_id)
    if as_json:
        echo_json({"scheduleId": schedule_id, "deleted": True})
    else:
        typer.echo(f"deleted schedule {schedule_id}")


def _run_row(run: ScheduleRun) -> list[str]:
    stats = run.device_job_statistics
    return [
        run.job_id,
        str(run.status),
        utc_text(run.created_time),
        f"{stats.device_count}: {stats.succeeded_count} ok, {stats.failed_count} failed",
        run.failure_reason or "",
    ]


@schedule_app.command("runs")
def schedule_runs(
    ctx: typer.Context,
    schedule_id: ScheduleId,
    top: Annotated[int | None, typer.Option(min=1, help="At most this many runs (default: the hub's 30).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """The latest runs of a schedule, newest first; `fleethub-jobs results JOB_ID` shows one run's devices."""
    with job_client_of(ctx) as client:
        runs = client.list_schedule_runs(schedule_id, top)
    if as_json:
        echo_json([run.to_json() for run in runs])
        return
    table = new_table(
        "jobId", "status", "created (UTC)", "devices", "reason",
        title=f"schedule {schedule_id}: {len(runs)} runs, newest first",
    )  # fmt: skip
    for run in runs:
        table.add_row(*_run_row(run))
    rich_console().print(table)
