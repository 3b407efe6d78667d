"""Schedules: recurring jobs.

- ``service``: create, read, enable, disable, delete schedules and list their runs, and
  create a run's job — ``ScheduleService``;
- ``scheduler``: starts due runs under leases (misfires, overlap) — ``Scheduler``.
"""
