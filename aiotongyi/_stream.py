"""``Stream``: one call's outputs, with retries before content and cleanup always."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from types import TracebackType
from typing import TYPE_CHECKING

import aiohttp

from ._accumulate import Accumulator
from ._call import Call
from ._context import CallContext
from ._exceptions import ProtocolError, TongyiError
from ._models import ModelOutput
from ._request import PreparedRequest
from ._sessions import LoopSession
from ._sse import SSEDecoder, SSEProtocolError
from ._transport import MAX_JSON_BODY, read_body, send
from ._upload import cache_for, resolve_uploads

if TYPE_CHECKING:
    from ._hooks import CallObserver

__all__ = ["Stream"]

logger = logging.getLogger("aiotongyi")
_Batch = list[ModelOutput]


class Stream:
    """The outputs of one streamed call: ``async for`` it, ideally inside ``async with``.

    Nothing is sent until the first output is requested.  Leaving the
    ``async with`` block (or calling :meth:`aclose`) closes the HTTP response
    at once; a bare ``async for`` that stops early leaves it to garbage
    collection, so prefer the context manager.  A stream is read once:
    iterating it again after its end raises ``RuntimeError``.
    """

    def __init__(
        self,
        context: CallContext,
        request: PreparedRequest,
        observer: CallObserver | None = None,
    ) -> None:
        self._request = request
        self._progress = _Progress()
        # The generator must not refer back to the Stream: without that cycle a
        # dropped Stream is freed at once and its generator's finaliser closes
        # the response, instead of waiting for the cycle collector.
        self._batches = _produce(context, request, self._progress, observer)
        if observer is not None:  # hooks: content and end seen once per call, not per frame
            self._batches = observer.watch(self._batches)
        # The current batch, last output first.  Popping it empties the very list
        # the generators yielded (they hold it until the next chunk), so an output
        # the caller dropped is freed at once, with the text it read, instead of
        # living on with the whole batch.  Hooks may keep what they were shown:
        # then the stream reads a copy.
        self._pending: list[ModelOutput] = []
        self._shared = observer is not None
        self._ended = False

    @property
    def request_id(self) -> str | None:
        """DashScope's request id, once the response has started."""
        return self._progress.request_id

    @property
    def model(self) -> str:
        """The model the request was sent to."""
        return self._request.model

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> ModelOutput:
        pending = self._pending
        while not pending:
            batch = await self.next_batch()
            if self._shared:
                batch = batch[::-1]
            else:
                batch.reverse()
            self._pending = pending = batch
        return pending.pop()

    async def next_batch(self) -> list[ModelOutput]:
        """The outputs decoded from the next chunk (at least one); for the sync bridge.

        :raises StopAsyncIteration: at the end of the answer.
        """
        if self._pending:
            batch = self._pending[::-1]
            self._pending.clear()
            return batch
        if self._ended:
            raise RuntimeError(
                "this Stream has ended (or was closed); call generate_stream() again"
            )
        call = self._progress.call
        if call is not None:
            call.enter()
        try:
            return await self._batches.__anext__()
        except BaseException:
            self._ended = True
            raise
        finally:
            call = self._progress.call
            if call is not None:
                call.leave()

    async def park(self, waiting: asyncio.Event) -> None:
        """Wait for ``waiting`` (the sync bridge's back-pressure) as part of this call.

        The client closing or the total timeout ends the wait with the call's error.
        """
        call = self._progress.call
        if call is None:
            await waiting.wait()
            return
        call.enter(reading=False)
        try:
            with call.errors(self._progress):
                await waiting.wait()
        finally:
            call.leave()

    async def text_stream(self) -> AsyncIterator[str]:
        """The text deltas of choice 0, as ``str`` (empty deltas skipped)."""
        async for output in self:
            if output.delta and output.index == 0:
                yield output.delta

    async def final(self) -> ModelOutput:
        """Read the stream to its end and return the last output."""
        last: ModelOutput | None = None
        async with self:
            async for last in self:  # noqa: B007
                pass
        if last is None:
            raise RuntimeError("this Stream had already been read")
        return last

    async def aclose(self) -> None:
        """Stop the stream and close its HTTP response (idempotent)."""
        self._pending.clear()
        self._ended = True
        await self._batches.aclose()

    async def __aenter__(self) -> Stream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


class _Progress:
    """What a stream's generator shares with its Stream: the call and its current attempt."""

    __slots__ = ("accumulator", "call")

    def __init__(self) -> None:
        self.accumulator: Accumulator | None = None
        self.call: Call | None = None

    @property
    def last(self) -> ModelOutput | None:
        return None if self.accumulator is None else self.accumulator.last

    @property
    def request_id(self) -> str | None:
        return None if self.accumulator is None else self.accumulator.request_id


