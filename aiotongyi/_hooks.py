"""Request hooks: what a call did, told to user code (and to the built-in telemetry).

A :class:`Hooks` subclass overrides the methods it needs; the client calls
them on its event loop, in this order for one call::

    on_request(attempt 0) -> on_response -> [on_retry -> on_request(attempt 1) -> ...]
    -> on_first_content -> [on_chunk ...] -> on_end

``on_end`` is called exactly once for every call that started (even when it
failed before any request was sent).  A hook that raises is logged on the
``aiotongyi`` logger and never breaks the call.

:class:`CallObserver` is the one object a stream talks to; it exists only when
the client has hooks, telemetry or a rate limiter, so a plain client pays
nothing per call or per frame.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING

from ._callinfo import CallInfo
from ._exceptions import APIError, TongyiError
from ._retry import retry_after

if TYPE_CHECKING:
    from ._models import ModelOutput
    from ._ratelimit import RateLimiter, Reservation
    from ._request import PreparedRequest

__all__ = ["CallInfo", "CallObserver", "Hooks", "ObserverFactory"]

logger = logging.getLogger("aiotongyi")


class Hooks:
    """Base class of request hooks: override any of the methods (each does nothing here).

    Every method runs on the event loop that runs the call and must not block.
    """

    def on_request(self, call: CallInfo, attempt: int) -> None:
        """A request is about to be sent (after any rate-limit wait)."""

    def on_response(self, call: CallInfo, status: int, request_id: str | None) -> None:
        """Response headers arrived (also for an HTTP error status)."""

    def on_retry(self, call: CallInfo, delay: float, error: TongyiError) -> None:
        """Attempt ``call.attempt`` failed with ``error``; the next one starts in ``delay`` s."""

    def on_first_content(self, call: CallInfo, output: ModelOutput) -> None:
        """The first output of the call was decoded."""

    def on_chunk(self, call: CallInfo, outputs: Sequence[ModelOutput]) -> None:
        """Outputs decoded from one network chunk (the first chunk included).

        The only per-chunk hook: the stream calls it only when some hook
        overrides it, so leave it alone unless you need per-chunk timing.
        """

    def on_end(self, call: CallInfo) -> None:
        """The call is over: ``call.output``, ``call.error``, ``call.closed_early``,
        ``call.cancelled`` tell how (called exactly once)."""


def _call(hook: Hooks, name: str, *args: object) -> None:
    """One hook method; what it raises is logged, never passed on to the call."""
    try:
        getattr(hook, name)(*args)
    except Exception:
        logger.exception("aiotongyi hook %s.%s failed", type(hook).__name__, name)


def _overrides(hook: Hooks, name: str) -> bool:
    return getattr(type(hook), name, None) is not getattr(Hooks, name)


class ObserverFactory:
    """The client's settings for hooks and rate limiting; makes one observer per call."""

    def __init__(self, hooks: Sequence[Hooks], limiter: RateLimiter | None, base_url: str) -> None:
        self.hooks = tuple(hooks)
        self.limiter = limiter
        self.base_url = base_url
        self.chunk_hooks = tuple(h for h in self.hooks if _overrides(h, "on_chunk"))

    def __call__(
        self, request: PreparedRequest, operation: str = "chat", *, stream: bool = True
    ) -> CallObserver:
        """A new observer; call it in the caller's thread (it captures the context).

        :param operation: the GenAI operation name (``"embeddings"`` for embedding calls).
        :param stream: ``False`` for a call answered in one piece.
        """
        call = CallInfo(operation, request.model, request.body, self.base_url, stream)
        return CallObserver(self, call)


class CallObserver:
    """The hook and rate-limit calls of one call; the stream calls these, nothing else."""

    __slots__ = ("_ended", "_factory", "_first_seen", "_reservation", "call")

    def __init__(self, factory: ObserverFactory, call: CallInfo) -> None:
        self._factory = factory
        self.call = call
        self._reservation: Reservation | None = None
        self._first_seen = False
        self._ended = False

    def _each(self, name: str, *args: object) -> None:
        for hook in self._factory.hooks:
            _call(hook, name, self.call, *args)

    async def request(self, attempt: int, remaining: float | None = None) -> None:
        """Before each attempt: wait for rate-limit capacity, then ``on_request``.

        :param remaining: seconds left of the call's total timeout (bounds the wait).
        :raises RateLimitError: when the limiter cannot admit the request in time.
        """
        call = self.call
        if attempt == 0:
            call.started = time.perf_counter()
        call.attempt = attempt
        limiter = self._factory.limiter
        if limiter is not None:
            self._settle(None)
            self._reservation = await limiter.acquire(
                call.model, limiter.estimate(call), max_wait=remaining
            )
        self._each("on_request", attempt)

    def response(self, status: int, request_id: str | None) -> None:
        """Response headers arrived."""
        self.call.request_id = request_id
        self._each("on_response", status, request_id)

    def failed(self, error: TongyiError) -> None:
        """An attempt failed (before a retry decision): HTTP errors and 429s are noted."""
        if isinstance(error, APIError):
            headers = error.headers
            if headers is not None:  # an HTTP error status: its headers were the response
                self.response(error.status_code, error.request_id)
            limiter = self._factory.limiter
            if error.status_code == 429 and limiter is not None:
                limiter.throttled(self.call.model, retry_after(headers) if headers else None)
        if error.partial is None:
            # A refused request consumed no tokens; it still counts as a request.
            self._settle(0)

    def retry(self, delay: float, error: TongyiError) -> None:
        """The next attempt starts in ``delay`` seconds."""
        self._each("on_retry", delay, error)

    def _settle(self, tokens: int | None) -> None:
        reservation, self._reservation = self._reservation, None
        if reservation is not None:
            reservation.settle(tokens)

    def end(
        self,
        output: ModelOutput | None,
        error: BaseException | None = None,
        *,
        closed_early: bool = False,
        cancelled: bool = False,
    ) -> None:
        """The call is over (idempotent: only the first call counts)."""
        if self._ended:
            return
        self._ended = True
        call = self.call
        if call.started == 0.0:
            call.started = time.perf_counter()
        if output is None and isinstance(error, TongyiError):
            output = error.partial
        call.output, call.error = output, error
        call.closed_early, call.cancelled = closed_early, cancelled
        usage = None if output is None else output.usage
        self._settle(None if usage is None else usage.total_tokens)
        self._each("on_end")

    async def watch(
        self, batches: AsyncGenerator[list[ModelOutput], None]
    ) -> AsyncGenerator[list[ModelOutput], None]:
        """Pass a stream's batches through, calling the content hooks and ``end`` once."""
        last: ModelOutput | None = None
        call = self.call
        chunk_hooks = [hook.on_chunk for hook in self._factory.chunk_hooks]
        try:
            async with aclosing(batches):
                async for batch in batches:
                    if not self._first_seen:
                        self._first_seen = True
                        self._each("on_first_content", batch[0])
                    for on_chunk in chunk_hooks:
                        try:
                            on_chunk(call, batch)
                        except Exception:  # noqa: PERF203 (a failing hook must not stop others)
                            logger.exception("aiotongyi hook %r.on_chunk failed", on_chunk)
                    last = batch[-1]
                    yield batch
        except GeneratorExit:
            finished = last is not None and last.finish_reason not in (None, "null")
            self.end(last, closed_early=not finished)
            raise
        except asyncio.CancelledError:
            self.end(last, cancelled=True)
            raise
        except BaseException as exc:
            self.end(last, exc)
            raise
        self.end(last)
