"""aiohttp plumbing: one session per event loop, calls that can be aborted, errors mapped once.

Layering: this module knows aiohttp, asyncio, the pure error builders and the
exception classes; it never imports the stream, the client or the sync bridge.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import sys
import threading
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator, Mapping
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, Protocol

import aiohttp

from ._errors import error_from_http_body
from ._exceptions import (
    APIConnectionError,
    APITimeoutError,
    ProtocolError,
    StreamInterruptedError,
    TongyiError,
)
from ._models import ModelOutput, Timeout

__all__ = [
    "MAX_JSON_BODY",
    "TRANSPORT_ERRORS",
    "Abort",
    "Call",
    "LoopSession",
    "SecretHeaders",
    "SessionRegistry",
    "map_transport_error",
    "read_body",
    "read_error",
    "scrub",
    "send",
]

logger = logging.getLogger("aiotongyi")

#: What aiohttp and the OS raise for a failed exchange (never CancelledError).
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
_MAX_ERROR_BODY = 64 * 1024
#: A non-stream JSON body may not grow past this (SSE events have the same cap).
MAX_JSON_BODY = 64 * 1024 * 1024


class SecretHeaders(dict[str, str]):
    """Request headers whose repr hides credentials.

    Tracebacks that capture locals (pytest ``-l``, rich, Sentry) print every
    frame's variables; the headers of a request are one of them.
    """

    def __repr__(self) -> str:
        return repr(
            {name: "***" if name.lower() == "authorization" else v for name, v in self.items()}
        )


class Abort(enum.Enum):
    """Why a call was stopped from outside the task that runs it."""

    CLOSED = "the client was closed"
    READ_TIMEOUT = "timed out waiting for data from DashScope (read timeout)"
    TOTAL_TIMEOUT = "the total timeout expired"


class _HasPartial(Protocol):
    @property
    def last(self) -> ModelOutput | None: ...
    @property
    def request_id(self) -> str | None: ...


class Call:
    """One call in flight on one event loop: everything that may stop it, in one place.

    A call can be stopped while it waits anywhere (connecting, waiting for
    headers, between bytes, in a retry backoff, in the sync bridge's
    back-pressure) by the client closing, its idle-read timer or its total
    timer.  :meth:`abort` records why and cancels the task while it waits
    inside the call; the call turns that cancellation back into the
    documented error with :meth:`errors`, so a caller who did not cancel never
    sees ``CancelledError``.  Outside a wait, the reason is checked at the next
    step, so buffered bytes can never outlive a timeout.

    Our own idle timer, not aiohttp's ``sock_read``: the transport can swallow a
    malformed chunk and never re-arm its timer (aiohttp 3.14's C parser does).
    """

    __slots__ = (
        "_cancel_pending",
        "_clock",
        "_idle_timer",
        "_read",
        "_session",
        "_total_timer",
        "deadline",
        "last_data",
        "loop",
        "reading",
        "reason",
        "task",
    )

    def __init__(self, session: LoopSession, timeout: Timeout) -> None:
        loop = self.loop = session.loop
        self._clock = loop.time
        self._session = session
        now = self._clock()
        self.reason: Abort | None = None
        #: The task waiting inside this call right now (``None`` between outputs).
        self.task: asyncio.Task[Any] | None = asyncio.current_task()
        self.reading = True
        self.last_data = now
        self._cancel_pending = False
        self._read = timeout.read
        self.deadline = None if timeout.total is None else now + timeout.total
        self._total_timer = (
            None
            if self.deadline is None
            else loop.call_at(self.deadline, self.abort, Abort.TOTAL_TIMEOUT)
        )
        self._idle_timer = (
            None if self._read is None else loop.call_at(now + self._read, self._check_idle)
        )
        session.add_call(self)

    def enter(self, *, reading: bool = True) -> None:
        """The current task is about to wait inside the call (for bytes when ``reading``)."""
        self.task = asyncio.current_task()
        self.reading = reading
        self.last_data = self._clock()

    def leave(self) -> None:
        self.task = None

    def abort(self, reason: Abort) -> None:
        """Stop the call for ``reason`` (on its loop's thread); the first reason wins."""
        if self.reason is None:
            self.reason = reason
        task = self.task
        if task is not None and not self._cancel_pending and not task.done():
            self._cancel_pending = True
            task.cancel()

    def check(self, progress: _HasPartial) -> None:
        """Raise the abort's error if the call was stopped while it was not waiting."""
        if self.reason is not None:
            raise self._abort_error(progress)

    @contextmanager
    def errors(self, progress: _HasPartial) -> Iterator[None]:
        """The one place where transport failures and aborts become aiotongyi errors."""
        try:
            yield
        except asyncio.CancelledError:
            if not self._took_back_cancel():
                raise
            raise self._abort_error(progress) from None
        except TRANSPORT_ERRORS as exc:
            if self.reason is not None:
                raise self._abort_error(progress) from scrub(exc)
            raise _transport_error(exc, progress, self) from scrub(exc)

    def retry_after_read_timeout(self) -> bool:
        """Clear an idle-read abort so the next attempt may run; ``False`` for other aborts."""
        if self.reason is None:
            return True
        if self.reason is not Abort.READ_TIMEOUT:
            return False
        self.reason = None
        if self._read is not None and self._idle_timer is None:
            self.last_data = self._clock()
            self._idle_timer = self.loop.call_at(self.last_data + self._read, self._check_idle)
        return True

    def finish(self) -> None:
        """Stop the timers and leave the session's list of calls (idempotent)."""
        for timer in (self._idle_timer, self._total_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._total_timer = None
        self.task = None
        self._session.discard_call(self)

    def _took_back_cancel(self) -> bool:
        """Whether the cancellation being handled is ours alone (then it is undone)."""
        if not self._cancel_pending:
            return False
        self._cancel_pending = False
        task = asyncio.current_task()
        if task is not None and sys.version_info >= (3, 11):
            # Someone else cancelled too: their cancellation must go on.
            return task.uncancel() == 0
        return True

    def _check_idle(self) -> None:
        read = self._read
        assert read is not None
        now = self._clock()
        if self.task is None or not self.reading:  # the caller holds the stream, not the server
            self._idle_timer = self.loop.call_at(now + read, self._check_idle)
        elif now - self.last_data >= read:
            self._idle_timer = None
            self.abort(Abort.READ_TIMEOUT)
        else:
            self._idle_timer = self.loop.call_at(self.last_data + read, self._check_idle)

    def _abort_error(self, progress: _HasPartial) -> TongyiError:
        reason = self.reason
        assert reason is not None
        partial, request_id = progress.last, progress.request_id
        if reason is Abort.CLOSED:
            if partial is None:
                return APIConnectionError(
                    "the client was closed while the call was running", request_id=request_id
                )
            return StreamInterruptedError(
                f"the stream broke after content began: {reason.value}",
                request_id=request_id,
                partial=partial,
            )
        return APITimeoutError(reason.value, request_id=request_id, partial=partial)


class _NoProgress:
    last = None
    request_id = None


_NO_PROGRESS = _NoProgress()


def _transport_error(exc: BaseException, progress: _HasPartial, call: Call | None) -> TongyiError:
    partial, request_id = progress.last, progress.request_id
    if isinstance(exc, asyncio.TimeoutError):
        if (
            call is not None
            and call.deadline is not None
            and call.loop.time() >= call.deadline - 0.001
        ):
            message = Abort.TOTAL_TIMEOUT.value
        elif isinstance(exc, aiohttp.ServerTimeoutError) and "connect" in str(exc).lower():
            message = "timed out connecting to DashScope"
        else:
            message = Abort.READ_TIMEOUT.value
        return APITimeoutError(message, request_id=request_id, partial=partial)
    detail = _describe(exc)
    if partial is not None:
        return StreamInterruptedError(
            f"the stream broke after content began: {detail}",
            request_id=request_id,
            partial=partial,
        )
    return APIConnectionError(f"connection to DashScope failed: {detail}", request_id=request_id)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientResponseError):
        text = exc.message  # its str() would add the URL and the request
    else:
        text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def scrub(exc: BaseException) -> BaseException:
    """Keep a transport error as the cause, without anything that holds the request.

    aiohttp's errors carry ``request_info`` (the request headers, key included)
    in their attributes and args, and their tracebacks hold aiohttp's frames
    whose locals are those headers.  The class and message stay: they are the facts.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.__traceback__ = None
        if isinstance(current, aiohttp.ClientResponseError):
            info = current.request_info
            current.request_info = aiohttp.RequestInfo(
                info.url, info.method, _NO_HEADERS, info.real_url
            )
            current.history = ()
            current.args = tuple(
                current.request_info if isinstance(arg, aiohttp.RequestInfo) else arg
                for arg in current.args
            )
        current = current.__cause__ or current.__context__
    return exc


def _empty_headers() -> Any:
    from multidict import CIMultiDict, CIMultiDictProxy  # aiohttp's own dependency

    return CIMultiDictProxy(CIMultiDict())


_NO_HEADERS = _empty_headers()


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


async def send(
    session: LoopSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    connect_timeout: float | None,
    proxy: str | None,
) -> aiohttp.ClientResponse:
    """POST the request; a non-2xx answer is read (bounded) and raised as an ``APIError``.

    Transport errors propagate raw: the caller maps them inside :meth:`Call.errors`.
    """
    loop = session.loop
    started = loop.time()
    response = await session.session.post(
        url,
        data=body,
        headers=headers,
        proxy=proxy,
        allow_redirects=False,
        # Read and total limits are the call's own timers (see Call).
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
    )
    request_id = response.headers.get("x-request-id")
    logger.debug(
        "POST %s -> %d (request_id=%s, %.1f ms to headers)",
        url,
        response.status,
        request_id,
        (loop.time() - started) * 1000,
    )
    if response.status >= 300:
        raise await read_error(response, request_id)
    return response


async def read_error(response: aiohttp.ClientResponse, request_id: str | None) -> TongyiError:
    """The ``APIError`` of a non-2xx answer, from its bounded body; the response is closed."""
    try:
        raw = await read_body(response, _MAX_ERROR_BODY, truncate=True)
    except TRANSPORT_ERRORS:
        raw = b""  # the status already tells what happened
    finally:
        response.close()
    error = error_from_http_body(
        response.status, response.headers.get("content-type", ""), raw, request_id
    )
    error.headers = {name.lower(): value for name, value in response.headers.items()}
    return error


def map_transport_error(exc: BaseException, *, total_expired: bool) -> TongyiError:
    """The error for a transport failure outside a :class:`Call` (before any content).

    Raise it ``from scrub(exc)``.
    """
    if total_expired:
        return APITimeoutError(Abort.TOTAL_TIMEOUT.value)
    return _transport_error(exc, _NO_PROGRESS, None)


async def read_body(response: aiohttp.ClientResponse, limit: int, *, truncate: bool) -> bytes:
    """The body, at most ``limit`` bytes: cut there, or a ``ProtocolError`` past it."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            if truncate:
                return b"".join(chunks)[:limit]
            raise ProtocolError(
                f"the response body is larger than {limit} bytes",
                request_id=response.headers.get("x-request-id"),
            )
    return b"".join(chunks)
