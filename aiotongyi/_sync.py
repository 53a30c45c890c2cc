"""The sync bridge: one long-lived event-loop thread per client, and streams pumped to threads."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Coroutine, Generator
from concurrent.futures import Executor, Future
from typing import Any, Generic, Protocol, TypeVar

from ._exceptions import APIConnectionError, StreamInterruptedError, TongyiError

__all__ = ["BatchSource", "LoopThread", "pump"]

logger = logging.getLogger("aiotongyi")

T = TypeVar("T")

# Loops parked in a caller's executor.  ThreadPoolExecutor joins its workers
# from threading's own exit hook, which runs before atexit and weakref.finalize;
# a loop still parked there would hang the exit.  No public hook runs that early
# (and the main thread still counts as alive then), so the private one is used,
# and only for this case.
_in_executors: weakref.WeakSet[LoopThread] = weakref.WeakSet()
_exit_hook_registered = False


def _stop_executor_loops_at_exit() -> None:
    for loop_thread in list(_in_executors):
        loop_thread.exiting = True
        loop_thread.stop(wait=2.0)


def _register_exit_hook() -> None:
    global _exit_hook_registered
    register = getattr(threading, "_register_atexit", None)
    if register is not None and not _exit_hook_registered:
        _exit_hook_registered = True
        register(_stop_executor_loops_at_exit)


class BatchSource(Protocol[T]):
    """What the bridge pumps: a stream's batches, its back-pressure wait and its close."""

    async def next_batch(self) -> list[T]: ...
    async def park(self, waiting: asyncio.Event) -> None: ...
    async def aclose(self) -> None: ...


class LoopThread:
    """An asyncio event loop on its own thread (or an executor's worker), started on first use."""

    def __init__(self, executor: Executor | None = None, name: str = "aiotongyi-loop") -> None:
        self._executor = executor
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._finished: Future[None] | None = None
        self._thread_id: int | None = None
        self._stopped = False
        #: Set at interpreter exit: blocked sync callers are left asleep (their
        #: daemon threads die with the interpreter) instead of woken with an error.
        self.exiting = False

    def in_loop_thread(self) -> bool:
        return self._thread_id == threading.get_ident()

    @property
    def is_started(self) -> bool:
        """Whether the thread runs (started and not stopped)."""
        return self._loop is not None

    @property
    def running_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop while the thread runs, else ``None`` (never starts it)."""
        return self._loop

    def loop(self) -> asyncio.AbstractEventLoop:
        """The running loop; starts its thread the first time."""
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._stopped:
                raise RuntimeError("the client's event-loop thread has been stopped")
            if self._loop is None:
                self._start()
            assert self._loop is not None
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result in this thread."""
        try:
            loop = self.loop()
        except BaseException:
            coro.close()
            raise
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def _start(self) -> None:
        ready: Future[None] = Future()
        finished: Future[None] = Future()

        def run() -> None:
            self._thread_id = threading.get_ident()
            try:
                asyncio.run(self._serve(ready))
            except BaseException as exc:  # surface a failed start to the caller
                if not ready.done():
                    ready.set_exception(exc)
                finished.set_exception(exc)
            else:
                finished.set_result(None)

        if self._executor is not None:
            _register_exit_hook()
            _in_executors.add(self)
            self._executor.submit(run)
        else:
            threading.Thread(target=run, name=self._name, daemon=True).start()
        ready.result()
        self._finished = finished

    async def _serve(self, ready: Future[None]) -> None:
        self._stopping = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        ready.set_result(None)
        await self._stopping.wait()

    def stop(self, *, wait: float | None) -> None:
        """Stop the loop (``asyncio.run`` cancels what still runs) and wait for its thread.

        :param wait: seconds to wait for the thread; ``None`` not to wait.
        """
        with self._lock:
            self._stopped = True
            loop, stopping, self._loop = self._loop, self._stopping, None
        if loop is None or stopping is None:
            return
        try:
            loop.call_soon_threadsafe(stopping.set)
        except RuntimeError:
            return  # its loop is closed already
        if wait is not None and not self.in_loop_thread() and self._finished is not None:
            self._finished.exception(timeout=wait)


_END = object()  # after the last batch (an error, if any, is on the pump)


