"""The SDK's error tree: translation of the service's error answers, and its mirror of hub codes."""

from __future__ import annotations

import json

import pytest

import hub.errors as hub_errors
import job_client
from job_client import errors


def _body(code: str, text: str) -> bytes:
    return json.dumps({"Message": f"ErrorCode:{code};{text}", "ExceptionMessage": "details"}).encode()


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, "ArgumentInvalid", errors.ArgumentInvalidError),
        (400, "BadRequest", errors.BadRequestError),
        (401, "IotHubUnauthorizedAccess", errors.UnauthorizedError),
        (403, "IotHubUnauthorized", errors.ForbiddenError),
        (404, "DeviceNotFound", errors.DeviceNotFoundError),
        (404, "DeviceNotOnline", errors.DeviceNotOnlineError),
        (404, "NotFound", errors.NotFoundError),
        (409, "DeviceAlreadyExists", errors.DeviceAlreadyExistsError),
        (409, "JobAlreadyExists", errors.JobAlreadyExistsError),
        (412, "PreconditionFailed", errors.PreconditionFailedError),
        (429, "ThrottlingException", errors.ThrottlingError),
        (502, "InvalidDeviceReply", errors.DeviceReplyError),
        (503, "ServiceUnavailable", errors.ServiceUnavailableError),
        (504, "GatewayTimeout", errors.GatewayTimeoutError),
    ],
)
def test_service_error_answers_map_to_their_class(status: int, code: str, expected: type) -> None:
    error = errors.error_from_response(status, {"iothub-errorcode": code}, _body(code, "Device dev-1 said no"))
    assert type(error) is expected
    assert error.status == status
    assert error.code == code
    assert error.message == "Device dev-1 said no"
    assert error.exception_message == "details"
    assert str(error) == f"{status} {code}: Device dev-1 said no"


def test_every_code_the_hub_raises_has_a_class_of_its_own() -> None:
    # Guards against drift: a code added to hub.errors needs its mirror here.
    for name in hub_errors.__all__:
        code = getattr(hub_errors, name).code
        error = errors.error_from_response(500, {"iothub-errorcode": code}, b"")
        assert error.code == code, name
        if code != hub_errors.HubError.code:
            assert type(error).default_code == code, name


def test_code_in_body_is_used_when_the_header_is_missing() -> None:
    error = errors.error_from_response(404, {}, _body("DeviceNotOnline", "Timed out waiting for device to connect."))
    assert isinstance(error, errors.DeviceNotOnlineError)
    assert error.message == "Timed out waiting for device to connect."


def test_unknown_code_falls_back_to_the_status_class_and_keeps_the_code() -> None:
    error = errors.error_from_response(
        403, {"iothub-errorcode": "IotHubQuotaExceeded"}, _body("IotHubQuotaExceeded", "x")
    )
    assert type(error) is errors.ForbiddenError
    assert error.code == "IotHubQuotaExceeded"


def test_answers_that_are_not_the_service_shape_keep_their_status() -> None:
    html = errors.error_from_response(502, {}, b"<html>Bad gateway</html>")
    assert type(html) is errors.ServerError
    assert html.status == 502
    assert "Bad gateway" in html.message
    empty = errors.error_from_response(418, {}, b"")
    assert type(empty) is errors.FleetHubError
    assert empty.message == "HTTP 418"


def test_transport_errors_are_connection_and_timeout_errors() -> None:
    assert issubclass(errors.FleetHubConnectionError, ConnectionError)
    assert issubclass(errors.FleetHubConnectionError, errors.FleetHubError)
    assert issubclass(errors.FleetHubTimeoutError, TimeoutError)
    assert issubclass(errors.FleetHubTimeoutError, errors.FleetHubConnectionError)
    error = errors.FleetHubConnectionError("refused")
    assert error.status is None
    assert str(error) == "refused"


def test_every_error_class_is_exported_from_the_package() -> None:
    classes = {name for name in errors.__all__ if name != "error_from_response"}
    assert classes <= set(job_client.__all__)
