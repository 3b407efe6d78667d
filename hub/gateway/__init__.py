"""The device MQTT gateway: embedded amqtt broker, IoT Hub login, per-device scoping,
presence and one-session delivery."""

from hub.gateway.gateway import Gateway

__all__ = ["Gateway"]
