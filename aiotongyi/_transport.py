"""aiohttp plumbing: one pooled session per event loop, and error mapping in one place."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Mapping

import aiohttp

from ._errors import error_from_http_body
from ._exceptions import (
    APIConnectionError,
    APITimeoutError,
    StreamInterruptedError,
    TongyiError,
)
from ._models import ModelOutput, Timeout

__all__ = ["TRANSPORT_ERRORS", "Pool", "map_transport_error", "read_error", "send"]

logger = logging.getLogger("aiotongyi")

#: What aiohttp and the OS raise for a failed exchange (never CancelledError).
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, TimeoutError, OSError)
_MAX_ERROR_BODY = 64 * 1024


class Pool:
    """One ``aiohttp.ClientSession`` bound to one event loop, and the responses it has open.

    A pool we create closes itself when its loop shuts down: a started async
    generator is finalised by ``loop.shutdown_asyncgens()``, which
    ``asyncio.run``, ``asyncio.Runner`` and anyio all call before closing the
    loop, so no session outlives its loop with an "Unclosed" warning.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        session: aiohttp.ClientSession,
        *,
        owns_session: bool,
        on_closed: Callable[[Pool], None] | None = None,
    ) -> None:
        self.loop = loop
        self.session = session
        self.owns_session = owns_session
        self.live: set[aiohttp.ClientResponse] = set()
        self._on_closed = on_closed
        self._guard: AsyncGenerator[None, None] | None = None
        self.is_closed = False

    @classmethod
    async def create(cls, max_connections: int, on_closed: Callable[[Pool], None]) -> Pool:
        loop = asyncio.get_running_loop()
        connector = aiohttp.TCPConnector(limit=max_connections)
        # The client resolves proxy variables once and passes proxy= per request.
        session = aiohttp.ClientSession(connector=connector, trust_env=False)
        pool = cls(loop, session, owns_session=True, on_closed=on_closed)
        pool._guard = pool._close_with_loop()
        await pool._guard.__anext__()
        return pool

    async def _close_with_loop(self) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            await self._shutdown()

    async def aclose(self) -> None:
        """Abort open responses and close the session we own (idempotent)."""
        if self._guard is not None:
            guard, self._guard = self._guard, None
            await guard.aclose()
        else:
            await self._shutdown()

    def close_dead(self) -> None:
        """Close a pool whose loop was closed without ``shutdown_asyncgens()``.

        On a closed loop aiohttp's close path never suspends, so the guard can
        be run to completion right here; that also keeps its finaliser from
        being scheduled on the dead loop (an "Exception ignored" at exit).
        """
        if self._guard is None:
            return
        closer = self._guard.aclose()
        self._guard = None
        try:
            closer.send(None)
        except StopIteration:
            pass
        except Exception:  # best effort on a dead loop; nothing left to protect
            logger.debug("closing a pool of a closed event loop failed", exc_info=True)
        else:
            closer.close()

    async def _shutdown(self) -> None:
        if self.is_closed:
            return
        self.is_closed = True
        for response in list(self.live):
            response.close()
        self.live.clear()
        if self.owns_session:
            await self.session.close()
        if self._on_closed is not None:
            self._on_closed(self)


async def send(
    pool: Pool,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: Timeout,
    remaining: float | None,
    proxy: str | None,
    attempt: int,
) -> aiohttp.ClientResponse:
    """POST the request; a non-2xx answer is read and raised as an :class:`APIError`."""
    loop = pool.loop
    started = loop.time()
    try:
        response = await pool.session.post(
            url,
            data=body,
            headers=headers,
            proxy=proxy,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(
                total=remaining, sock_connect=timeout.connect, sock_read=timeout.read
            ),
        )
    except TRANSPORT_ERRORS as exc:
        expired = _expired(remaining, started, loop)
        raise map_transport_error(exc, None, None, total_expired=expired) from exc
    request_id = response.headers.get("x-request-id")
    logger.debug(
        "POST %s -> %d (attempt %d, request_id=%s, %.1f ms to headers)",
        url,
        response.status,
        attempt + 1,
        request_id,
        (loop.time() - started) * 1000,
    )
    if response.status >= 300:
        raise await read_error(response, request_id)
    return response


async def read_error(response: aiohttp.ClientResponse, request_id: str | None) -> TongyiError:
    """Read a bounded error body and turn it into the matching :class:`APIError`."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.content.iter_any():
            chunks.append(chunk)
            size += len(chunk)
            if size >= _MAX_ERROR_BODY:
                break
    except TRANSPORT_ERRORS:
        pass  # the status already tells what happened; keep what arrived
    finally:
        response.close()
    error = error_from_http_body(
        response.status, response.headers.get("content-type", ""), b"".join(chunks), request_id
    )
    error.headers = response.headers
    return error


def map_transport_error(
    exc: BaseException,
    partial: ModelOutput | None,
    request_id: str | None,
    *,
    total_expired: bool,
    reason: str | None = None,
) -> TongyiError:
    """The aiotongyi error for an aiohttp/OS failure, before or after content began."""
    if isinstance(exc, asyncio.TimeoutError | TimeoutError):
        if total_expired:
            message = "the total timeout expired"
        elif isinstance(exc, aiohttp.ServerTimeoutError) and "connect" in str(exc).lower():
            message = "timed out connecting to DashScope"
        else:
            message = "timed out waiting for data from DashScope (read timeout)"
        return APITimeoutError(message, request_id=request_id, partial=partial)
    detail = reason or _describe(exc)
    if partial is not None:
        return StreamInterruptedError(
            f"the stream broke after content began: {detail}",
            request_id=request_id,
            partial=partial,
        )
    return APIConnectionError(f"connection to DashScope failed: {detail}", request_id=request_id)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _expired(remaining: float | None, started: float, loop: asyncio.AbstractEventLoop) -> bool:
    return remaining is not None and loop.time() - started >= remaining - 0.001
