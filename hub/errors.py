"""The hub's error tree; every failure a caller can act on is one of these.

    HubError                         code: IoT Hub error code, message: human text
    +-- BadRequestError              ArgumentInvalid (400)
    |   +-- InvalidDeviceIdError     ArgumentInvalid
    |   +-- TwinLimitError           ArgumentInvalid (size, depth, key rules)
    |   +-- PayloadTooLargeError     ArgumentInvalid (method payloads over 128 KB)
    |   +-- QuerySyntaxError         BadRequest (the twin query language)
    +-- UnauthorizedError            IotHubUnauthorizedAccess (401)
    +-- ForbiddenError               IotHubUnauthorized (403)
    +-- NotFoundError                (404)
    |   +-- DeviceNotFoundError      DeviceNotFound
    |   +-- DeviceNotOnlineError     DeviceNotOnline
    |   +-- JobNotFoundError         JobNotFound
    |   +-- ScheduleNotFoundError    ScheduleNotFound
    |   +-- CertificateNotFoundError CertificateNotFound
    +-- ConflictError                (409)
    |   +-- DeviceAlreadyExistsError DeviceAlreadyExists
    |   +-- JobAlreadyExistsError    JobAlreadyExists
    |   +-- CertificateAlreadyExistsError CertificateAlreadyExists
    +-- PreconditionFailedError      PreconditionFailed (412, etag mismatch)
    +-- ConcurrencyConflictError     internal: a versioned write lost a race; callers retry
    +-- GatewayTimeoutError          GatewayTimeout (504, no reply from the device in time)
    +-- DeviceReplyError             InvalidDeviceReply (502, a reply the hub cannot pass on)
    +-- ThrottledError               ThrottlingException (429)
    +-- ServiceUnavailableError      ServiceUnavailable (503, e.g. the database is down)

Facts travel as attributes (``device_id``, ``code``); the HTTP status is chosen in one
place, ``hub.api.errors``, and the MQTT status in ``hub.gateway``.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "BadRequestError",
    "CertificateAlreadyExistsError",
    "CertificateNotFoundError",
    "ConcurrencyConflictError",
    "ConflictError",
    "DeviceAlreadyExistsError",
    "DeviceNotFoundError",
    "DeviceNotOnlineError",
    "DeviceReplyError",
    "ForbiddenError",
    "GatewayTimeoutError",
    "HubError",
    "InvalidDeviceIdError",
    "JobAlreadyExistsError",
    "JobNotFoundError",
    "NotFoundError",
    "PayloadTooLargeError",
    "PreconditionFailedError",
    "QuerySyntaxError",
    "ScheduleNotFoundError",
    "ServiceUnavailableError",
    "ThrottledError",
    "TwinLimitError",
    "UnauthorizedError",
]


class HubError(Exception):
    """Base of every error the hub raises on purpose."""

    code: ClassVar[str] = "ServerError"

    def __init__(self, message: str, *, device_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.device_id = device_id


class BadRequestError(HubError):
    code = "ArgumentInvalid"


class InvalidDeviceIdError(BadRequestError):
    pass


class TwinLimitError(BadRequestError):
    pass


class PayloadTooLargeError(BadRequestError):
    pass


class QuerySyntaxError(BadRequestError):
    """A twin query that does not parse or type-check; ``position`` is a 0-based offset."""

    code = "BadRequest"

    def __init__(self, message: str, *, position: int | None = None) -> None:
        super().__init__(message)
        self.position = position


class UnauthorizedError(HubError):
    code = "IotHubUnauthorizedAccess"


class ForbiddenError(HubError):
    code = "IotHubUnauthorized"


class NotFoundError(HubError):
    code = "NotFound"


class DeviceNotFoundError(NotFoundError):
    code = "DeviceNotFound"


class DeviceNotOnlineError(NotFoundError):
    code = "DeviceNotOnline"


class JobNotFoundError(NotFoundError):
    code = "JobNotFound"


class ScheduleNotFoundError(NotFoundError):
    code = "ScheduleNotFound"


class CertificateNotFoundError(NotFoundError):
    code = "CertificateNotFound"


class ConflictError(HubError):
    code = "Conflict"


class CertificateAlreadyExistsError(ConflictError):
    code = "CertificateAlreadyExists"


class DeviceAlreadyExistsError(ConflictError):
    code = "DeviceAlreadyExists"


class JobAlreadyExistsError(ConflictError):
    code = "JobAlreadyExists"


class PreconditionFailedError(HubError):
    code = "PreconditionFailed"


class ConcurrencyConflictError(HubError):
    code = "PreconditionFailed"


class GatewayTimeoutError(HubError):
    code = "GatewayTimeout"


class DeviceReplyError(HubError):
    code = "InvalidDeviceReply"


class ThrottledError(HubError):
    code = "ThrottlingException"


class ServiceUnavailableError(HubError):
    code = "ServiceUnavailable"
