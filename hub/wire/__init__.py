"""IoT Hub wire formats: MQTT topics, SAS tokens, connection strings. Pure, no I/O."""
