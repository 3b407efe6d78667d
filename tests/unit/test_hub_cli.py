"""The hub command line's pure parts."""

from __future__ import annotations

from hub.cli import sdk_readiness


def test_sdk_readiness_on_the_sdk_ports() -> None:
    line = sdk_readiness("hub.example", 443, 8883)
    assert line.startswith("Azure IoT SDKs: ready")
    assert "hub.example:8883" in line
    assert "https://hub.example" in line


def test_sdk_readiness_names_the_flags_that_are_missing() -> None:
    assert "--https-port 443" in sdk_readiness("localhost", 8443, 8883)
    assert "--mqtts-port" not in sdk_readiness("localhost", 8443, 8883)
    both = sdk_readiness("localhost", 8443, 18883)
    assert "--mqtts-port 8883 --https-port 443" in both
    assert "Use with the Azure IoT SDKs" in both