async def _produce(
    context: CallContext,
    request: PreparedRequest,
    progress: _Progress,
    observer: CallObserver | None,
) -> AsyncGenerator[_Batch, None]:
    timeout = request.timeout or context.timeout
    session = await context.sessions.get()
    call = progress.call = Call(session, timeout)
    policy = context.retry
    try:
        with call.errors(progress):
            if request.uploads:  # local media goes to temporary storage first (_upload.py)
                call.reading = False  # sending a file is not the server's silence
                request = await resolve_uploads(
                    request,
                    session=session.session,
                    base_url=context.base_url,
                    headers=context.headers,
                    proxy=context.proxy,
                    timeout=timeout,
                    deadline=call.deadline,
                    max_retries=policy.max_retries,
                    cache=cache_for(context.sessions),  # shared with with_options siblings
                    call=call,
                )
                call.reading = True
                call.last_data = call.loop.time()
            attempt = 0
            while True:
                accumulator = progress.accumulator = Accumulator(
                    request.model, incremental=request.incremental, choices=request.choices
                )
                if observer is not None:  # the rate limiter's wait: outside the retried part
                    call.reading = False
                    remaining = None if call.deadline is None else call.deadline - call.loop.time()
                    await observer.request(attempt, remaining)
                    call.reading = True
                    call.last_data = call.loop.time()
                try:
                    # aclosing: an outer generator's close does not close the inner one
                    async with aclosing(
                        _attempt(
                            context, request, session, call, accumulator, timeout.connect, observer
                        )
                    ) as batches:
                        async for batch in batches:
                            yield batch
                    return
                except TongyiError as error:
                    if observer is not None:
                        observer.failed(error)
                    if (
                        not call.retry_after_read_timeout()
                        or accumulator.last is not None
                        or attempt >= policy.max_retries
                        or not policy.should_retry(error)
                    ):
                        raise
                    delay = policy.delay(attempt, getattr(error, "headers", None), random.random())
                    if call.deadline is not None and call.loop.time() + delay >= call.deadline:
                        raise
                    logger.debug(
                        "retrying in %.2f s after %s (attempt %d of %d, request_id=%s)",
                        delay,
                        type(error).__name__,
                        attempt + 2,
                        policy.max_retries + 1,
                        error.request_id,
                    )
                    if observer is not None:
                        observer.retry(delay, error)
                # Outside the except: no stale context.  Waiting here is not silence.
                call.reading = False
                await asyncio.sleep(delay)
                call.reading = True
                call.last_data = call.loop.time()
                attempt += 1
    finally:
        call.finish()


async def _attempt(
    context: CallContext,
    request: PreparedRequest,
    session: LoopSession,
    call: Call,
    accumulator: Accumulator,
    connect_timeout: float | None,
    observer: CallObserver | None,
) -> AsyncGenerator[_Batch, None]:
    call.check(accumulator)
    with call.errors(accumulator):
        response = await send(
            session,
            context.base_url + request.path,
            request.body,
            context.headers_for(request),
            connect_timeout=connect_timeout,
            proxy=context.proxy,
            call=call,
        )
        accumulator.request_id = response.headers.get("x-request-id")
        if observer is not None:
            observer.response(response.status, accumulator.request_id)
        completed = False
        try:
            content_type = response.headers.get("content-type", "")
            if "event-stream" in content_type:
                async with aclosing(_sse_reply(response, accumulator, call)) as batches:
                    async for batch in batches:
                        yield batch
            elif "json" in content_type:
                batch = await _json_reply(response, accumulator, call)
                if batch:
                    yield batch
            else:
                raise ProtocolError(
                    f"expected an event stream, got {content_type or 'no content type'!r}",
                    request_id=accumulator.request_id,
                )
            if not accumulator.is_complete:
                raise accumulator.interrupted()
            completed = True
        finally:
            if completed:
                response.release()
            else:
                response.close()


async def _sse_reply(
    response: aiohttp.ClientResponse, accumulator: Accumulator, call: Call
) -> AsyncGenerator[_Batch, None]:
    """Decode the body chunk by chunk; outputs decoded before an error are yielded first."""
    decoder = SSEDecoder()
    feed = decoder.feed
    add = accumulator.add_event
    clock = call.loop.time
    read = response.content.readany
    batch: _Batch = []
    try:
        while True:
            # Stopped while the caller held an output: checked before reading, as
            # the close may have taken the connection (aiohttp would raise a bare
            # RuntimeError), and after, as buffered bytes must not outlive a timeout.
            if call.reason is not None:
                call.check(accumulator)
            chunk = await read()
            if not chunk:
                break
            call.last_data = clock()
            if call.reason is not None:
                call.check(accumulator)
            for event in feed(chunk):
                batch += add(event)
            if batch:
                yield batch
                batch = []
        for event in decoder.flush():
            batch += add(event)
    except SSEProtocolError as exc:
        if batch:
            yield batch
        raise ProtocolError(
            str(exc), request_id=accumulator.request_id, partial=accumulator.last
        ) from None
    except TongyiError:
        if batch:
            yield batch
        raise
    if batch:
        yield batch


async def _json_reply(
    response: aiohttp.ClientResponse, accumulator: Accumulator, call: Call
) -> _Batch:
    """A non-stream JSON reply to a stream request is the single final frame."""
    return accumulator.add_body(await read_body(response, MAX_JSON_BODY, truncate=False, call=call))
