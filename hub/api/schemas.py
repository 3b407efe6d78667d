"""HTTP shapes in IoT Hub's JSON, and the mappers between them and domain values."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hub.domain.devices import AuthKind, Device, DeviceAuth, DeviceStatus, SymmetricKeys, normalize_thumbprint
from hub.domain.twin import isoformat
from hub.engine.sessions.registry import DeviceSpec
from hub.errors import BadRequestError

__all__ = [
    "ERROR_RESPONSES",
    "JOB_BODY_DOC",
    "QUERY_BODY_DOC",
    "SCHEDULE_BODY_DOC",
    "TWIN_BODY_DOC",
    "AuthenticationIn",
    "BulkDeviceIn",
    "BulkResultOut",
    "CertificateIn",
    "CertificateListOut",
    "CertificateOut",
    "DeviceIn",
    "DeviceJobOut",
    "DeviceOut",
    "ErrorOut",
    "HealthOut",
    "JobEventOut",
    "JobOut",
    "JobQueryResultOut",
    "MethodInvocationIn",
    "MethodResultOut",
    "RegistryStatisticsOut",
    "ScheduleOut",
    "ScheduleRunOut",
    "ServiceStatisticsOut",
    "TwinOut",
    "device_out",
    "paged_response",
    "spec_from",
]

_NEVER = "0001-01-01T00:00:00Z"


def paged_response(body: Any, continuation: str | None, item_type: str) -> JSONResponse:
    """One page of a listing or query, as IoT Hub answers it: ``x-ms-item-type`` always,
    ``x-ms-continuation`` while more pages follow."""
    headers = {"x-ms-item-type": item_type}
    if continuation:
        headers["x-ms-continuation"] = continuation
    return JSONResponse(content=body, headers=headers)


class _Strict(BaseModel):
    """A request body: an unknown field is a 400 that names it, never silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SymmetricKeyIn(_Strict):
    primaryKey: str | None = None
    secondaryKey: str | None = None


class X509ThumbprintIn(_Strict):
    primaryThumbprint: str | None = None
    secondaryThumbprint: str | None = None


class AuthenticationIn(_Strict):
    type: str | None = None
    symmetricKey: SymmetricKeyIn | None = None
    x509Thumbprint: X509ThumbprintIn | None = None


class CapabilitiesIn(_Strict):
    iotEdge: bool | None = None


class DeviceIn(_Strict):
    """A device identity as ``PUT /devices/{id}`` takes it. The read-only fields the SDKs send
    back with a device they read (Python's Device model, Node's Device class) are accepted and
    ignored, as IoT Hub does."""

    deviceId: str | None = None
    status: DeviceStatus = DeviceStatus.ENABLED
    statusReason: str | None = None
    authentication: AuthenticationIn | None = None
    etag: str | None = None
    capabilities: CapabilitiesIn | None = None
    # Read-only: ignored.
    generationId: Any = None
    connectionState: Any = None
    connectionStateUpdatedTime: Any = None
    statusUpdatedTime: Any = None
    lastActivityTime: Any = None
    cloudToDeviceMessageCount: Any = None
    deviceScope: Any = None
    parentScopes: Any = None
    modelId: Any = None


class BulkDeviceIn(DeviceIn):
    """One entry of ``POST /devices`` (IoT Hub's ExportImportDevice)."""

    id: str
    importMode: str = "create"
    eTag: str | None = None
    moduleId: str | None = None
    twinETag: Any = None
    tags: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None

    @field_validator("id")
    @classmethod
    def _id_is_unicode(cls, value: str) -> str:
        # The id is echoed in the bulk result; a lone surrogate (valid as a JSON \u escape) has no UTF-8 form.
        try:
            value.encode()
        except UnicodeEncodeError:
            raise ValueError("not valid Unicode (it holds a lone surrogate)") from None
        return value


class MethodInvocationIn(_Strict):
    methodName: Any = None
    payload: Any = None
    responseTimeoutInSeconds: Any = None
    connectTimeoutInSeconds: Any = None
    timeoutInSeconds: Any = Field(
        default=None,
        description="the 2016 preview's name of responseTimeoutInSeconds, used when that is absent "
        "(Microsoft's dmpatterns samples still send it)",
    )

    @property
    def response_timeout(self) -> Any:
        return self.timeoutInSeconds if self.responseTimeoutInSeconds is None else self.responseTimeoutInSeconds


