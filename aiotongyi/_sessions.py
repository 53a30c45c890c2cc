"""One aiohttp session per event loop, and the four cases of closing one, written once."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine
from concurrent.futures import Future
from typing import Any

import aiohttp

from ._call import Abort, Call
from ._exceptions import APIConnectionError

__all__ = ["LoopSession", "SessionRegistry"]

logger = logging.getLogger("aiotongyi")


class LoopSession:
    """The ``aiohttp.ClientSession`` of one event loop, and the calls running on it.

    A session we create closes itself when its loop shuts down: a started
    async generator is finalised by ``loop.shutdown_asyncgens()``, which
    ``asyncio.run``, ``asyncio.Runner`` and anyio all call before closing the
    loop, so no session outlives its loop with an "Unclosed" warning.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        session: aiohttp.ClientSession,
        *,
        owns_session: bool,
        on_closed: Callable[[LoopSession], None],
    ) -> None:
        self.loop = loop
        self.session = session
        self.owns_session = owns_session
        self.is_closed = False
        self._calls: set[Call] = set()
        self._on_closed = on_closed
        self._close_with_loop: AsyncGenerator[None, None] | None = None

    @classmethod
    async def open(
        cls, max_connections: int, on_closed: Callable[[LoopSession], None]
    ) -> LoopSession:
        connector = aiohttp.TCPConnector(limit=max_connections)
        # The client resolves proxy variables once and passes proxy= per request.
        session = aiohttp.ClientSession(connector=connector, trust_env=False)
        self = cls(asyncio.get_running_loop(), session, owns_session=True, on_closed=on_closed)
        self._close_with_loop = self._closer()
        await self._close_with_loop.__anext__()
        return self

    async def _closer(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self._shut(Abort.CLOSED)

    def add_call(self, call: Call) -> None:
        self._calls.add(call)
        if self.is_closed:
            call.abort(Abort.CLOSED)

    def discard_call(self, call: Call) -> None:
        self._calls.discard(call)

    async def close(self) -> None:
        """Abort the calls on this loop and close the session we own (on this loop)."""
        closer, self._close_with_loop = self._close_with_loop, None
        if closer is not None:
            await closer.aclose()
        else:
            await self._shut(Abort.CLOSED)

    def close_here(self) -> None:
        """Close from a thread where this loop is not running (it is idle or closed).

        aiohttp closes its transports synchronously, so the close coroutine is
        driven to its end right here; should it suspend (TLS shutdown waiters)
        it is dropped, the sockets being closed already.  Running it by hand
        also keeps its finaliser from being scheduled on a dead loop.
        """
        closer = self.close()
        try:
            closer.send(None)
        except StopIteration:
            return
        except Exception:  # best effort: nothing left to protect on a dead loop
            logger.debug("closing a session outside its loop failed", exc_info=True)
            return
        closer.close()

    async def _shut(self, reason: Abort) -> None:
        if self.is_closed:
            return
        self.is_closed = True
        for call in list(self._calls):
            call.abort(reason)
        if self.owns_session:
            await self.session.close()
        self._on_closed(self)


class SessionRegistry:
    """One :class:`LoopSession` per event loop, created on first use, closed once.

    Each session is closed where its loop allows: awaited on the current loop,
    submitted thread-safely to a loop running elsewhere, or closed on the spot
    when its loop is idle or closed.  Those four cases are written only here.
    """

    def __init__(self, max_connections: int, session: aiohttp.ClientSession | None) -> None:
        self._max_connections = max_connections
        self._user_session = session
        self._sessions: dict[asyncio.AbstractEventLoop, LoopSession] = {}
        self._lock = threading.Lock()
        self._closing_tasks: set[asyncio.Task[None]] = set()
        self._deferred: list[LoopSession] = []
        self.is_closed = False

    @property
    def is_in_use(self) -> bool:
        """Whether any session is open."""
        return bool(self._sessions)

    async def get(self) -> LoopSession:
        """This loop's session (the caller's own when one was given)."""
        if self.is_closed:
            raise APIConnectionError("the client was closed before the call started")
        loop = asyncio.get_running_loop()
        current = self._sessions.get(loop)
        if current is not None and not current.is_closed:
            return current
        if self._user_session is not None:
            if getattr(self._user_session, "_loop", loop) is not loop:
                raise RuntimeError(
                    "the session= given to this client belongs to another event loop"
                )
            current = LoopSession(
                loop, self._user_session, owns_session=False, on_closed=self._forget
            )
        else:
            self._close_dead()
            current = await LoopSession.open(self._max_connections, self._forget)
        with self._lock:
            self._sessions[loop] = current
        if self._closed_meanwhile():
            await current.close()
            raise APIConnectionError("the client was closed before the call started")
        return current

    def close(
        self, *, wait: float | None, leave_running: bool = False
    ) -> list[Future[None] | asyncio.Task[None]]:
        """Close every session; returns what still runs on this loop or on other threads' loops.

        The four cases of a session's loop, written once: the current loop gets
        a task; a loop running elsewhere gets the close submitted thread-safely;
        an idle loop is run until the session is closed, when this thread runs
        no loop (else the session waits for exit or for the loop's next run);
        a closed loop's session is closed on the spot.

        :param wait: seconds to wait for sessions on loops running in other
            threads, when called outside any running loop; ``None`` not to wait.
        :param leave_running: leave the sessions of loops running in other
            threads to those loops (at interpreter exit: see ``Resources.release``).
        """
        self.is_closed = True
        with self._lock:
            sessions = [*self._sessions.values(), *self._deferred]
            self._sessions.clear()
            self._deferred.clear()
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        pending: list[Future[None] | asyncio.Task[None]] = []
        for loop_session in sessions:
            loop = loop_session.loop
            if loop.is_closed():
                loop_session.close_here()
            elif loop is current:
                task = loop.create_task(loop_session.close())
                self._closing_tasks.add(task)  # the loop keeps only a weak reference
                task.add_done_callback(self._closing_tasks.discard)
                pending.append(task)
            elif loop.is_running():
                if not leave_running:
                    pending.append(_submit(loop_session.close(), loop))
            elif current is None:
                try:
                    loop.run_until_complete(loop_session.close())
                except Exception:  # the loop started elsewhere meanwhile, or failed
                    logger.debug("closing a session on an idle loop failed", exc_info=True)
            else:
                with self._lock:
                    self._deferred.append(loop_session)
                loop.call_soon(_close_soon, loop_session)
        if wait is not None and current is None:
            for future in pending:
                _wait_quietly(future, wait)
        return pending

    @property
    def has_deferred(self) -> bool:
        """Whether sessions of idle loops still wait to be closed."""
        return bool(self._deferred)

    def _closed_meanwhile(self) -> bool:
        """Whether :meth:`close` ran while a session was being opened (a re-read)."""
        return self.is_closed

    def _forget(self, loop_session: LoopSession) -> None:
        with self._lock:
            if self._sessions.get(loop_session.loop) is loop_session:
                del self._sessions[loop_session.loop]

    def _close_dead(self) -> None:
        """Sessions of loops closed without ``shutdown_asyncgens()`` (closed by hand)."""
        with self._lock:
            dead = [s for s in self._sessions.values() if s.loop.is_closed()]
        for loop_session in dead:
            loop_session.close_here()
            self._forget(loop_session)


def _wait_quietly(future: Future[None] | asyncio.Task[None], wait: float) -> None:
    try:
        future.result(timeout=wait)  # type: ignore[call-arg]
    except Exception:  # a loop too busy to answer: its sockets die with it
        logger.debug("closing a session on another loop failed", exc_info=True)


def _close_soon(loop_session: LoopSession) -> None:
    """An idle loop that runs again closes the session it was left with."""
    if not loop_session.is_closed:
        task = loop_session.loop.create_task(loop_session.close())
        _background.add(task)
        task.add_done_callback(_background.discard)


_background: set[asyncio.Task[None]] = set()


def _submit(coro: Coroutine[Any, Any, None], loop: asyncio.AbstractEventLoop) -> Future[None]:
    try:
        return asyncio.run_coroutine_threadsafe(coro, loop)
    except RuntimeError:  # the loop closed meanwhile
        coro.close()
        done: Future[None] = Future()
        done.set_result(None)
        return done
