"""Dependencies: the engine services and the caller's checked policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Header, Request

from hub.api.auth import ServiceAuthenticator
from hub.domain.policies import AccessPolicy, Right
from hub.engine.services import Services

__all__ = [
    "RegistryReader",
    "RegistryWriter",
    "ServiceConnect",
    "ServicesDep",
    "TwinReader",
    "TwinWriter",
]


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def get_authenticator(request: Request) -> ServiceAuthenticator:
    auth: ServiceAuthenticator = request.app.state.authenticator
    return auth


ServicesDep = Annotated[Services, Depends(get_services)]


def _requires(*rights: Right) -> Callable[..., AccessPolicy]:
    wanted = frozenset(rights)

    def check(request: Request, authorization: Annotated[str | None, Header()] = None) -> AccessPolicy:
        auth = get_authenticator(request)
        policy = auth.authenticate(authorization)
        auth.authorize(policy, wanted)
        return policy

    return check


RegistryReader = Annotated[AccessPolicy, Depends(_requires(Right.REGISTRY_READ))]
RegistryWriter = Annotated[AccessPolicy, Depends(_requires(Right.REGISTRY_WRITE))]
TwinReader = Annotated[AccessPolicy, Depends(_requires(Right.SERVICE_CONNECT, Right.REGISTRY_READ))]
TwinWriter = Annotated[AccessPolicy, Depends(_requires(Right.SERVICE_CONNECT, Right.REGISTRY_WRITE))]
ServiceConnect = Annotated[AccessPolicy, Depends(_requires(Right.SERVICE_CONNECT))]