def _keys(auth: AuthenticationIn | None) -> SymmetricKeys | None:
    if auth is None or auth.symmetricKey is None:
        return None
    primary, secondary = auth.symmetricKey.primaryKey, auth.symmetricKey.secondaryKey
    if not primary and not secondary:
        return None
    generated = SymmetricKeys.generate()
    return SymmetricKeys(primary or generated.primary, secondary or generated.secondary)


_AUTH_KINDS = {kind.value.lower(): kind for kind in AuthKind}


def _auth(auth: AuthenticationIn | None) -> DeviceAuth | None:
    """The device's authentication kind and thumbprints; None: sas (create) or keep (update)."""
    if auth is None:
        return None
    thumbprints = auth.x509Thumbprint
    primary = thumbprints.primaryThumbprint if thumbprints is not None else None
    secondary = thumbprints.secondaryThumbprint if thumbprints is not None else None
    if auth.type is None:
        # What the Node SDK normalizes to, and what IoT Hub infers: thumbprints mean selfSigned.
        kind = AuthKind.SELF_SIGNED if primary or secondary else AuthKind.SAS
    else:
        found = _AUTH_KINDS.get(auth.type.lower())
        if found is None:
            raise BadRequestError(
                f"authentication.type {auth.type!r} is not one of {', '.join(k.value for k in AuthKind)}"
            )
        kind = found
    if kind is not AuthKind.SELF_SIGNED:
        # SDKs send empty thumbprints along with other kinds; only real values are an error.
        return DeviceAuth(kind, primary or None, secondary or None)
    return DeviceAuth(
        kind,
        normalize_thumbprint(primary, "x509Thumbprint.primaryThumbprint") if primary else None,
        normalize_thumbprint(secondary, "x509Thumbprint.secondaryThumbprint") if secondary else None,
    )


def spec_from(body: DeviceIn) -> DeviceSpec:
    if body.capabilities is not None and body.capabilities.iotEdge:
        raise BadRequestError("IoT Edge devices (capabilities.iotEdge: true) are not supported")
    auth = _auth(body.authentication)
    keys = _keys(body.authentication)
    if keys is not None:
        if auth is not None and not auth.uses_keys:
            raise BadRequestError(f"authentication.symmetricKey is for sas devices, not {auth.kind.value}")
        _check_key(keys.primary)
        _check_key(keys.secondary)
    return DeviceSpec(keys=keys, status=body.status, status_reason=body.statusReason, auth=auth)


def _check_key(key: str) -> None:
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        raise BadRequestError("symmetric keys must be base64") from None
    if not 16 <= len(raw) <= 64:
        raise BadRequestError("symmetric keys must decode to 16-64 bytes")


def _time(moment: datetime | None) -> str:
    return isoformat(moment) if moment else _NEVER


def device_out(device: Device, *, with_keys: bool = True) -> dict[str, Any]:
    keys = (
        {"primaryKey": device.keys.primary, "secondaryKey": device.keys.secondary}
        if with_keys and device.keys is not None
        else {"primaryKey": None, "secondaryKey": None}
    )
    return {
        "deviceId": device.device_id,
        "generationId": device.generation_id,
        "etag": device.etag,
        "connectionState": device.connection_state.value,
        "status": device.status.value,
        "statusReason": device.status_reason,
        "connectionStateUpdatedTime": _time(device.connection_state_updated_time),
        "statusUpdatedTime": _time(device.status_updated_time),
        "lastActivityTime": _time(device.last_activity_time),
        "cloudToDeviceMessageCount": 0,
        "authentication": {
            "symmetricKey": keys,
            "x509Thumbprint": device.auth.thumbprint_document(),
            "type": device.auth.kind.value,
        },
        "capabilities": {"iotEdge": False},
    }


# -- Response shapes, declared for the OpenAPI document (routes build the bodies above) --------


class ErrorOut(BaseModel):
    """IoT Hub's error body; the ``iothub-errorcode`` header repeats the code."""

    Message: str = Field(description="ErrorCode:{code};{text}")
    ExceptionMessage: str


class _Thumbprints(BaseModel):
    primaryThumbprint: str | None
    secondaryThumbprint: str | None


class _KeysOut(BaseModel):
    primaryKey: str | None
    secondaryKey: str | None


