"""The emulator's reply scripts: what to answer, and which faults to inject."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ErrorEvent",
    "Reply",
    "ToolCallScript",
    "dumps",
    "http_error",
    "load_script",
    "reply_from_json",
]

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


def load_script(path: str | Path) -> list[Reply]:
    """Replies from a file: a JSON array of objects, or one JSON object per line.

    Each object holds :class:`Reply` fields (see :func:`reply_from_json`).

    :raises OSError: when the file cannot be read.
    :raises ValueError: for bad JSON or an object that is not a valid reply,
        naming the entry.
    """
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    entries: list[Any]
    if stripped.startswith("["):
        try:
            entries = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"not valid JSON: {exc}") from None
    else:
        entries = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    entries.append(json.loads(line))
                except ValueError as exc:
                    raise ValueError(f"line {number} is not valid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise ValueError("expected a JSON array or JSON lines")
    return [_numbered_reply(position, entry) for position, entry in enumerate(entries)]


def _numbered_reply(position: int, entry: object) -> Reply:
    try:
        return reply_from_json(entry)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"reply {position}: {exc}") from None


_REPLY_FIELDS = frozenset(f.name for f in dataclasses.fields(Reply))


def reply_from_json(entry: object) -> Reply:
    """A :class:`Reply` from a JSON object of its fields.

    ``tool_calls`` items and ``error_event`` are objects of
    :class:`ToolCallScript` and :class:`ErrorEvent` fields; ``usage`` is
    ``[input, output]``; ``raw_body`` and ``garbage`` are text (sent as UTF-8).
    ``{"http_error": {...}}`` stands for :func:`http_error` with those arguments.

    :raises ValueError: for unknown fields or values a reply cannot take.
    """
    if not isinstance(entry, dict):
        raise ValueError(f"expected a JSON object, not {type(entry).__name__}")
    if "http_error" in entry:
        arguments = entry["http_error"]
        if len(entry) != 1 or not isinstance(arguments, dict):
            raise ValueError('"http_error" must be the only key, with an object of arguments')
        return http_error(**arguments)
    unknown = sorted(set(entry) - _REPLY_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}")
    fields: dict[str, Any] = dict(entry)
    if "tool_calls" in fields:
        calls = fields["tool_calls"]
        if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
            raise ValueError("tool_calls must be a list of objects")
        fields["tool_calls"] = [ToolCallScript(**call) for call in calls]
    if isinstance(fields.get("error_event"), dict):
        fields["error_event"] = ErrorEvent(**fields["error_event"])
    if isinstance(fields.get("usage"), list):
        fields["usage"] = tuple(fields["usage"])
    for name in ("raw_body", "garbage"):
        if isinstance(fields.get(name), str):
            fields[name] = fields[name].encode()
    return Reply(**fields)
