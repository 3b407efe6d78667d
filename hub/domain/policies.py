"""Shared access policies and the rights they grant."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["DEFAULT_POLICY_RIGHTS", "AccessPolicy", "Right"]


class Right(StrEnum):
    REGISTRY_READ = "RegistryRead"
    REGISTRY_WRITE = "RegistryWrite"
    SERVICE_CONNECT = "ServiceConnect"
    DEVICE_CONNECT = "DeviceConnect"


DEFAULT_POLICY_RIGHTS: dict[str, frozenset[Right]] = {
    "iothubowner": frozenset(Right),
    "service": frozenset({Right.SERVICE_CONNECT}),
    "registryRead": frozenset({Right.REGISTRY_READ}),
    "registryReadWrite": frozenset({Right.REGISTRY_READ, Right.REGISTRY_WRITE}),
}


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    name: str
    # Keys are secrets: a logged policy or traceback must not show them.
    primary_key: str = field(repr=False)
    secondary_key: str = field(repr=False)
    rights: frozenset[Right]

    def keys(self) -> tuple[str, str]:
        return (self.primary_key, self.secondary_key)
