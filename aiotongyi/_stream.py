"""``Stream``: one call's outputs, with retries before content and cleanup always."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import deque
from collections.abc import AsyncGenerator
from contextlib import aclosing
from types import TracebackType
from typing import TYPE_CHECKING

import aiohttp

from ._accumulate import Accumulator
from ._exceptions import APIConnectionError, APITimeoutError, ProtocolError, TongyiError
from ._models import ModelOutput, Timeout
from ._request import PreparedRequest
from ._retry import retry_delay, should_retry
from ._sse import SSEDecoder, SSEProtocolError
from ._transport import TRANSPORT_ERRORS, Pool, map_transport_error, send

if TYPE_CHECKING:
    from ._client import TongyiLLMClient
    from ._hooks import CallObserver

__all__ = ["Stream"]

logger = logging.getLogger("aiotongyi")
_Batch = list[ModelOutput]


class Stream:
    """The outputs of one streamed call: ``async for`` it, ideally inside ``async with``.

    Nothing is sent until the first output is requested.  Leaving the
    ``async with`` block (or calling :meth:`aclose`) closes the HTTP response
    at once; a bare ``async for`` that stops early leaves it to garbage
    collection, so prefer the context manager.
    """

    def __init__(
        self,
        client: TongyiLLMClient,
        request: PreparedRequest,
        observer: CallObserver | None = None,
    ) -> None:
        self._request = request
        self._progress = _Progress()
        # The generator must not refer back to the Stream: without that cycle a
        # dropped Stream is freed at once and its generator's finaliser closes
        # the response, instead of waiting for the cycle collector.
        self._batches = _produce(client, request, self._progress, observer)
        if observer is not None:  # hooks: content and end seen once per call, not per frame
            self._batches = observer.watch(self._batches)
        self._pending: deque[ModelOutput] = deque()

    @property
    def request_id(self) -> str | None:
        """DashScope's request id, once the response has started."""
        accumulator = self._progress.accumulator
        return None if accumulator is None else accumulator.request_id

    @property
    def model(self) -> str:
        """The model the request was sent to."""
        return self._request.model

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> ModelOutput:
        pending = self._pending
        while not pending:
            pending.extend(await self._batches.__anext__())
        return pending.popleft()

    async def _iter_batches(self) -> AsyncGenerator[list[ModelOutput], None]:
        """The outputs grouped by the chunk they were decoded from (for the sync bridge).

        Closing this generator closes the stream.
        """
        try:
            if self._pending:
                yield list(self._pending)
                self._pending.clear()
            async for batch in self._batches:
                yield batch
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Stop the stream and close its HTTP response (idempotent)."""
        self._pending.clear()
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
    """What a stream's generator shares with its Stream (the current attempt)."""

    __slots__ = ("accumulator",)

    def __init__(self) -> None:
        self.accumulator: Accumulator | None = None


async def _produce(
    client: TongyiLLMClient,
    request: PreparedRequest,
    progress: _Progress,
    observer: CallObserver | None = None,
) -> AsyncGenerator[_Batch, None]:
    timeout = request.timeout or client.timeout
    loop = asyncio.get_running_loop()
    deadline = None if timeout.total is None else loop.time() + timeout.total
    pool = await client._acquire_pool()
    attempt = 0
    while True:
        accumulator = progress.accumulator = Accumulator(
            request.model, incremental=request.incremental
        )
        if observer is not None:  # rate-limit wait and on_request; outside the retry below
            await observer.request(attempt, None if deadline is None else deadline - loop.time())
        try:
            # aclosing: an outer generator's close does not close the inner one
            attempt_batches = _attempt(
                client, request, pool, accumulator, timeout, deadline, attempt, observer
            )
            async with aclosing(attempt_batches) as batches:
                async for batch in batches:
                    yield batch
            return
        except TongyiError as error:
            if observer is not None:
                observer.failed(error)
            if client.is_closed:
                raise _closed_error(error, accumulator) from error
            if (
                accumulator.last is not None
                or attempt >= client.max_retries
                or not should_retry(error)
            ):
                raise
            headers = getattr(error, "headers", None)
            delay = retry_delay(attempt, headers, random.random())
            if deadline is not None and loop.time() + delay >= deadline:
                raise
            logger.debug(
                "retrying in %.2f s after %s (attempt %d of %d, request_id=%s)",
                delay,
                type(error).__name__,
                attempt + 2,
                client.max_retries + 1,
                error.request_id,
            )
            if observer is not None:
                observer.retry(delay, error)
            await asyncio.sleep(delay)
            attempt += 1


