"""Drive the official ``dashscope`` SDK (2.0.2) against scripted bytes.

* v2 (``dashscope.Client`` / ``AsyncClient(protocol="native")``) speaks httpx,
  so respx answers it in-process, with any chunking and mid-body failures.
* legacy (``Generation`` / ``AioGeneration``) speaks requests / aiohttp, so it
  is pointed at the emulator through ``dashscope.base_http_api_url``.

Every result is normalised to the same plain ``dict`` shape as
``_ours.outcome`` produces for aiotongyi, so parity is a dict comparison.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

import dashscope
import httpx
import respx
from dashscope.v2 import errors as v2_errors

from . import _sdk_internals

SDK_BASE_URL = "http://dashscope.sdk.test/api/v1"
TEXT_PATH = "/services/aigc/text-generation/generation"
MULTIMODAL_PATH = "/services/aigc/multimodal-generation/generation"
SDK_KEY = "sk-conformance"

# Process-global SDK state that a test may touch; conftest restores it.
LEGACY_GLOBALS = (
    "api_key",
    "base_http_api_url",
    "base_websocket_api_url",
    "base_compatible_api_url",
    "api_key_file_path",
)


class ChunkStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """An httpx body that yields fixed chunks, then optionally fails (a reset)."""

    def __init__(self, chunks: Sequence[bytes], fail_with: Exception | None = None) -> None:
        self.chunks = list(chunks)
        self.fail_with = fail_with

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.fail_with is not None:
            raise self.fail_with

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk
        if self.fail_with is not None:
            raise self.fail_with

    def close(self) -> None:
        """Nothing to release."""

    async def aclose(self) -> None:
        """Nothing to release."""


def respond(
    body: bytes,
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    chunks: Sequence[int] | None = None,
    fail_with: Exception | None = None,
) -> httpx.Response:
    """An httpx response replaying ``body`` cut into ``chunks`` (cycled) byte sizes."""
    pieces: list[bytes]
    if chunks:
        pieces, pos, i = [], 0, 0
        while pos < len(body):
            size = chunks[i % len(chunks)]
            pieces.append(body[pos : pos + size])
            pos, i = pos + size, i + 1
    else:
        pieces = [body] if body else []
    return httpx.Response(
        status, headers=dict(headers or {}), stream=ChunkStream(pieces, fail_with)
    )


@contextlib.contextmanager
def sdk_router(*responses: httpx.Response | Exception) -> Iterator[respx.Route]:
    """Mock the v2 SDK's chat paths; successive calls get successive responses."""
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        route = router.post(url__startswith=SDK_BASE_URL + "/services/aigc/")
        if len(responses) == 1 and not isinstance(responses[0], Exception):
            only = responses[0]
            route.mock(side_effect=lambda request: _fresh(only))
        else:
            route.mock(side_effect=list(responses))
        yield route


def _fresh(response: httpx.Response) -> httpx.Response:
    # A response's stream is consumed once; a route answering several calls
    # (sync then async) needs a fresh copy each time.
    stream = response.stream
    assert isinstance(stream, ChunkStream)
    return httpx.Response(
        response.status_code,
        headers=response.headers,
        stream=ChunkStream(stream.chunks, stream.fail_with),
    )


def v2_client(**kwargs: Any) -> dashscope.Client:
    """A v2 sync client on the respx base URL, no retries unless asked."""
    kwargs.setdefault("max_retries", 0)
    return dashscope.Client(api_key=SDK_KEY, base_url=SDK_BASE_URL, protocol="native", **kwargs)


def v2_async_client(**kwargs: Any) -> dashscope.AsyncClient:
    """A v2 async client on the respx base URL, no retries unless asked."""
    kwargs.setdefault("max_retries", 0)
    return dashscope.AsyncClient(
        api_key=SDK_KEY, base_url=SDK_BASE_URL, protocol="native", **kwargs
    )


# ---- normalisation -------------------------------------------------------------


