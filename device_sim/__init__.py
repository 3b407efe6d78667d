"""Simulated IoT Hub devices for fleethub: one device, a fleet in one process, and a CLI."""

from __future__ import annotations

from device_sim.behaviours import Behaviours, MethodCall, MethodHandler, MethodProfile, MethodReply
from device_sim.connection import DeviceIdentity, MqttEndpoint
from device_sim.device import SimulatedDevice
from device_sim.errors import DeviceSimError, NotConnectedError, ProvisioningError, TwinRequestError
from device_sim.fleet import Fleet, FleetOptions, FleetStats, fleet_device_ids, provision_devices
from device_sim.options import DeviceHooks, DeviceOptions, DeviceStats

__all__ = [
    "Behaviours",
    "DeviceHooks",
    "DeviceIdentity",
    "DeviceOptions",
    "DeviceSimError",
    "DeviceStats",
    "Fleet",
    "FleetOptions",
    "FleetStats",
    "MethodCall",
    "MethodHandler",
    "MethodProfile",
    "MethodReply",
    "MqttEndpoint",
    "NotConnectedError",
    "ProvisioningError",
    "SimulatedDevice",
    "TwinRequestError",
    "fleet_device_ids",
    "provision_devices",
]
