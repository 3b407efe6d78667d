"""The in-process event broker: hub.ports.EventBroker for one hub process."""

from __future__ import annotations

import inspect
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hub.domain.events import HubEvent
from hub.ports import E, EventHandler

__all__ = ["LocalEventBroker"]

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class _Subscription:
    broker: LocalEventBroker
    handler: EventHandler[Any]
    kinds: tuple[type[HubEvent], ...]

    def unsubscribe(self) -> None:
        for kind in self.kinds:
            handlers = self.broker._handlers.get(kind)
            if handlers is not None and self.handler in handlers:
                handlers.remove(self.handler)


class LocalEventBroker:
    """Handlers run inside ``publish``, in the order they subscribed."""

    def __init__(self) -> None:
        self._handlers: defaultdict[type[HubEvent], list[EventHandler[Any]]] = defaultdict(list)

    def subscribe(self, handler: EventHandler[E], kinds: Sequence[type[E]]) -> _Subscription:
        if not kinds:
            raise ValueError("subscribe to at least one event type")
        for kind in kinds:
            self._handlers[kind].append(handler)
        return _Subscription(self, handler, tuple(kinds))

    async def publish(self, event: HubEvent) -> None:
        # A copy: a handler may unsubscribe (itself or another) while being told.
        for handler in tuple(self._handlers.get(type(event), ())):
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("event handler %r failed on %r", handler, event)
