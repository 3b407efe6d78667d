"""The REST API in IoT Hub's service shape: FastAPI app, auth, errors, routes."""
