"""The SDK's public surface: ``__all__`` is explicit, sorted, importable and deliberate."""

from __future__ import annotations

import types

import job_client

EXPECTED = {
    "AbortCriterion",
    "ArgumentInvalidError",
    "AsyncJobClient",
    "AsyncRegistryClient",
    "BadRequestError",
    "BulkError",
    "BulkResult",
    "Certificate",
    "CertificateAlreadyExistsError",
    "CertificateNotFoundError",
    "ConflictError",
    "ConnectionState",
    "Device",
    "DeviceAlreadyExistsError",
    "DeviceJobResult",
    "DeviceJobStatus",
    "DeviceNotFoundError",
    "DeviceNotOnlineError",
    "DeviceReplyError",
    "DeviceSpec",
    "DeviceStatus",
    "FailureType",
    "FleetHubConnectionError",
    "FleetHubError",
    "FleetHubTimeoutError",
    "ForbiddenError",
    "Frequency",
    "GatewayTimeoutError",
    "Job",
    "JobAlreadyExistsError",
    "JobClient",
    "JobError",
    "JobEvent",
    "JobNotFoundError",
    "JobStatistics",
    "JobStatus",
    "JobTemplate",
    "JobType",
    "MethodParams",
    "MethodResult",
    "MonthlyOccurrence",
    "NotFoundError",
    "Page",
    "PreconditionFailedError",
    "RateIncreaseCriterion",
    "Recurrence",
    "RecurrenceSchedule",
    "RegistryClient",
    "RetryOn",
    "RetryPolicy",
    "Rollout",
    "RolloutRamp",
    "Schedule",
    "ScheduleNotFoundError",
    "ScheduleOverlap",
    "ScheduleRun",
    "ScheduleState",
    "ServerError",
    "ServiceCredentials",
    "ServiceHttp",
    "ServiceUnavailableError",
    "ThrottlingError",
    "Twin",
    "TwinProperties",
    "UnauthorizedError",
    "WeekDay",
}


def test_all_is_the_deliberate_public_surface() -> None:
    assert set(job_client.__all__) == EXPECTED
    assert len(job_client.__all__) == len(EXPECTED)  # no duplicates
    assert list(job_client.__all__) == sorted(job_client.__all__)


def test_every_exported_name_exists() -> None:
    for name in job_client.__all__:
        assert getattr(job_client, name) is not None, name


def test_no_public_name_is_left_out_of_all() -> None:
    # Submodules become package attributes once imported; only the names the package defines count.
    public = {
        name
        for name, value in vars(job_client).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType) and name != "annotations"
    }
    assert public - set(job_client.__all__) == set()