def _parse_args(arguments: str | None) -> object:
    try:
        return json.loads(arguments or "")
    except ValueError:
        return arguments


def _final_dict(final: Any) -> dict[str, object]:
    choice = final.choices[0] if final.choices else None
    message = choice.message if choice is not None else None
    usage = final.usage
    tool_calls = []
    for i, call in enumerate((message.tool_calls if message else None) or []):
        tool_calls.append(
            {
                "index": call.index if call.index is not None else i,
                "id": call.id,
                "name": call.function.name,
                "arguments": _parse_args(call.function.arguments),
            }
        )
    return {
        "text": (message.content if message else None) or "",
        "thinking": (message.reasoning_content if message else None) or "",
        "tool_calls": tool_calls,
        "finish_reason": choice.finish_reason if choice is not None else None,
        "usage": _usage(usage),
        "request_id": final.request_id,
    }


def _usage(usage: Any) -> list[int] | None:
    if usage is None:
        return None
    total = usage.total_tokens or (usage.input_tokens + usage.output_tokens)
    return [usage.input_tokens, usage.output_tokens, total]


def _error_dict(exc: v2_errors.DashScopeError, partial: str | None) -> dict[str, object]:
    return {
        "error": {
            "status_code": exc.status_code,
            "code": exc.code or None,
            "message": exc.message,
            "request_id": exc.request_id,
            "class": type(exc).__name__,
            "partial_text": partial,
        }
    }


def _text_of(chunks: Sequence[Any]) -> str | None:
    text = "".join((c.delta.content or "") for c in chunks if c.delta is not None)
    return text or None


def _aggregate(chunks: list[Any], cumulative: bool) -> Any:
    # Exactly what ChatStream.get_final_message() does with the same chunks;
    # collecting them first keeps the partial text when the stream raises.
    return _sdk_internals.aggregate(chunks, cumulative)


def _create_kwargs(cumulative: bool, params: Mapping[str, Any]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"model": "qwen-plus", "messages": "hi", "stream": True}
    if cumulative:
        # The escape hatch the SDK offers for real server-side snapshots.
        kwargs["parameters"] = {"incremental_output": False}
    kwargs.update(params)
    return kwargs


def v2_outcome(
    client: dashscope.Client, *, cumulative: bool = False, **params: Any
) -> dict[str, object]:
    """Run one streamed chat through a v2 sync client; normalise the result."""
    chunks: list[Any] = []
    try:
        stream = client.chat.completions.create(**_create_kwargs(cumulative, params))
        chunks.extend(stream)
    except v2_errors.DashScopeError as exc:
        return _error_dict(exc, _text_of(chunks))
    return _final_dict(_aggregate(chunks, cumulative))


async def v2_async_outcome(
    client: dashscope.AsyncClient, *, cumulative: bool = False, **params: Any
) -> dict[str, object]:
    """Run one streamed chat through a v2 async client; normalise the result."""
    chunks: list[Any] = []
    try:
        stream = await client.chat.completions.create(**_create_kwargs(cumulative, params))
        async for chunk in stream:
            chunks.append(chunk)
    except v2_errors.DashScopeError as exc:
        return _error_dict(exc, _text_of(chunks))
    return _final_dict(_aggregate(chunks, cumulative))


# ---- legacy API through the emulator ------------------------------------------

# dashscope's own stubs type these calls as a response-or-generator union (and
# the async close as sync); seen through ``Any`` they are what they are at runtime.
_LEGACY: Any = dashscope


def legacy_call(**kwargs: Any) -> Iterator[Any]:
    """``Generation.call(stream=True, ...)``: an iterator of responses."""
    return _LEGACY.Generation.call(**kwargs)  # type: ignore[no-any-return]


async def legacy_acall(**kwargs: Any) -> AsyncIterator[Any]:
    """``AioGeneration.call(stream=True, ...)``: an async iterator of responses."""
    return await _LEGACY.AioGeneration.call(**kwargs)  # type: ignore[no-any-return]