class _AuthenticationOut(BaseModel):
    symmetricKey: _KeysOut
    x509Thumbprint: _Thumbprints
    type: str


class _Capabilities(BaseModel):
    iotEdge: bool


class DeviceOut(BaseModel):
    deviceId: str
    generationId: str
    etag: str
    connectionState: str
    status: str
    statusReason: str | None
    connectionStateUpdatedTime: str
    statusUpdatedTime: str
    lastActivityTime: str
    cloudToDeviceMessageCount: int
    authentication: _AuthenticationOut
    capabilities: _Capabilities


class _TwinProperties(BaseModel):
    desired: dict[str, Any]
    reported: dict[str, Any]


class TwinOut(BaseModel):
    deviceId: str
    etag: str
    deviceEtag: str
    status: str
    statusReason: str | None
    statusUpdateTime: str | None
    connectionState: str
    lastActivityTime: str | None
    cloudToDeviceMessageCount: int
    authenticationType: str
    x509Thumbprint: _Thumbprints
    version: int
    capabilities: _Capabilities
    tags: dict[str, Any]
    properties: _TwinProperties


class MethodResultOut(BaseModel):
    status: int
    payload: Any = None


class _BulkErrorOut(BaseModel):
    deviceId: str
    errorCode: str
    errorStatus: str
    status: int


class BulkResultOut(BaseModel):
    isSuccessful: bool
    errors: list[_BulkErrorOut]
    warnings: list[Any]


class _JobStatistics(BaseModel):
    deviceCount: int
    failedCount: int
    succeededCount: int
    runningCount: int
    pendingCount: int
    canceledCount: int


class JobOut(BaseModel):
    model_config = ConfigDict(extra="allow")  # cloudToDeviceMethod or updateTwin, by type

    jobId: str
    type: str
    status: str
    queryCondition: str
    createdTime: str
    startTime: str
    endTime: str | None
    maxExecutionTimeInSeconds: int
    failureReason: str | None
    statusMessage: str | None
    deviceJobStatistics: _JobStatistics


class JobQueryResultOut(BaseModel):
    """The job listing for the Python SDK's generated client (``hub.api.quirks``)."""

    type: str
    items: list[JobOut]
    continuationToken: str | None


class JobEventOut(BaseModel):
    time: str
    type: str
    message: str
    deviceId: str | None


class DeviceJobOut(BaseModel):
    model_config = ConfigDict(extra="allow")  # outcome, error

    deviceId: str
    jobId: str
    jobType: str
    status: str
    startTimeUtc: str | None
    endTimeUtc: str | None
    createdDateTimeUtc: str | None
    lastUpdatedDateTimeUtc: str | None


class RegistryStatisticsOut(BaseModel):
    totalDeviceCount: int
    enabledDeviceCount: int
    disabledDeviceCount: int


class ServiceStatisticsOut(BaseModel):
    connectedDeviceCount: int


class CertificatePropertiesIn(_Strict):
    certificate: str = Field(description="one CA certificate, PEM or base64 DER")
    isVerified: bool | None = None  # registration is the verification (hub.api.routes.certificates)
    # Read-only: ignored.
    subject: Any = None
    expiry: Any = None
    thumbprint: Any = None
    created: Any = None
    updated: Any = None


class CertificateIn(_Strict):
    properties: CertificatePropertiesIn
    # Read-only: ignored.
    id: Any = None
    name: Any = None
    etag: Any = None
    type: Any = None


class _CertificatePropertiesOut(BaseModel):
    subject: str
    expiry: str
    thumbprint: str
    isVerified: bool
    created: str
    updated: str
    certificate: str


class CertificateOut(BaseModel):
    properties: _CertificatePropertiesOut
    id: str
    name: str
    etag: str
    type: str


class CertificateListOut(BaseModel):
    value: list[CertificateOut]


class HealthOut(BaseModel):
    status: str
    connectedDevices: int | None = None
    detail: str | None = None


# Every route that takes input or needs a token can answer with IoT Hub's error body; "4XX"
# also keeps FastAPI from documenting the 422 it never sends (validation errors are 400).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorOut, "description": "IoT Hub error; header iothub-errorcode holds the code"},
    503: {"model": ErrorOut, "description": "ServiceUnavailable: the database cannot be reached"},
}


