"""The simulator's errors.

DeviceSimError                   base
+-- NotConnectedError            no live MQTT connection for a request (also a ConnectionError)
+-- TwinRequestError             the hub answered a twin request with an error ``status``
+-- ProvisioningError            fleet devices could not be created (``failures``: id -> code)
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["DeviceSimError", "NotConnectedError", "ProvisioningError", "TwinRequestError"]


class DeviceSimError(Exception):
    """Base of every error the simulator raises on purpose."""


class NotConnectedError(DeviceSimError, ConnectionError):
    """The device has no live connection (never connected, or it dropped mid-request)."""


class TwinRequestError(DeviceSimError):
    """The hub answered ``$iothub/twin/res/{status}`` with a status outside 2xx."""

    def __init__(self, status: int, rid: str, body: bytes = b"") -> None:
        detail = body[:200].decode("utf-8", "replace")
        super().__init__(f"twin request {rid} failed with status {status}" + (f": {detail}" if detail else ""))
        self.status = status
        self.rid = rid
        self.body = body


class ProvisioningError(DeviceSimError):
    """Some fleet devices could not be created; ``failures`` maps device id to the hub's error code."""

    def __init__(self, failures: Mapping[str, str]) -> None:
        sample = ", ".join(f"{device_id}: {code}" for device_id, code in list(failures.items())[:5])
        super().__init__(f"{len(failures)} device(s) could not be provisioned ({sample})")
        self.failures = dict(failures)
