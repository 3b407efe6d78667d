"""Direct method requests and results: names, payload and timeout rules."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from hub.domain.json import JsonValue, is_integer
from hub.errors import BadRequestError, PayloadTooLargeError

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "MethodRequest",
    "MethodResult",
    "encode_payload",
    "payload_size",
    "validate_method_name",
]

MAX_PAYLOAD_BYTES = 128 * 1024
# Printable US-ASCII without $ ( ) < > @ , ; : \ " / [ ] ? = { } space, tab (IoT Hub's rule).
_METHOD_NAME = re.compile(r"[!#%&'*+\-.0-9A-Z^_`a-z|~]{1,128}")


def validate_method_name(name: object) -> str:
    if not isinstance(name, str) or not _METHOD_NAME.fullmatch(name):
        raise BadRequestError(
            f"methodName {name!r} is invalid: use 1-128 printable ASCII characters other than "
            '$()<>@,;:\\"/[]?={} and spaces'
        )
    return name


def encode_payload(payload: JsonValue) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def payload_size(payload: JsonValue) -> int:
    return len(encode_payload(payload))


@dataclass(frozen=True, slots=True)
class MethodRequest:
    method_name: str
    payload: JsonValue = None
    response_timeout: int = 30
    connect_timeout: int = 0

    @classmethod
    def create(
        cls, method_name: object, payload: JsonValue = None, response_timeout: object = 30, connect_timeout: object = 0
    ) -> MethodRequest:
        """Validate every field as the service API does; raise BadRequestError naming the field."""
        name = validate_method_name(method_name)
        if response_timeout is None:
            response_timeout = 30
        if connect_timeout is None:
            connect_timeout = 0
        if not is_integer(response_timeout) or not 5 <= response_timeout <= 300:
            raise BadRequestError(
                f"responseTimeoutInSeconds must be an integer from 5 to 300, got {response_timeout!r}"
            )
        if not is_integer(connect_timeout) or not 0 <= connect_timeout <= 300:
            raise BadRequestError(f"connectTimeoutInSeconds must be an integer from 0 to 300, got {connect_timeout!r}")
        try:
            # allow_nan=False: NaN/Infinity would go to the device as text that is not JSON.
            size = len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode())
        except (TypeError, ValueError) as exc:
            raise BadRequestError(f"method payload is not JSON: {exc}") from exc
        if size > MAX_PAYLOAD_BYTES:
            raise PayloadTooLargeError(f"method payload is {size} bytes, over the limit of {MAX_PAYLOAD_BYTES} bytes")
        return cls(name, payload, response_timeout, connect_timeout)


@dataclass(frozen=True, slots=True)
class MethodResult:
    """What the device answered: its status code and JSON payload (``None`` when empty)."""

    status: int
    payload: JsonValue
