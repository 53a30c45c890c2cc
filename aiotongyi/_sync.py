"""The sync bridge: one long-lived event-loop thread per client, driven through anyio."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from concurrent.futures import Executor, Future
from typing import Generic, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

__all__ = ["LoopThread", "Prefetcher"]

T = TypeVar("T")

# Loop threads still running at interpreter exit.  ThreadPoolExecutor joins
# its workers from threading's own exit hook, before atexit runs, so a loop
# parked in a caller's executor must be stopped from that same hook.
_running: weakref.WeakSet[LoopThread] = weakref.WeakSet()


def _stop_all_at_exit() -> None:
    for loop_thread in list(_running):
        loop_thread.stop(timeout=2.0)


threading._register_atexit(_stop_all_at_exit)  # type: ignore[attr-defined]


class LoopThread:
    """An event loop on its own thread (or an executor's worker), started on first use."""

    def __init__(self, executor: Executor | None = None, name: str = "aiotongyi-loop") -> None:
        self._executor = executor
        self._name = name
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._finished: Future[None] | None = None
        self._thread_id: int | None = None
        self._stopped = False

    @property
    def is_running(self) -> bool:
        return self._portal is not None

    def in_loop_thread(self) -> bool:
        return self._thread_id == threading.get_ident()

    def portal(self) -> BlockingPortal:
        """The running portal; starts the loop thread the first time."""
        portal = self._portal
        if portal is not None:
            return portal
        with self._lock:
            if self._stopped:
                raise RuntimeError("the client's event-loop thread has been stopped")
            if self._portal is None:
                self._start()
            assert self._portal is not None
            return self._portal

    def call(self, func: Callable[..., Awaitable[T]], *args: object) -> T:
        """Run ``func(*args)`` on the loop and wait for its result in this thread."""
        return self.portal().call(func, *args)

    def _start(self) -> None:
        ready: Future[BlockingPortal] = Future()
        finished: Future[None] = Future()

        def run() -> None:
            self._thread_id = threading.get_ident()
            try:
                anyio.run(self._serve, ready)
            except BaseException as exc:  # surface a failed start to the caller
                if not ready.done():
                    ready.set_exception(exc)
                finished.set_exception(exc)
            else:
                finished.set_result(None)

        if self._executor is not None:
            self._executor.submit(run)
        else:
            threading.Thread(target=run, name=self._name, daemon=True).start()
        self._portal = ready.result()
        self._finished = finished
        _running.add(self)

    async def _serve(self, ready: Future[BlockingPortal]) -> None:
        self.loop = asyncio.get_running_loop()
        async with BlockingPortal() as portal:
            ready.set_result(portal)
            await portal.sleep_until_stopped()

    def stop(self, timeout: float | None = None) -> None:
        """Stop the loop (cancelling what still runs there) and wait for its thread."""
        with self._lock:
            self._stopped = True
            portal, self._portal = self._portal, None
            finished = self._finished
        _running.discard(self)
        if portal is None:
            return
        if self.in_loop_thread():
            raise RuntimeError("the event-loop thread cannot stop itself")
        try:
            portal.call(portal.stop, True)
        except RuntimeError:
            pass  # already stopping
        if finished is not None:
            finished.exception(timeout=timeout)


class Prefetcher(Generic[T]):
    """Runs an async iterator on a loop thread and hands its items to a blocking consumer.

    A task on the loop reads ahead by at most ``limit`` items, so a consumer
    that is ready costs one thread wake-up per chunk read, not a round trip
    to the loop per item.  An error ends the items and is raised after them.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        source: AsyncGenerator[list[T], None],
        limit: int = 16,
    ) -> None:
        self._loop = loop
        self._source = source
        self._limit = limit
        self._ready = threading.Condition()
        self._items: deque[T] = deque()
        self._error: BaseException | None = None
        self._finished = False
        self._wants_room = False
        self._room = asyncio.Event()
        self._task = asyncio.run_coroutine_threadsafe(self._produce(), loop)

    async def _produce(self) -> None:
        ready = self._ready
        try:
            async for batch in self._source:
                with ready:
                    self._items.extend(batch)
                    ready.notify()
                    full = len(self._items) >= self._limit
                    if full:
                        self._room.clear()
                        self._wants_room = True
                if full:
                    await self._room.wait()
        except BaseException as exc:  # handed to the consumer, who re-raises it
            self._error = exc
        finally:
            try:
                await self._source.aclose()
            finally:
                with ready:
                    self._finished = True
                    ready.notify()

    def __iter__(self) -> Iterator[T]:
        ready = self._ready
        items = self._items
        while True:
            with ready:
                while not items and not self._finished:
                    ready.wait()
                if items:
                    item = items.popleft()
                    if self._wants_room and len(items) <= self._limit // 2:
                        self._wants_room = False
                        self._loop.call_soon_threadsafe(self._room.set)
                elif self._error is not None:
                    raise self._error
                else:
                    return
            yield item

    def close(self, timeout: float = 5.0) -> None:
        """Stop reading and wait until the source is closed (idempotent)."""
        if self._task.done():
            return
        self._loop.call_soon_threadsafe(self._task.cancel)
        with self._ready:
            self._ready.wait_for(lambda: self._finished, timeout)
