'use strict';
// The device half of IoT Hub's "Schedule and broadcast jobs (Node.js)" tutorial, as the
// documentation writes it. fleethub's compat tests run it unmodified apart from the
// connection string (and NODE_EXTRA_CA_CERTS to trust the hub's CA).

var Client = require('azure-iot-device').Client;
var Protocol = require('azure-iot-device-mqtt').Mqtt;

var connectionString = '{yourDeviceConnectionString}';
var client = Client.fromConnectionString(connectionString, Protocol);

client.open(function(err) {
  if (err) {
    console.error('Could not connect to IotHub client', err);
  }  else {
    console.log('Client connected to IoT Hub. Register handler for lockDoor direct method.');
    client.onDeviceMethod('lockDoor', onLockDoor);
  }
});

var onLockDoor = function(request, response) {

  // Respond the cloud app for the direct method
  response.send(200, function(err) {
    if (err) {
      console.error('An error occurred when sending a method response:\n' + err.toString());
    } else {
      console.log('Response to method \'' + request.methodName + '\' sent successfully.');
    }
  });

  console.log('Locking Door!');
};
