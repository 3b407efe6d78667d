"""Jobs: one method or one twin patch over the devices a query selects.

- ``service``: create, read, cancel and list jobs for the API — ``JobService``;
- ``runner``: starts jobs at their start time under leases, resumes, finishes and purges
  them — ``JobRunner``;
- ``runs``: what every run shares (device set, deadline, cancel, continuous looks);
- ``method_run`` / ``twin_run``: a method job's and a twin job's run;
- ``results``: per-device results and events written in batches — ``ResultWriter``;
- ``gate``: rollout pacing and abort tallies — ``RolloutGate``, ``AbortTally``.
"""
