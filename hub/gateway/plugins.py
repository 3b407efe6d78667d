"""amqtt plugins of the gateway: SAS login through DeviceEvents, and per-device topic scoping.

amqtt builds plugins itself from the dotted paths in ``broker_config`` and hands each one
only a context, so there is no constructor to inject collaborators through. The context's
``_broker_instance`` is the broker that loaded the plugin; the auth plugin takes the
``DeviceEvents`` from it and checks at load time that it is a ``HubBroker``, so a wrong
configuration fails at start rather than on every login.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from amqtt.contexts import Action
from amqtt.errors import PluginInitError
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

from hub.gateway import scope
from hub.gateway.broker import HubBroker

if TYPE_CHECKING:
    from hub.ports import DeviceEvents

__all__ = ["DeviceAuthPlugin", "DeviceTopicPlugin"]

logger = logging.getLogger(__name__)


class DeviceAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt is untyped
    """CONNECT credentials are checked by ``DeviceEvents.authenticate`` (the SAS check).

    ``HubBroker`` calls this before it touches any existing session with the same client
    id. An exception from the engine propagates, so the broker can answer "server
    unavailable" instead of "not authorized".
    """

    @dataclass
    class Config:
        pass

    def __init__(self, context: Any) -> None:
        super().__init__(context)
        broker = getattr(context, "_broker_instance", None)
        if not isinstance(broker, HubBroker):
            raise PluginInitError(f"{type(self).__name__} needs a HubBroker, got {type(broker).__name__}")
        self._events: DeviceEvents = broker.device_events

    async def authenticate(self, *, session: Any) -> bool:
        client_id: str | None = session.client_id
        if not scope.is_valid_device_id(client_id):
            return False
        certificates = getattr(session, "peer_certificates", ())  # set by HubBroker for TLS logins
        return await self._events.authenticate(client_id, session.username, session.password, certificates)


class DeviceTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]  # amqtt is untyped
    """SUBSCRIBE only to ``$iothub/...`` and ``devices/{own id}/...`` (others get SUBACK
    0x80); RECEIVE only from ``devices/{own id}/...``; PUBLISH as ``HubBroker`` forwards it."""

    @dataclass
    class Config:
        pass

    async def topic_filtering(
        self, *, session: Any = None, topic: str | None = None, action: Action | None = None
    ) -> bool:
        if session is None or topic is None:
            return False
        client_id: str | None = session.client_id
        match action:
            case Action.SUBSCRIBE:
                return scope.may_subscribe(client_id, topic)
            case Action.PUBLISH:
                return scope.forwards_publish(client_id, topic)
            case Action.RECEIVE:
                return scope.may_receive(client_id, topic)
        return False
