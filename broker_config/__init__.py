"""The device MQTT gateway's limits and amqtt settings: defaults in gateway.toml, overridable.

Listener-independent only: the hub binds the MQTT/MQTTS sockets itself from its settings
and hands them to ``hub.gateway.Gateway`` with this configuration.

    config = load_gateway_config()                                   # packaged defaults
    config = load_gateway_config("/etc/fleethub/gateway.toml")       # operator file on top
    config = load_gateway_config(session_expiry_seconds=600)         # keyword overrides last
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["GatewayConfig", "GatewayConfigError", "load_gateway_config"]

_DEFAULTS_FILE = "gateway.toml"


class GatewayConfigError(ValueError):
    """A gateway configuration file or override that is unreadable, unknown or out of range."""


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The keys of ``gateway.toml``; each is documented there."""

    session_expiry_seconds: int
    connect_timeout_seconds: float
    keepalive_factor: float
    max_silence_seconds: float
    max_message_bytes: int
    max_topic_length: int
    max_pending_messages: int
    send_timeout_seconds: float
    close_timeout_seconds: float
    drain_timeout_seconds: float
    max_connections: int
    listen_backlog: int
    connects_per_device_burst: int
    connects_per_device_per_minute: float
    plugins: Mapping[str, Mapping[str, Any]]

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "plugins":
                _check_plugins(value)
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise GatewayConfigError(f"{f.name} must be a number, not {value!r}")
            elif f.type == "int" and not isinstance(value, int):
                raise GatewayConfigError(f"{f.name} must be an integer, not {value!r}")
            elif value < 0 or (value == 0 and f.name not in _ZERO_ALLOWED):
                raise GatewayConfigError(f"{f.name} must be positive, not {value!r}")
        if self.keepalive_factor < 1:
            raise GatewayConfigError(f"keepalive_factor must be at least 1, not {self.keepalive_factor!r}")

    def amqtt_config(self, listeners: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """amqtt's ``Broker`` configuration dict for these limits and the given listeners.

        amqtt requires a listener named ``default``; it is declared without ``bind`` so
        amqtt never binds it, and the hub's listeners come under their own names.
        """
        if "default" in listeners:
            raise GatewayConfigError("listener name 'default' is reserved")
        return {
            "listeners": {
                "default": {"bind": None},
                **{name: {**listener, "max_connections": self.max_connections} for name, listener in listeners.items()},
            },
            "plugins": {path: dict(options) for path, options in self.plugins.items()},
            "session_expiry_interval": self.session_expiry_seconds,
            "timeout_disconnect_delay": 0,
        }


_ZERO_ALLOWED = frozenset({"max_connections"})


def _check_plugins(value: object) -> None:
    if not isinstance(value, Mapping) or not value:
        raise GatewayConfigError("plugins must be a non-empty table of 'dotted.path.Class' = {options}")
    for path, options in value.items():
        if not isinstance(path, str) or "." not in path or not isinstance(options, Mapping):
            raise GatewayConfigError(f"plugin entry {path!r} = {options!r} is not 'dotted.path.Class' = {{...}}")


def _read(text: str, origin: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GatewayConfigError(f"{origin}: {exc}") from exc


def _defaults() -> dict[str, Any]:
    text = resources.files(__name__).joinpath(_DEFAULTS_FILE).read_text(encoding="utf-8")
    return _read(text, f"{__name__}/{_DEFAULTS_FILE}")


def load_gateway_config(path: str | Path | None = None, /, **overrides: Any) -> GatewayConfig:
    """The packaged defaults, then the keys of the TOML file at ``path``, then ``overrides``.

    A ``[plugins]`` table in the file or a ``plugins`` override replaces the whole list.
    """
    data = _defaults()
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise GatewayConfigError(f"cannot read gateway configuration {path}: {exc}") from exc
        data.update(_read(text, str(path)))
    data.update(overrides)
    known = {f.name for f in fields(GatewayConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise GatewayConfigError(f"unknown gateway configuration keys: {', '.join(unknown)}")
    missing = sorted(known - set(data))
    if missing:
        raise GatewayConfigError(f"missing gateway configuration keys: {', '.join(missing)}")
    return GatewayConfig(**data)
