"""The emulator's reply scripts: what to answer, and which faults to inject."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["ErrorEvent", "Reply", "ToolCallScript", "dumps", "http_error"]

SSE_CONTENT_TYPE = "text/event-stream;charset=UTF-8"
JSON_CONTENT_TYPE = "application/json"

# Defaults for http_error() when no code/message is given (PROTOCOL.md's error zoo).
_DEFAULT_ERRORS: dict[int, tuple[str, str]] = {
    400: ("InvalidParameter", "The request is invalid."),
    401: ("InvalidApiKey", "Invalid API-key provided."),
    403: ("AccessDenied", "Access denied."),
    404: ("ModelNotFound", "Model can not be found."),
    429: ("Throttling.RateQuota", "Requests rate limit exceeded, please try again later."),
    500: ("InternalError", "An internal error has occured, please try again later."),
    503: ("ModelServingError", "Too many requests. Your requests are being throttled."),
}
_GATEWAY_REASONS = {502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Time-out"}


@dataclass
class ToolCallScript:
    """One scripted tool call, streamed as ``tool_calls`` fragments.

    :param name: the function name (sent in the first fragment only).
    :param arguments: argument text, as one string or as fragments that clients
        concatenate verbatim; each fragment is one frame.
    :param id: the call id; ``None`` gives ``"call_"`` plus a short random hex.
    :param index: ``tool_calls[].index``; ``None`` uses the position in
        :attr:`Reply.tool_calls`.
    """

    name: str
    arguments: Sequence[str] | str
    id: str | None = None
    index: int | None = None


@dataclass
class ErrorEvent:
    """An in-stream ``event:error`` frame that ends a 200 stream.

    :param code: the DashScope error code, e.g. ``"Throttling.RateQuota"``.
    :param message: the error message.
    :param status: written as the frame's ``:HTTP_STATUS/NNN`` comment.
    :param after_frames: how many content frames go out before the error.
    :param space_after_colon: render ``event: error`` and ``data: {...}``.
    """

    code: str
    message: str
    status: int = 400
    after_frames: int = 0
    space_after_colon: bool = False


@dataclass
class Reply:
    """The emulator's script for answering one chat request.

    Content fields (``thinking``, ``text``, ``tool_calls``) each give one frame
    per delta, in that order; a finishing frame follows unless ``finish_reason``
    is ``None``. The remaining fields shape the bytes (status, headers, raw
    body, chunking, line endings) and inject faults (delays, stalls, drops,
    error events, malformed JSON, non-HTTP answers). See ``docs/testing.md``.

    :raises ValueError: for settings that cannot be served (a bad
        ``line_ending``, non-positive ``chunk_sizes``, ``choices < 1``, ...).
    """

    text: Sequence[str] | str = ()
    thinking: Sequence[str] = ()
    tool_calls: Sequence[ToolCallScript] = ()
    finish_reason: str | None = "stop"
    final_text: str = ""
    usage: tuple[int, int] | None = None
    request_id: str | None = None
    choices: int = 1
    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    raw_body: bytes | None = None
    content_type: str | None = None
    chunk_sizes: Sequence[int] | None = None
    line_ending: str = "\n"
    keepalive: bool = False
    first_byte_delay: float = 0.0
    frame_delay: float = 0.0
    stall_after_frames: int | None = None
    stall_seconds: float = 0.0
    drop_after_frames: int | None = None
    drop_after_bytes: int | None = None
    error_event: ErrorEvent | None = None
    malformed_frame_at: int | None = None
    reset_before_status: bool = False
    garbage: bytes | None = None
    drip_interval: float | None = None
    endless: bool = False

    def __post_init__(self) -> None:
        if self.line_ending not in ("\n", "\r\n", "\r"):
            raise ValueError(f"line_ending must be LF, CRLF or CR, not {self.line_ending!r}")
        if self.chunk_sizes is not None and (
            not self.chunk_sizes or any(size < 1 for size in self.chunk_sizes)
        ):
            raise ValueError("chunk_sizes must be a non-empty sequence of positive sizes")
        if self.choices < 1:
            raise ValueError("choices must be at least 1")
        for name in ("drop_after_frames", "drop_after_bytes", "stall_after_frames"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative")


def http_error(
    status: int,
    code: str = "",
    message: str = "",
    *,
    body: str = "json",
    retry_after: float | None = None,
    request_id: str | None = None,
) -> Reply:
    """A reply that fails with an HTTP error status.

    :param status: the HTTP status, e.g. ``429``.
    :param code: the DashScope code; empty picks a typical one for ``status``.
    :param message: the message; empty picks a typical one for ``status``.
    :param body: ``"json"`` (``{"code","message","request_id"}``), ``"html"``
        (a gateway's HTML page), ``"empty"`` (no body) or ``"sse"`` (one
        ``event:error`` frame carrying ``:HTTP_STATUS/<status>``).
    :param retry_after: seconds for a ``Retry-After`` header.
    :param request_id: the id in the body and ``x-request-id``; ``None`` draws
        a fresh uuid4 now (so one :class:`Reply` keeps one id).
    :raises ValueError: for an unknown ``body`` kind.
    """
    default_code, default_message = _DEFAULT_ERRORS.get(
        status, ("InternalError" if status >= 500 else "InvalidParameter", "Request failed.")
    )
    rid = request_id or str(uuid.uuid4())
    error = dumps(
        {"code": code or default_code, "message": message or default_message, "request_id": rid}
    )
    headers: dict[str, str] = {}
    if retry_after is not None:
        headers["Retry-After"] = _format_seconds(retry_after)
    if body == "json":
        raw, content_type = error.encode(), JSON_CONTENT_TYPE
    elif body == "html":
        raw, content_type = _gateway_page(status).encode(), "text/html"
    elif body == "empty":
        raw, content_type = b"", "text/plain; charset=utf-8"
    elif body == "sse":
        raw = f"id:1\nevent:error\n:HTTP_STATUS/{status}\ndata:{error}\n\n".encode()
        content_type = SSE_CONTENT_TYPE
    else:
        raise ValueError(f"body must be 'json', 'html', 'empty' or 'sse', not {body!r}")
    return Reply(
        status=status,
        headers=headers,
        raw_body=raw,
        content_type=content_type,
        request_id=rid,
        finish_reason=None,
    )


def _format_seconds(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else repr(float(seconds))


def _gateway_page(status: int) -> str:
    title = f"{status} {_GATEWAY_REASONS.get(status, 'Error')}"
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )


def dumps(value: object) -> str:
    """Compact JSON with raw UTF-8, as DashScope writes it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
