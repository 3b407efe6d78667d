"""Dependencies: the engine services and the caller's checked policy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def _requires(*rights: Right) -> Callable[..., Awaitable[AccessPolicy]]:
    wanted = frozenset(rights)

    # async on purpose: FastAPI runs plain-def dependencies in a thread pool, which cost a quarter
    # of the hub's CPU on the direct-method path.
    async def check(request: Request, authorization: Annotated[str | None, Header()] = None) -> AccessPolicy:
        auth: ServiceAuthenticator = request.app.state.authenticator
        policy = auth.authenticate(authorization)
        auth.authorize(policy, wanted)
        return policy

    return check


RegistryReader = Annotated[AccessPolicy, Depends(_requires(Right.REGISTRY_READ))]
RegistryWriter = Annotated[AccessPolicy, Depends(_requires(Right.REGISTRY_WRITE))]
TwinReader = Annotated[AccessPolicy, Depends(_requires(Right.SERVICE_CONNECT, Right.REGISTRY_READ))]
TwinWriter = Annotated[AccessPolicy, Depends(_requires(Right.SERVICE_CONNECT, Right.REGISTRY_WRITE))]
ServiceConnect = Annotated[AccessPolicy, Depends(_requires(Right.SERVICE_CONNECT))]