async def close_legacy_aio_session() -> None:
    """Close the legacy API's shared aiohttp session of the running loop."""
    await _LEGACY.close_shared_aio_session()


@contextlib.contextmanager
def legacy_base_url(base_url: str) -> Iterator[None]:
    """Point the legacy API at ``base_url``; restore the global afterwards."""
    saved = dashscope.base_http_api_url
    dashscope.base_http_api_url = base_url
    try:
        yield
    finally:
        dashscope.base_http_api_url = saved


def legacy_responses(**params: Any) -> list[Any]:
    """Every ``GenerationResponse`` a legacy sync stream yields."""
    kwargs: dict[str, Any] = {
        "model": "qwen-plus",
        "messages": [{"role": "user", "content": "hi"}],
        "api_key": SDK_KEY,
        "stream": True,
        "result_format": "message",
        "incremental_output": True,
    }
    kwargs.update(params)
    return list(legacy_call(**kwargs))


async def legacy_async_responses(**params: Any) -> list[Any]:
    """Every ``GenerationResponse`` a legacy async stream yields."""
    kwargs: dict[str, Any] = {
        "model": "qwen-plus",
        "messages": [{"role": "user", "content": "hi"}],
        "api_key": SDK_KEY,
        "stream": True,
        "result_format": "message",
        "incremental_output": True,
    }
    kwargs.update(params)
    out = []
    try:
        async for response in await legacy_acall(**kwargs):
            out.append(response)
    finally:
        await close_legacy_aio_session()
    return out


def legacy_text(responses: Sequence[Any]) -> str:
    """Concatenated message content of incremental legacy responses."""
    text = []
    for response in responses:
        output = response.output
        if output and output.choices:
            text.append(output.choices[0].message.content or "")
    return "".join(text)


def load_plain() -> Any:
    """The ``plain_text`` transcript: a well-formed answer for request captures."""
    from ._transcripts import load

    return load("plain_text")


# ---- multimodal: the legacy MultiModalConversation and OSS uploads -----------------

#: Where the faked OSS upload says a local file went: ``FAKE_OSS + basename``.
FAKE_OSS = "oss://conformance-uploads/"


def legacy_multimodal_call(**kwargs: Any) -> Iterator[Any]:
    """``MultiModalConversation.call(stream=True, ...)``: an iterator of responses."""
    return _LEGACY.MultiModalConversation.call(**kwargs)  # type: ignore[no-any-return]


async def legacy_multimodal_acall(**kwargs: Any) -> AsyncIterator[Any]:
    """``AioMultiModalConversation.call(stream=True, ...)``: an async iterator."""
    return await _LEGACY.AioMultiModalConversation.call(**kwargs)  # type: ignore[no-any-return]


@contextlib.contextmanager
def fake_oss_uploads() -> Iterator[list[str]]:
    """Replace the SDK's OSS uploader (legacy and v2 share it); yield the uploaded paths.

    The real one asks ``/uploads?action=getPolicy`` for a certificate, then
    POSTs the file to OSS: nothing of that may leave the machine.
    """
    from dashscope.utils.oss_utils import OssUtils

    uploaded: list[str] = []

    def upload(
        cls: type, /, model: str, file_path: str, api_key: str | None = None, **kwargs: Any
    ) -> tuple[str, dict[str, str]]:
        uploaded.append(file_path)
        return FAKE_OSS + os.path.basename(file_path), {"fake": "certificate"}

    def no_certificate(cls: type, /, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the SDK asked for an OSS upload certificate")

    # Seen through Any: the stubs' signatures are not what is being replaced here.
    oss: Any = OssUtils
    saved = oss.__dict__["upload"], oss.__dict__["get_upload_certificate"]
    oss.upload, oss.get_upload_certificate = classmethod(upload), classmethod(no_certificate)
    try:
        yield uploaded
    finally:
        oss.upload, oss.get_upload_certificate = saved
