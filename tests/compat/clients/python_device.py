"""A device on the real Python device SDK (azure-iot-device), run by the compat tests in that
SDK's own virtual environment. It is written the way the SDK's samples are, and prints one
JSON event per line: what it received and what it sent, for the test to check.

Reads its connection string from ``DEVICE_CONNECTION_STRING`` and the hub's CA from the file
named by ``FLEETHUB_CA_PEM``. ``DEVICE_TRANSPORT=websockets`` connects over MQTT over
WebSockets (443) as ``websockets=True`` does. A connection string with ``x509=true`` logs in
with the certificate in ``X509_CERT_FILE`` / ``X509_KEY_FILE`` (create_from_x509_certificate).
Commands on stdin, one per line: ``get_twin``, ``report {json}`` and ``quit``.
"""

import json
import os
import sys

from azure.iot.device import X509, IoTHubDeviceClient, MethodResponse


def emit(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def main():
    with open(os.environ["FLEETHUB_CA_PEM"]) as ca:
        certificate = ca.read()
    connection_string = os.environ["DEVICE_CONNECTION_STRING"]
    websockets = os.environ.get("DEVICE_TRANSPORT") == "websockets"
    fields = dict(part.split("=", 1) for part in connection_string.split(";"))
    if fields.get("x509") == "true":
        client = IoTHubDeviceClient.create_from_x509_certificate(
            x509=X509(os.environ["X509_CERT_FILE"], os.environ["X509_KEY_FILE"]),
            hostname=fields["HostName"],
            device_id=fields["DeviceId"],
            server_verification_cert=certificate,
            websockets=websockets,
        )
    else:
        client = IoTHubDeviceClient.create_from_connection_string(
            connection_string, server_verification_cert=certificate, websockets=websockets
        )

    def on_method(request):
        emit("method", name=request.name, payload=request.payload)
        answer = {"locked": True} if request.name == "lockDoor" else {"echo": request.payload}
        client.send_method_response(MethodResponse.create_from_method_request(request, 200, answer))
        emit("method_answered", name=request.name)

    def on_desired(patch):
        emit("desired", patch=patch)
        acknowledged = {key: value for key, value in patch.items() if not key.startswith("$")}
        client.patch_twin_reported_properties(acknowledged)
        emit("reported", patch=acknowledged)

    def on_connection_state():
        emit("connection", connected=client.connected)

    client.on_method_request_received = on_method
    client.on_twin_desired_properties_patch_received = on_desired
    client.on_connection_state_change = on_connection_state

    client.connect()
    emit("connected")
    emit("twin", twin=client.get_twin())
    startup = {"sdk": "azure-iot-device", "firmware": "1.0.0"}
    client.patch_twin_reported_properties(startup)
    emit("reported", patch=startup)

    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command == "get_twin":
            emit("twin", twin=client.get_twin())
        elif command == "report":
            patch = json.loads(argument)
            client.patch_twin_reported_properties(patch)
            emit("reported", patch=patch)
        elif command == "quit":
            break
    client.shutdown()
    emit("closed")


if __name__ == "__main__":
    main()
