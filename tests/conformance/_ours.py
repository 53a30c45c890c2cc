"""Drive aiotongyi through the emulator and normalise what it returns.

The shapes match ``_sdk``'s, so a parity check is one dict comparison.
Only public names of ``aiotongyi`` and ``aiotongyi.testing`` are used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from aiotongyi import (
    APIConnectionError,
    APIError,
    ModelOutput,
    StreamInterruptedError,
    TongyiLLMClient,
)
from aiotongyi.testing import DashScopeEmulator, Reply


def _parse_args(arguments: str) -> object:
    try:
        return json.loads(arguments)
    except ValueError:
        return arguments


def final_dict(out: ModelOutput) -> dict[str, object]:
    """The normalised final state of a stream, from its last output."""
    usage = out.usage
    return {
        "text": out.text,
        "thinking": out.thinking,
        "tool_calls": [
            {
                "index": call.index,
                "id": call.id,
                "name": call.name,
                "arguments": _parse_args(call.arguments),
            }
            for call in out.tool_calls
        ],
        "finish_reason": out.finish_reason,
        "usage": None
        if usage is None
        else [usage.prompt_tokens, usage.completion_tokens, usage.total_tokens],
        "request_id": out.request_id,
    }


def error_dict(exc: APIError) -> dict[str, object]:
    """The normalised view of an API error."""
    partial = exc.partial
    return {
        "error": {
            "status_code": exc.status_code,
            "code": exc.code or None,
            "message": exc.message,
            "request_id": exc.request_id,
            "class": type(exc).__name__,
            "partial_text": (partial.text or None) if partial is not None else None,
        }
    }


async def outcome(
    client: TongyiLLMClient,
    emu: DashScopeEmulator,
    reply: Reply,
    *,
    request: object = "hi",
    **params: Any,
) -> dict[str, object]:
    """Enqueue ``reply``, stream one answer, and normalise the result or error."""
    emu.enqueue(reply)
    last: ModelOutput | None = None
    try:
        async for out in client.generate_stream(request, **params):  # type: ignore[arg-type]
            last = out
    except APIError as exc:
        return error_dict(exc)
    except (StreamInterruptedError, APIConnectionError) as exc:
        partial = exc.partial
        return {
            "interrupted": {
                "partial_text": partial.text if partial is not None else None,
                "request_id": (partial.request_id if partial is not None else None)
                or exc.request_id,
            }
        }
    assert last is not None, "a stream that ends cleanly yields at least one output"
    return final_dict(last)


def raw_reply(
    body: bytes,
    *,
    status: int = 200,
    content_type: str = "text/event-stream;charset=UTF-8",
    headers: Mapping[str, str] | None = None,
    chunk_sizes: Sequence[int] | None = None,
) -> Reply:
    """An emulator reply that sends exactly ``body``."""
    return Reply(
        raw_body=body,
        status=status,
        content_type=content_type,
        headers=dict(headers or {}),
        chunk_sizes=chunk_sizes,
    )


async def collect(
    client: TongyiLLMClient,
    emu: DashScopeEmulator,
    *replies: Reply,
    request: object = "hi",
    **params: Any,
) -> tuple[list[ModelOutput], BaseException | None]:
    """Enqueue ``replies``, stream one answer; every output, and what was raised."""
    emu.enqueue(*replies)
    outputs: list[ModelOutput] = []
    try:
        async for out in client.generate_stream(request, **params):  # type: ignore[arg-type]
            outputs.append(out)
    except Exception as exc:
        return outputs, exc
    return outputs, None