# Request bodies that routes take as plain JSON objects (their services check every field and
# answer 400 with the reason), documented so that clients and fuzzers see the expected shape.
_OBJECT: dict[str, Any] = {"type": "object", "additionalProperties": True}


def request_body_doc(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    """``openapi_extra`` for a route whose JSON body is a ``dict[str, Any]`` parameter."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"requestBody": {"content": {"application/json": {"schema": schema}}, "required": True}}


QUERY_BODY_DOC = request_body_doc({"query": {"type": "string"}}, ["query"])
TWIN_BODY_DOC = request_body_doc(
    {"tags": _OBJECT, "properties": {"type": "object", "properties": {"desired": _OBJECT}}, "etag": {"type": "string"}}
)
JOB_BODY_DOC = request_body_doc(
    {
        "jobId": {"type": "string"},
        "type": {"type": "string", "enum": ["scheduleDeviceMethod", "scheduleUpdateTwin"]},
        "queryCondition": {"type": "string"},
        "cloudToDeviceMethod": {
            "type": "object",
            "properties": {
                "methodName": {"type": "string"},
                "payload": {},
                "responseTimeoutInSeconds": {"type": "integer"},
                "connectTimeoutInSeconds": {"type": "integer"},
            },
            "required": ["methodName"],
        },
        "updateTwin": TWIN_BODY_DOC["requestBody"]["content"]["application/json"]["schema"],
        "startTime": {"type": "string", "format": "date-time"},
        "maxExecutionTimeInSeconds": {"type": "integer"},
        # fleethub's rollout control (hub.domain.rollout documents every field).
        "rollout": _OBJECT,
        "abort": {"oneOf": [_OBJECT, {"type": "array"}]},
        "retry": _OBJECT,
        "continuous": {"type": "boolean"},
    },
    ["type"],
)


# -- Schedules ----------------------------------------------------------------------------------


class ScheduleOut(BaseModel):
    """A schedule (hub.domain.schedules): its definition and what the scheduler made of it."""

    scheduleId: str
    job: dict[str, Any] = Field(description="the job request each run creates, without jobId and startTime")
    recurrence: dict[str, Any] = Field(description="{frequency, interval, schedule, ...} or {cron}; times UTC")
    timeZone: str
    enabled: bool
    overlap: str = Field(description="skip or queue")
    state: str = Field(description="enabled, disabled, completed or faulted")
    nextRunTime: str | None
    lastRunTime: str | None
    lastRunJobId: str | None
    lastRunStatus: str | None = Field(description="the last run's job status now; null if none or purged")
    runCount: int
    faultReason: str | None
    createdTime: str
    updatedTime: str


class ScheduleRunOut(BaseModel):
    """One run of a schedule; its log is ``GET /jobs/v2/{jobId}/events``."""

    jobId: str
    status: str
    createdTime: str
    startTime: str
    endTime: str | None
    failureReason: str | None
    statusMessage: str | None
    deviceJobStatistics: _JobStatistics


_JOB_TEMPLATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        name: schema
        for name, schema in JOB_BODY_DOC["requestBody"]["content"]["application/json"]["schema"]["properties"].items()
        if name not in ("jobId", "startTime")
    },
    "required": ["type"],
}
SCHEDULE_BODY_DOC = request_body_doc(
    {
        "scheduleId": {"type": "string"},
        "job": _JOB_TEMPLATE_SCHEMA,
        "recurrence": {
            "type": "object",
            "description": "{frequency: second|minute|hour|day|week|month, interval, startTime, endTime, count, "
            "schedule: {minutes, hours, weekDays, monthDays, monthlyOccurrences}} or {cron: 6 fields, seconds first}",
            "properties": {
                "frequency": {"type": "string", "enum": ["second", "minute", "hour", "day", "week", "month"]},
                "interval": {"type": "integer"},
                "cron": {"type": "string"},
                "startTime": {"type": "string", "format": "date-time"},
                "endTime": {"type": "string", "format": "date-time"},
                "count": {"type": "integer"},
                "schedule": _OBJECT,
            },
        },
        "timeZone": {"type": "string", "description": "IANA time zone name; default UTC"},
        "enabled": {"type": "boolean"},
        "overlap": {"type": "string", "enum": ["skip", "queue"]},
    },
    ["job", "recurrence"],
)
