"""What a client owns, and its lifecycle as a value: open -> closing -> closed."""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import threading
import warnings

from ._sessions import SessionRegistry
from ._sync import LoopThread

__all__ = ["ClientState", "Resources"]

logger = logging.getLogger("aiotongyi")
_WAIT = 10.0  # seconds a close waits for other threads' loops
_EXIT_WAIT = 2.0  # the same at interpreter exit


class ClientState(enum.Enum):
    """Where a client is in its life; only ever moves forward."""

    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Resources:
    """The loop-bound sessions and the loop thread of one client (and its siblings).

    Released exactly once: by ``aclose()``/``close()``, or, like a file object,
    when the client becomes garbage (with a ``ResourceWarning``) or at
    interpreter exit (``weakref.finalize`` runs pending finalisers then).
    """

    def __init__(self, sessions: SessionRegistry, loop_thread: LoopThread) -> None:
        self.sessions = sessions
        self.loop_thread = loop_thread
        self.state = ClientState.OPEN
        self._lock = threading.Lock()

    def _begin_close(self) -> bool:
        with self._lock:
            if self.state is not ClientState.OPEN:
                return False
            self.state = ClientState.CLOSING
            return True

    async def aclose(self) -> None:
        if not self._begin_close():
            return
        try:
            for pending in self.sessions.close(wait=None):
                # A task on this loop, or a concurrent future from another loop's thread.
                waitable = pending if isinstance(pending, asyncio.Future) else None
                try:
                    await (waitable or asyncio.wrap_future(pending))
                except Exception:  # a session that failed to close is gone all the same
                    logger.debug("closing a session failed", exc_info=True)
            if self.loop_thread.in_loop_thread():
                self.loop_thread.stop(wait=None)
            elif self.loop_thread.is_started:
                stop = functools.partial(self.loop_thread.stop, wait=_WAIT)
                await asyncio.get_running_loop().run_in_executor(None, stop)
        finally:
            self.state = ClientState.CLOSED

    def close(self) -> None:
        if not self._begin_close():
            return
        try:
            self.sessions.close(wait=_WAIT)
            self.loop_thread.stop(wait=None if self.loop_thread.in_loop_thread() else _WAIT)
        finally:
            self.state = ClientState.CLOSED

    def release(self, description: str) -> None:
        """The client became garbage, or the interpreter is exiting: release without blocking."""
        holds_something = self.loop_thread.is_started or self.sessions.is_in_use
        if not self._begin_close():
            if self.sessions.has_deferred:  # idle loops an earlier aclose() could not run
                self.sessions.close(wait=_EXIT_WAIT)
            return
        # At exit the main thread has stopped before finalisers run.
        exiting = not threading.main_thread().is_alive()
        if exiting:
            self.loop_thread.exiting = True
        wait = _EXIT_WAIT if exiting else None
        try:
            # At exit, a loop still running in another thread is a daemon's
            # (threading joined the others before finalisers run): closing its
            # session would wake its calls with errors that thread then prints.
            # Ours stops below (asyncio.run's teardown closes its session); a
            # caller's dies with the interpreter, like the sync callers left asleep.
            self.sessions.close(wait=wait, leave_running=exiting)
            self.loop_thread.stop(wait=None if self.loop_thread.in_loop_thread() else wait)
        finally:
            self.state = ClientState.CLOSED
        if holds_something and not exiting:
            warnings.warn(f"unclosed client {description}", ResourceWarning, stacklevel=2)
