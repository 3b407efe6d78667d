'use strict';
// A device on the real Node device SDK (azure-iot-device + azure-iot-device-mqtt), run by
// fleethub's compat tests: written the way the SDK's samples are, printing one JSON event
// per line. DEVICE_CONNECTION_STRING names the device; NODE_EXTRA_CA_CERTS trusts the hub.
// DEVICE_TRANSPORT=websockets uses MqttWs (wss on 443); a connection string with x509=true
// logs in with the certificate in X509_CERT_FILE / X509_KEY_FILE, as simple_sample_device_x509.js.
// Commands on stdin, one per line: get_twin, report {json}, quit.

const fs = require('fs');
const { Client } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');
const readline = require('readline');

function emit(event, fields) {
  console.log(JSON.stringify(Object.assign({ event: event }, fields || {})));
}

function plain(properties) {
  return JSON.parse(JSON.stringify(properties));
}

async function main() {
  const transport = process.env.DEVICE_TRANSPORT === 'websockets' ? MqttWs : Mqtt;
  const client = Client.fromConnectionString(process.env.DEVICE_CONNECTION_STRING, transport);
  if (process.env.X509_CERT_FILE) {
    client.setOptions({
      cert: fs.readFileSync(process.env.X509_CERT_FILE, 'utf-8').toString(),
      key: fs.readFileSync(process.env.X509_KEY_FILE, 'utf-8').toString(),
    });
  }
  client.on('connect', () => emit('connection', { connected: true }));
  client.on('disconnect', () => emit('connection', { connected: false }));
  client.on('error', (err) => emit('error', { message: err.message }));

  await client.open();
  emit('connected');

  const answer = (request, response) => {
    emit('method', { name: request.methodName, payload: request.payload });
    const body = request.methodName === 'lockDoor' ? { locked: true } : { echo: request.payload };
    response.send(200, body, (err) => {
      if (err) {
        emit('error', { message: 'method response: ' + err.message });
      } else {
        emit('method_answered', { name: request.methodName });
      }
    });
  };
  client.onDeviceMethod('lockDoor', answer);
  client.onDeviceMethod('reboot', answer);

  const twin = await client.getTwin();
  emit('twin', { twin: { desired: plain(twin.properties.desired), reported: plain(twin.properties.reported) } });
  twin.on('properties.desired', (delta) => {
    const patch = plain(delta);
    emit('desired', { patch: patch });
    const acknowledged = {};
    for (const key of Object.keys(patch)) {
      if (!key.startsWith('$')) acknowledged[key] = patch[key];
    }
    twin.properties.reported.update(acknowledged, (err) => {
      if (err) emit('error', { message: 'reported: ' + err.message });
      else emit('reported', { patch: acknowledged });
    });
  });

  const startup = { sdk: 'azure-iot-device-node', firmware: '1.0.0' };
  twin.properties.reported.update(startup, (err) => {
    if (err) emit('error', { message: 'reported: ' + err.message });
    else emit('reported', { patch: startup });
  });

  const input = readline.createInterface({ input: process.stdin });
  for await (const line of input) {
    const space = line.indexOf(' ');
    const command = space < 0 ? line.trim() : line.slice(0, space);
    const argument = space < 0 ? '' : line.slice(space + 1);
    if (command === 'get_twin') {
      const fresh = await client.getTwin();
      emit('twin', { twin: { desired: plain(fresh.properties.desired), reported: plain(fresh.properties.reported) } });
    } else if (command === 'report') {
      const patch = JSON.parse(argument);
      twin.properties.reported.update(patch, (err) => {
        if (err) emit('error', { message: 'reported: ' + err.message });
        else emit('reported', { patch: patch });
      });
    } else if (command === 'quit') {
      break;
    }
  }
  await client.close();
  emit('closed');
  process.exit(0);
}

main().catch((err) => {
  emit('fatal', { message: err.message });
  process.exit(1);
});
