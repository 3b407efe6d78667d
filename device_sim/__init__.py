"""Simulated IoT Hub devices for fleethub: one device, a fleet in one process, and a CLI."""

from __future__ import annotations

from device_sim.behaviours import Behaviours, MethodCall, MethodHandler, MethodProfile, MethodReply
from device_sim.connection import DeviceIdentity, MqttEndpoint, X509Credential
from device_sim.device import SimulatedDevice
from device_sim.errors import DeviceSimError, NotConnectedError, ProvisioningError, TwinRequestError
from device_sim.fleet import (
    Fleet,
    FleetOptions,
    FleetStats,
    fleet_device_ids,
    provision_devices,
    provision_x509_devices,
)
from device_sim.options import DeviceHooks, DeviceOptions, DeviceStats
from device_sim.x509 import DeviceCertificateAuthority

__all__ = [
    "Behaviours",
    "DeviceCertificateAuthority",
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
    "X509Credential",
    "fleet_device_ids",
    "provision_devices",
    "provision_x509_devices",
]
