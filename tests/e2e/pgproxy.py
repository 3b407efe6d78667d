"""A TCP proxy between the hub and PostgreSQL that a test can cut and restore.

A cut resets every connection through the proxy and closes its listening socket, so new
connections are refused: what a database restart looks like from the hub, without touching
the machine's PostgreSQL server, which other tests share."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

from sqlalchemy.engine import make_url

__all__ = ["PgProxy", "proxied_url", "upstream_of"]

_HOST = "127.0.0.1"
_CHUNK = 64 * 1024


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST, not FIN: the peer sees ECONNRESET, as when a server process dies."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class PgProxy:
    """``async with PgProxy(host, port) as proxy:`` listens on ``proxy.port`` (127.0.0.1)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.accepted = 0
        """Connections accepted so far (across cuts)."""

    @property
    def is_cut(self) -> bool:
        return self._server is None

    async def __aenter__(self) -> Self:
        await self._listen()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.cut()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, _HOST, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._writers):
            _reset(writer)
        # Not cancelled: the aborted transports end their pumps (a cancelled stream handler
        # task would make asyncio log an error).
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def restore(self) -> None:
        """Accept connections again, on the same port."""
        if self._server is None:
            await self._listen()

    @contextlib.asynccontextmanager
    async def outage(self, seconds: float) -> AsyncIterator[None]:
        """Cut now; restore after ``seconds`` or when the block ends, whichever is later."""
        await self.cut()
        loop = asyncio.get_running_loop()
        back = loop.time() + seconds
        try:
            yield
            await asyncio.sleep(max(0.0, back - loop.time()))
        finally:
            await self.restore()

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._server is None:
            _reset(client_writer)
            return
        self.accepted += 1
        self._tasks.add(task)
        self._writers.add(client_writer)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._upstream)
            self._writers.add(upstream_writer)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._pump(client_reader, upstream_writer))
                tg.create_task(self._pump(upstream_reader, client_writer))
        except (OSError, ExceptionGroup):
            pass
        finally:
            for writer in (client_writer, upstream_writer):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.transport.abort()
            self._tasks.discard(task)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        # One side finished: end the whole connection (PostgreSQL sessions never half-close).
        raise ConnectionResetError("peer closed")


def proxied_url(url: str, proxy: PgProxy) -> str:
    """``url`` (a PostgreSQL URL) with its host and port replaced by the proxy's."""
    return make_url(url).set(host=_HOST, port=proxy.port).render_as_string(hide_password=False)


def upstream_of(url: str) -> tuple[str, int]:
    parsed = make_url(url)
    return parsed.host or _HOST, parsed.port or 5432