class _Pump(Generic[T]):
    """Moves a source's batches from the loop to one blocking consumer thread.

    The pump reads ahead by at most ``limit`` batches, so a consumer that is
    ready costs one thread wake-up per chunk read, not a round trip to the loop
    per item.  An error ends the batches and is raised after them.  Batches
    cross in a ``SimpleQueue`` (one C-level put and get each); the read-ahead is
    counted by two counters, each written by one thread only.
    """

    def __init__(self, loop_thread: LoopThread, limit: int) -> None:
        self._loop_thread = loop_thread
        self._limit = limit
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._put = 0  # batches queued (written on the loop)
        self._taken = 0  # batches taken (written by the consumer)
        self._finished = False
        self._error: BaseException | None = None
        self._wants_room = False
        self._room: asyncio.Event | None = None
        self._last: T | None = None
        self.task: asyncio.Task[None] | None = None
        self._cancelled = False
        #: Cancels the pump when the consumer's generator is dropped before its
        #: first ``next()``: a generator never started runs no ``finally``.
        self.on_drop: weakref.ref[Generator[T, None, None]] | None = None

    async def run(self, open_source: Callable[[], BatchSource[T]]) -> None:
        room = self._room = asyncio.Event()
        put = self._queue.put
        limit = self._limit
        source: BatchSource[T] | None = None
        try:
            source = open_source()
            while True:
                try:
                    batch = await source.next_batch()
                except StopAsyncIteration:
                    break
                self._last = batch[-1]
                put(batch)
                self._put += 1
                if self._put - self._taken >= limit:
                    room.clear()
                    self._wants_room = True  # before the re-check: no lost wake-up
                    if self._put - self._taken >= limit:
                        await source.park(room)
        except TongyiError as exc:
            self._error = exc
        except BaseException as exc:
            # The consumer cancelled nothing: a cancellation here is the loop
            # stopping under it (the client closing), reported as such.
            self._error = self._closed_error() if isinstance(exc, asyncio.CancelledError) else exc
        finally:
            try:
                if source is not None:
                    await source.aclose()
            finally:
                self.finish()

    def finish(self) -> None:
        """No more batches; also run when the task was cancelled before it started."""
        self.on_drop = None  # nothing left to cancel; and no bridge <-> ref cycle
        if self._finished:
            return
        self._finished = True
        if not self._loop_thread.exiting:  # at exit, blocked daemon callers stay asleep
            self._queue.put(_END)

    def fail(self, error: TongyiError) -> None:
        self._error = error
        self.finish()

    def _closed_error(self) -> TongyiError:
        if self._last is None:
            return APIConnectionError("the client was closed while the call was running")
        return StreamInterruptedError(
            "the stream broke after content began: the client was closed",
            partial=self._last,  # type: ignore[arg-type]
        )

    def items(self) -> Generator[T, None, None]:
        get = self._queue.get
        half = self._limit // 2
        while True:
            batch = get()
            if batch is _END:
                error, self._error = self._error, None
                if error is not None:
                    raise error
                return
            self._taken += 1
            if self._wants_room and self._put - self._taken <= half:
                self._wants_room = False
                self._make_room()
            yield from batch  # type: ignore[misc]

    def _make_room(self) -> None:
        room, loop = self._room, self._loop_thread.running_loop
        if room is None or loop is None or self._finished:
            return
        try:
            loop.call_soon_threadsafe(room.set)
        except RuntimeError:
            pass  # the loop closed: the pump has finished or is finishing

    def cancel(self, *, wait: float | None) -> None:
        """Stop the source (from any thread, the loop's own included) and maybe wait.

        Waiting is for the consumer's own thread (its generator closing): it
        drains the queue up to the end marker, so the response is closed when
        this returns.
        """
        loop = self._loop_thread.running_loop
        if self._finished or loop is None:
            return
        if not self._cancelled:  # once: a second cancel could interrupt the cleanup
            self._cancelled = True
            try:
                loop.call_soon_threadsafe(self._cancel_task)
            except RuntimeError:
                return  # the loop closed: nothing runs there any more
        if wait is not None and not self._loop_thread.in_loop_thread():
            self._drain(wait)

    def _drain(self, wait: float) -> None:
        deadline = time.monotonic() + wait
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                if self._queue.get(timeout=remaining) is _END:
                    return
        except queue.Empty:
            pass  # the pump did not finish in time: its task goes on closing

    def _cancel_task(self) -> None:
        # Read on the loop: the task may have been created after cancel() was called.
        if self.task is not None:
            self.task.cancel()


# Pumps still running: the loop keeps only weak references to tasks, and a
# generator dropped in a reference cycle must not take its pump's task with it.
_running_pumps: set[asyncio.Task[None]] = set()


def pump(
    loop_thread: LoopThread,
    open_source: Callable[[], BatchSource[T]],
    *,
    limit: int = 16,
) -> Generator[T, None, None]:
    """A generator of ``open_source()``'s items, read on ``loop_thread``'s loop.

    The source is opened on the loop by the pump's own task: no separate round
    trip.  Closing the generator, or dropping it (whichever thread finalises it,
    the loop's own included), cancels the source and closes its response.
    """
    loop = loop_thread.loop()
    bridge: _Pump[T] = _Pump(loop_thread, limit)

    def start() -> None:
        if not loop_thread.is_started:  # the client closed before the pump began
            bridge.fail(APIConnectionError("the client was closed before the call started"))
            return
        task = bridge.task = loop.create_task(bridge.run(open_source))
        _running_pumps.add(task)
        task.add_done_callback(done)

    def done(task: asyncio.Task[None]) -> None:
        _running_pumps.discard(task)
        bridge.finish()  # a task cancelled before its first step ran no finally

    loop.call_soon_threadsafe(start)
    consumer = _consume(bridge)
    # The pump runs already; held by the bridge, the ref lives as long as the pump.
    bridge.on_drop = weakref.ref(consumer, lambda _: bridge.cancel(wait=None))
    return consumer


def _consume(bridge: _Pump[T]) -> Generator[T, None, None]:
    try:
        yield from bridge.items()
    finally:
        # On break, close(), KeyboardInterrupt or garbage collection alike.
        bridge.cancel(wait=5.0)
