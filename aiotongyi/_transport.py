"""HTTP exchanges on a loop's session: send a request, read bounded bodies and error replies."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import aiohttp

from ._call import TRANSPORT_ERRORS, Call
from ._errors import error_from_http_body
from ._exceptions import ProtocolError, TongyiError
from ._sessions import LoopSession

__all__ = ["MAX_JSON_BODY", "SecretHeaders", "read_body", "read_error", "send"]

logger = logging.getLogger("aiotongyi")

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


async def send(
    session: LoopSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    connect_timeout: float | None,
    proxy: str | None,
    call: Call | None = None,
) -> aiohttp.ClientResponse:
    """POST the request; a non-2xx answer is read (bounded) and raised as an ``APIError``.

    Transport errors propagate raw: the caller maps them inside :meth:`Call.errors`.
    ``call``: the call whose idle-read timer an error body's bytes restart.
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
        raise await read_error(response, request_id, call)
    return response


async def read_error(
    response: aiohttp.ClientResponse, request_id: str | None, call: Call | None = None
) -> TongyiError:
    """The ``APIError`` of a non-2xx answer, from its bounded body; the response is closed."""
    try:
        raw = await read_body(response, _MAX_ERROR_BODY, truncate=True, call=call)
    except TRANSPORT_ERRORS:
        raw = b""  # the status already tells what happened
    finally:
        response.close()
    error = error_from_http_body(
        response.status, response.headers.get("content-type", ""), raw, request_id
    )
    error.headers = {name.lower(): value for name, value in response.headers.items()}
    return error


async def read_body(
    response: aiohttp.ClientResponse, limit: int, *, truncate: bool, call: Call | None = None
) -> bytes:
    """The body, at most ``limit`` bytes: cut there, or a ``ProtocolError`` past it.

    Each chunk restarts ``call``'s idle-read timer: ``read`` bounds the silence
    between bytes, not the time a whole (slowly arriving) body takes.
    """
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_any():
        if call is not None:
            call.last_data = call.loop.time()
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
