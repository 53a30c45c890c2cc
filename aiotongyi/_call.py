"""One call in flight, and the one place its failures become aiotongyi errors.

A :class:`Call` can be stopped wherever it waits (the client closing, its
idle-read timer, its total timer); :meth:`Call.errors` turns that, and every
transport failure, into the documented error, with causes scrubbed of the
request (its headers hold the key).  Knows asyncio and aiohttp's exception
types; never the stream, the sessions or the client.
"""

from __future__ import annotations

import asyncio
import enum
import sys
from types import TracebackType
from typing import Any, Protocol

import aiohttp
from aiohttp.http import HttpProcessingError

from ._exceptions import APIConnectionError, APITimeoutError, StreamInterruptedError, TongyiError
from ._models import ModelOutput, Timeout

__all__ = ["TRANSPORT_ERRORS", "Abort", "Call", "CallRegistry", "map_transport_error", "scrub"]

#: What aiohttp and the OS raise for a failed exchange (never CancelledError).
#: HttpProcessingError: the pure-Python parser (AIOHTTP_NO_EXTENSIONS=1, or no
#: wheel for the platform) puts a malformed chunk's TransferEncodingError on the
#: body stream as is, not wrapped in a ClientError.
TRANSPORT_ERRORS = (aiohttp.ClientError, HttpProcessingError, asyncio.TimeoutError, OSError)


class CallRegistry(Protocol):
    """Where a call is listed while it runs (a loop's session), so a close can abort it."""

    loop: asyncio.AbstractEventLoop

    def add_call(self, call: Call) -> None: ...
    def discard_call(self, call: Call) -> None: ...


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

    def __init__(self, session: CallRegistry, timeout: Timeout) -> None:
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

    def errors(self, progress: _HasPartial) -> _CallErrors:
        """The one place where transport failures and aborts become aiotongyi errors.

        Use as ``with call.errors(progress):``.
        """
        return _CallErrors(self, progress)

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


class _CallErrors:
    """``Call.errors()``: a class, not a generator, as every open stream holds two."""

    __slots__ = ("_call", "_progress")

    def __init__(self, call: Call, progress: _HasPartial) -> None:
        self._call = call
        self._progress = progress

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:  # never swallows: what it does not map goes on as it is
        # An error raised here keeps this frame in its traceback: it must not hold
        # the original traceback, whose aiohttp frames hold the request headers.
        del traceback
        if exc is None or isinstance(exc, TongyiError):
            # Mapped already by an inner errors() (APITimeoutError is an OSError too):
            # mapping it again would relabel it, a connect timeout as a read timeout.
            return
        call = self._call
        if isinstance(exc, asyncio.CancelledError):
            if not call._took_back_cancel():
                return
            # It stays as __context__: its traceback holds aiohttp's frames, whose
            # locals are the request headers (the key among them).
            scrub(exc)
            raise call._abort_error(self._progress) from None
        if isinstance(exc, TRANSPORT_ERRORS):
            if call.reason is not None:
                raise call._abort_error(self._progress) from scrub(exc)
            raise _transport_error(exc, self._progress, call) from scrub(exc)


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
    if isinstance(exc, aiohttp.ClientResponseError | HttpProcessingError):
        text = exc.message  # its str() would add the URL and the request, or the code
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


def map_transport_error(exc: BaseException, *, total_expired: bool) -> TongyiError:
    """The error for a transport failure outside a :class:`Call` (before any content).

    Raise it ``from scrub(exc)``.
    """
    if total_expired:
        return APITimeoutError(Abort.TOTAL_TIMEOUT.value)
    return _transport_error(exc, _NO_PROGRESS, None)
