"""fleethub: a self-hosted IoT fleet job hub speaking Azure IoT Hub's wire formats."""

__version__ = "0.1.0"
