"""broker_config: the packaged defaults, operator files and overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker_config import GatewayConfig, GatewayConfigError, load_gateway_config


def test_defaults_list_only_the_gateway_plugins() -> None:
    config = load_gateway_config()
    assert set(config.plugins) == {"hub.gateway.plugins.DeviceAuthPlugin", "hub.gateway.plugins.DeviceTopicPlugin"}
    assert config.keepalive_factor == 1.5
    assert config.max_silence_seconds == 1767
    assert config.session_expiry_seconds > 0


def test_a_file_then_overrides_win(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text("session_expiry_seconds = 60\nmax_topic_length = 100\n", encoding="utf-8")
    config = load_gateway_config(path, max_topic_length=50)
    assert (config.session_expiry_seconds, config.max_topic_length) == (60, 50)
    assert config.keepalive_factor == load_gateway_config().keepalive_factor


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"no_such_key": 1}, "unknown"),
        ({"max_topic_length": 0}, "positive"),
        ({"max_topic_length": 1.5}, "integer"),
        ({"send_timeout_seconds": "10"}, "number"),
        ({"listen_backlog": True}, "number"),
        ({"keepalive_factor": 0.5}, "at least 1"),
        ({"plugins": {}}, "plugins"),
        ({"plugins": {"NoDots": {}}}, "dotted"),
    ],
)
def test_bad_values_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(GatewayConfigError, match=message):
        load_gateway_config(**overrides)


def test_an_unreadable_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(GatewayConfigError, match="cannot read"):
        load_gateway_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("session_expiry_seconds = = 1", encoding="utf-8")
    with pytest.raises(GatewayConfigError, match=r"bad\.toml"):
        load_gateway_config(bad)


def test_amqtt_config_declares_an_unbound_default_listener() -> None:
    config: GatewayConfig = load_gateway_config(max_connections=5)
    amqtt = config.amqtt_config({"mqtt": {"type": "tcp", "bind": "127.0.0.1:1"}})
    assert amqtt["listeners"] == {
        "default": {"bind": None},
        "mqtt": {"type": "tcp", "bind": "127.0.0.1:1", "max_connections": 5},
    }
    assert amqtt["session_expiry_interval"] == config.session_expiry_seconds
    assert set(amqtt["plugins"]) == set(config.plugins)
    with pytest.raises(GatewayConfigError, match="reserved"):
        config.amqtt_config({"default": {}})
