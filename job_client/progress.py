"""The live progress display of a running job, shared by ``fleethub-jobs watch`` and the hub's demo."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from job_client.models import Job

__all__ = ["JobProgress"]


class JobProgress:
    """A live bar: devices done of all, with succeeded / failed / pending counts and elapsed time.

    Use as a context manager and pass ``update`` as ``wait_for_job``'s ``on_progress``.
    """

    def __init__(self, job_id: str, *, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("succeeded {task.fields[succeeded]}  failed {task.fields[failed]}"),
            TextColumn("pending {task.fields[pending]}"),
            TimeElapsedColumn(),
            console=console or Console(highlight=False, soft_wrap=True),
        )
        self._job_id = job_id
        self._task: TaskID = self._progress.add_task(f"{job_id} queued", total=None, succeeded=0, failed=0, pending=0)

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def update(self, job: Job) -> None:
        stats = job.device_job_statistics
        self._progress.update(
            self._task,
            description=f"{self._job_id} {job.status}",
            total=stats.device_count or None,
            completed=stats.done_count,
            succeeded=stats.succeeded_count,
            failed=stats.failed_count,
            pending=stats.pending_count + stats.running_count,
        )
