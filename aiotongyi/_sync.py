"""The sync bridge: one long-lived event-loop thread per client, driven through anyio."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, Future
from typing import TypeVar

import anyio
from anyio.from_thread import BlockingPortal

__all__ = ["LoopThread"]

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
