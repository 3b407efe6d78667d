"""Device sessions: everything about a device and its connection that the engine owns.

- ``auth``: logins (SAS tokens, X.509 certificates) — ``DeviceAuthenticator``;
- ``handler``: what the gateway reports a device did, dispatched — ``DeviceEventHandler``
  (implements hub.ports.DeviceEvents);
- ``presence``: who is connected, in memory and written in batches — ``PresenceService``;
- ``methods``: direct-method calls and their replies — ``MethodService``;
- ``twins``: twin reads and writes, desired pushes, device twin GETs — ``TwinService``;
- ``reported``: group commits of devices' reported patches — ``ReportedBatcher``;
- ``registry``: device identities — ``RegistryService``;
- ``certificates``: CA certificates for X.509 devices — ``CertificateService``.
"""
