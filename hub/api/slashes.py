"""Every route answers with and without a trailing slash, and never with a redirect.

IoT Hub's clients build paths both ways: ``azure-iothub``'s ``Registry.list()`` asks for
``GET /devices/?api-version=...`` and does not follow redirects, so Starlette's habit of
answering such a path with ``307`` to ``/devices`` breaks it. This middleware drops trailing
slashes before routing (the app is built with ``redirect_slashes=False``), for HTTP and
WebSocket requests alike. No route of the hub ends in a slash, and no path parameter can
(device ids, job ids and schedule ids hold no ``/``).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["TrailingSlashes"]


class TrailingSlashes:
    """Pure ASGI middleware: ``/devices/`` is routed as ``/devices``; ``/`` stays ``/``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            if len(path) > 1 and path.endswith("/"):
                scope = dict(scope)
                scope["path"] = path.rstrip("/") or "/"
                raw_path = scope.get("raw_path")
                if isinstance(raw_path, bytes):
                    scope["raw_path"] = raw_path.rstrip(b"/") or b"/"
        await self.app(scope, receive, send)
