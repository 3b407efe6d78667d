"""Prometheus counters for what operators watch in jobs and schedules (served at ``/metrics``).

They are process-wide, like every Prometheus client metric: hubs in one process (tests) add to
the same counters, so readers compare values before and after, never absolute ones."""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["DEVICE_RESULTS", "JOBS_FINISHED", "RETRIES", "SCHEDULE_RUNS"]

JOBS_FINISHED = Counter(
    "fleethub_jobs_finished",
    "Jobs that ended, by type and status (failed includes jobs stopped by an abort criterion).",
    ["type", "status", "reason"],
)
DEVICE_RESULTS = Counter(
    "fleethub_job_device_results",
    "Final per-device results of jobs run on this node, by job type and status.",
    ["type", "status"],
)
RETRIES = Counter(
    "fleethub_job_retries",
    "Device attempts a job's retry policy scheduled again, by the outcome that caused it.",
    ["outcome"],
)
SCHEDULE_RUNS = Counter(
    "fleethub_schedule_runs",
    "Due schedule runs, by what became of them: created, skipped or queued (the previous run "
    "was still active), missed (later than the grace period), faulted, or requested (run now).",
    ["outcome"],
)
