"""What the ``fleethub-jobs`` command groups share: the hub target from the global options,
a job client whose errors become exit code 1, JSON and table output, and the rollout-control
options of every command that creates a job."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from job_client import cli_options
from job_client.errors import FleetHubError
from job_client.jobs import JobClient
from job_client.models import Job
from job_client.registry import RegistryClient
from job_client.rollout import option_json

__all__ = [
    "Abort",
    "Continuous",
    "JsonFlag",
    "MaxConcurrency",
    "MaxPerMinute",
    "Ramp",
    "Retry",
    "RetryBackoff",
    "RetryOnOption",
    "Target",
    "echo_json",
    "job_client_of",
    "job_control_members",
    "job_line",
    "new_table",
    "parse_json",
    "parse_start_time",
    "rich_console",
    "show_job",
    "utc_text",
]


@dataclass(frozen=True, slots=True)
class Target:
    connection_string: str | None
    url: str | None
    ca_cert: Path | None

    def _required(self) -> str:
        # Checked here, not by the option parser, so `COMMAND --help` works without one.
        if not self.connection_string:
            typer.echo(
                "error: give the hub's service connection string with --connection-string / -c "
                "or FLEETHUB_CONNECTION_STRING (python -m hub connection-string prints it)",
                err=True,
            )
            raise typer.Exit(2)
        return self.connection_string

    def client(self) -> RegistryClient:
        return RegistryClient.from_connection_string(self._required(), url=self.url, ca_cert=self.ca_cert)

    def jobs(self) -> JobClient:
        return JobClient.from_connection_string(self._required(), url=self.url, ca_cert=self.ca_cert)


def echo_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=True, default=str))


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"{what} is not valid JSON: {exc}") from exc


JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


@contextmanager
def job_client_of(ctx: typer.Context) -> Iterator[JobClient]:
    """A job client whose SDK errors become a message and exit code 1."""
    target: Target = ctx.obj
    try:
        with target.jobs() as client:
            yield client
    except FleetHubError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


def rich_console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def job_line(job: Job) -> str:
    stats = job.device_job_statistics
    line = (
        f"{job.job_id}  {job.type}  {job.status}  devices {stats.device_count}: "
        f"succeeded {stats.succeeded_count}, failed {stats.failed_count}, "
        f"pending {stats.pending_count}, running {stats.running_count}"
    )
    reason = job.failure_reason or job.status_message
    return f"{line}  ({reason})" if reason else line


def show_job(job: Job, as_json: bool) -> None:
    if as_json:
        echo_json(job.to_json())
    else:
        typer.echo(job_line(job))


# Rollout control: the same options on schedule-method, schedule-twin-update and schedule create.
MaxPerMinute = Annotated[
    int | None, typer.Option(min=1, help="Start at most this many devices a minute (with --ramp: its cap).")
]
Ramp = Annotated[
    str | None,
    typer.Option(
        metavar="BASE,FACTOR,notified:N",
        help=f"Exponential rate: {cli_options.RAMP_SYNTAX}; e.g. 50,2,notified:1000 starts at 50/min and "
        "doubles after every 1000 devices notified (succeeded:N counts successes).",
    ),
]
MaxConcurrency = Annotated[int | None, typer.Option(min=1, help="At most this many devices in flight at once.")]
Abort = Annotated[
    list[str] | None,
    typer.Option(
        metavar="TYPE:PERCENT:MIN",
        help="Abort when PERCENT of at least MIN finished devices ended TYPE (failed, timedOut, all); "
        "e.g. failed:30:10. Repeatable.",
    ),
]
Retry = Annotated[
    int | None, typer.Option(min=1, metavar="ATTEMPTS", help="Method jobs: attempts per device, 1 = no retry.")
]
RetryBackoff = Annotated[
    str | None,
    typer.Option(metavar="SECONDS[,FACTOR]", help="Wait between attempts (default 10), times FACTOR each time."),
]
RetryOnOption = Annotated[
    str | None,
    typer.Option(
        metavar="KINDS", help="Comma list of DeviceNotOnline, GatewayTimeout, failed (default the first two)."
    ),
]
Continuous = Annotated[
    bool, typer.Option("--continuous", help="Also reach devices that come to match the query before the deadline.")
]


def job_control_members(
    *,
    method_job: bool,
    max_per_minute: int | None,
    ramp: str | None,
    max_concurrency: int | None,
    abort: list[str] | None,
    retry: int | None = None,
    retry_backoff: str | None = None,
    retry_on: str | None = None,
    continuous: bool,
) -> dict[str, Any]:
    """The rollout-control members of a job request from the options; checked by the hub's rules."""
    options = option_json(
        rollout=cli_options.rollout_options(max_per_minute, ramp, max_concurrency),
        abort=[cli_options.parse_abort(item) for item in abort] if abort else None,
        retry=cli_options.retry_options(retry, retry_backoff, retry_on),
        continuous=continuous,
    )
    cli_options.check_job_options(options, method_job=method_job)
    return options


def parse_start_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"--start-time {text!r} is not an ISO-8601 date and time") from exc


def utc_text(moment: datetime | None) -> str:
    """Compact UTC for tables (``--json`` has the exact times)."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def new_table(*columns: str, title: str | None = None) -> Table:
    # Ids fold rather than end in an ellipsis: a table is read to copy them into the next command.
    table = Table(title=title)
    for i, name in enumerate(columns):
        table.add_column(name, no_wrap=i == 0, overflow="fold" if i == 0 else "ellipsis")
    return table
