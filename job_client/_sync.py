"""Blocking wrappers: run the async core on one private event loop, one call at a time."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar, cast

__all__ = ["SyncRunner"]

T = TypeVar("T")


class SyncRunner:
    """Owns a private event loop and runs coroutines on it to completion.

    The loop persists between calls so the async client's connection pool is reused. Calls
    from several threads are serialised by a lock. It cannot be used from inside a running
    event loop: there, use the async client instead.
    """

    def __init__(self) -> None:
        # A loop_factory stops asyncio.Runner from installing the loop as the thread's current one.
        self._runner = asyncio.Runner(loop_factory=asyncio.new_event_loop)
        self._lock = threading.Lock()
        self._closed = False

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        self._refuse_inside_a_loop(coro)
        with self._lock:
            if self._closed:
                coro.close()
                raise RuntimeError("the client is closed")
            return self._runner.run(coro)

    @staticmethod
    def _refuse_inside_a_loop(coro: Coroutine[Any, Any, Any] | None) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        if coro is not None:
            coro.close()  # never awaited; close it so no "was never awaited" warning fires
        raise RuntimeError(
            "the blocking client cannot be used inside a running event loop; use the Async... client there"
        )

    def iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        """Drive an async iterator one item per loop run; closes it when the caller stops early."""

        async def next_item() -> tuple[bool, T | None]:
            # The end is returned, not raised: StopAsyncIteration should not cross the task boundary.
            try:
                return True, await anext(iterator)
            except StopAsyncIteration:
                return False, None

        try:
            while True:
                more, item = self.run(next_item())
                if not more:
                    return
                yield cast(T, item)
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None and not self._closed:
                self.run(aclose())

    def close(self, final: Coroutine[Any, Any, None] | None = None) -> None:
        """Run ``final`` (e.g. the async client's ``aclose()``) and close the loop; idempotent."""
        self._refuse_inside_a_loop(final)
        with self._lock:
            if self._closed:
                if final is not None:
                    final.close()
                return
            try:
                if final is not None:
                    self._runner.run(final)
            finally:
                self._closed = True
                self._runner.close()