async def _attempt(
    client: TongyiLLMClient,
    request: PreparedRequest,
    pool: Pool,
    accumulator: Accumulator,
    timeout: Timeout,
    deadline: float | None,
    attempt: int,
    observer: CallObserver | None,
) -> AsyncGenerator[_Batch, None]:
    loop = pool.loop
    remaining = None if deadline is None else max(deadline - loop.time(), 0.001)
    response = await send(
        pool,
        client._url(request.path),
        request.body,
        {**client._headers, **request.headers} if request.headers else client._headers,
        timeout=timeout,
        remaining=remaining,
        proxy=client._proxy,
        attempt=attempt,
    )
    pool.live.add(response)
    accumulator.request_id = response.headers.get("x-request-id")
    if observer is not None:
        observer.response(response.status, accumulator.request_id)
    completed = False
    try:
        content_type = response.headers.get("content-type", "")
        try:
            if "json" in content_type:
                batch = await _json_reply(response, accumulator)
                if batch:
                    yield batch
            elif "event-stream" in content_type:
                async with aclosing(_sse_reply(response, accumulator)) as batches:
                    async for batch in batches:
                        yield batch
            else:
                raise ProtocolError(
                    f"expected an event stream, got {content_type or 'no content type'!r}",
                    request_id=accumulator.request_id,
                )
        except TongyiError:
            raise
        except TRANSPORT_ERRORS as exc:
            expired = deadline is not None and loop.time() >= deadline - 0.001
            raise map_transport_error(
                exc, accumulator.last, accumulator.request_id, total_expired=expired
            ) from exc
        if not accumulator.is_complete:
            raise accumulator.interrupted()
        completed = True
    finally:
        pool.live.discard(response)
        if completed:
            response.release()
        else:
            response.close()


async def _sse_reply(
    response: aiohttp.ClientResponse, accumulator: Accumulator
) -> AsyncGenerator[_Batch, None]:
    """Decode the body chunk by chunk; outputs decoded before an error are yielded first."""
    decoder = SSEDecoder()
    feed = decoder.feed
    add = accumulator.add_event
    batch: _Batch = []
    try:
        async for chunk in response.content.iter_any():
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


async def _json_reply(response: aiohttp.ClientResponse, accumulator: Accumulator) -> _Batch:
    """A non-stream JSON reply to a stream request is the single final frame."""
    body = await response.read()
    try:
        frame = json.loads(body)
    except ValueError:
        frame = None
    if not isinstance(frame, dict):
        raise ProtocolError(
            "the JSON reply is not a JSON object", request_id=accumulator.request_id
        )
    return accumulator.add_frame(frame)


def _closed_error(error: TongyiError, accumulator: Accumulator) -> TongyiError:
    """Streams cut by ``aclose()`` report the close, not the socket error it caused."""
    if isinstance(error, APIConnectionError) and not isinstance(error, APITimeoutError):
        if accumulator.last is None:
            return APIConnectionError(
                "the client was closed while the stream was running",
                request_id=accumulator.request_id,
            )
        return map_transport_error(
            error,
            accumulator.last,
            accumulator.request_id,
            total_expired=False,
            reason="the client was closed",
        )
    return error
