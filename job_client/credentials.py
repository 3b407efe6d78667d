"""Service credentials: a shared access policy that signs REST calls with cached SAS tokens."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from hub.wire.sas import SasTokenError, generate_sas_token, parse_connection_string

__all__ = ["ServiceCredentials"]


class ServiceCredentials:
    """Signs ``Authorization: SharedAccessSignature sr={hostname}&sig=..&se=..&skn={policy}``.

    One token is cached and reused until ``renew_before`` seconds before it expires, so a busy
    client does not pay an HMAC per request and never sends a token about to lapse in flight.
    The key is kept private and never appears in ``repr``.
    """

    def __init__(
        self,
        hostname: str,
        policy_name: str,
        key: str,
        *,
        ttl: int = 3600,
        renew_before: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl <= renew_before:
            raise ValueError("ttl must be longer than renew_before")
        self._hostname = hostname
        self._policy_name = policy_name
        self._key = key
        self._ttl = ttl
        self._renew_before = renew_before
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        # The sync wrapper may call from several threads; renewal must not interleave.
        self._lock = threading.Lock()

    @classmethod
    def from_connection_string(cls, connection_string: str, *, ttl: int = 3600) -> ServiceCredentials:
        """From ``HostName=..;SharedAccessKeyName=..;SharedAccessKey=..``; a device connection string
        is refused with ``SasTokenError`` (a ``ValueError``)."""
        parsed = parse_connection_string(connection_string)
        if parsed.key_name is None:
            raise SasTokenError(
                "a service connection string (with SharedAccessKeyName) is needed, not a device connection string"
            )
        return cls(parsed.hostname, parsed.key_name, parsed.shared_access_key, ttl=ttl)

    @property
    def hostname(self) -> str:
        return self._hostname

    @property
    def policy_name(self) -> str:
        return self._policy_name

    def token(self) -> str:
        """The SAS token (the ``Authorization`` header value), renewed when the cached token nears expiry."""
        with self._lock:
            now = self._clock()
            if self._token is None or now >= self._expires_at - self._renew_before:
                self._token = generate_sas_token(
                    self._hostname, self._key, ttl=self._ttl, key_name=self._policy_name, now=now
                )
                self._expires_at = now + self._ttl
            return self._token

    def __repr__(self) -> str:
        return f"ServiceCredentials(hostname={self._hostname!r}, policy_name={self._policy_name!r})"
