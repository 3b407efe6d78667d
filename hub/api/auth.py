"""Service-side SAS authentication and the policy rights each route needs."""

from __future__ import annotations

from collections import OrderedDict

from hub.domain.clock import Clock
from hub.domain.policies import AccessPolicy, Right
from hub.errors import ForbiddenError, UnauthorizedError
from hub.wire.sas import LOCAL_HOSTNAMES, SasTokenError, hub_hosts, parse_sas_token, resource_host, signature_matches

__all__ = ["ServiceAuthenticator"]


_CACHE_SIZE = 10_000


class ServiceAuthenticator:
    """Checks each distinct token once (HMACs under both of the policy's keys), then answers from a
    cache keyed by the token text and the policy's keys, so a rotated key invalidates it; expiry
    is checked every time.

    A token's ``sr`` must name this hub: ``hostname`` or one of LOCAL_HOSTNAMES, with or without
    a ``:port``, in any letter case, url-encoded or not (``hub.wire.sas.resource_host``)."""

    def __init__(self, hostname: str, policies: dict[str, AccessPolicy], clock: Clock, max_token_lifetime: int) -> None:
        self._hosts = hub_hosts(hostname)
        self._names_text = ", ".join(dict.fromkeys((hostname, *LOCAL_HOSTNAMES)))
        self._policies = policies
        self._clock = clock
        self._max_lifetime = max_token_lifetime
        self._verified: OrderedDict[tuple[str, str, str], int] = OrderedDict()

    def authenticate(self, authorization: str | None) -> AccessPolicy:
        """The policy a valid ``Authorization`` header speaks for; UnauthorizedError otherwise."""
        if not authorization:
            raise UnauthorizedError("missing Authorization header with a SharedAccessSignature")
        try:
            token = parse_sas_token(authorization.strip())
        except SasTokenError as exc:
            raise UnauthorizedError(f"malformed SharedAccessSignature: {exc}") from None
        now = self._clock.now().timestamp()
        if token.is_expired(now):
            raise UnauthorizedError("the SharedAccessSignature has expired")
        if token.expiry - now > self._max_lifetime:
            raise UnauthorizedError(f"the SharedAccessSignature lives longer than the allowed {self._max_lifetime} s")
        if resource_host(token.resource) not in self._hosts:
            shown = token.resource if len(token.resource) <= 100 else token.resource[:100] + "..."
            raise UnauthorizedError(
                f"the SharedAccessSignature is for {shown!r}, not for this hub: its sr must be one of "
                f"{self._names_text}, optionally with a :port"
            )
        if not token.key_name:
            raise UnauthorizedError("the SharedAccessSignature names no policy (skn)")
        policy = self._policies.get(token.key_name)
        if policy is None:
            raise UnauthorizedError("the SharedAccessSignature is not valid for this hub")
        cache_key = (authorization, policy.primary_key, policy.secondary_key)
        if cache_key in self._verified:
            self._verified.move_to_end(cache_key)
            return policy
        if not signature_matches(token, *policy.keys()):
            raise UnauthorizedError("the SharedAccessSignature is not valid for this hub")
        self._verified[cache_key] = token.expiry
        if len(self._verified) > _CACHE_SIZE:
            self._verified.popitem(last=False)
        return policy

    @staticmethod
    def authorize(policy: AccessPolicy, any_of: frozenset[Right]) -> None:
        if not policy.rights & any_of:
            needed = " or ".join(sorted(r.value for r in any_of))
            raise ForbiddenError(f"policy {policy.name!r} lacks the {needed} permission")
