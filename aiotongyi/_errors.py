"""Turn DashScope error payloads and HTTP error bodies into typed exceptions (pure)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping

from ._exceptions import (
    APIError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    RateLimitError,
    ServerError,
)
from ._models import ModelOutput
from ._sse import SSEDecoder, SSEProtocolError

__all__ = [
    "api_error",
    "error_for_status",
    "error_from_http_body",
    "error_from_payload",
    "infer_status",
]

# The one InternalError* code that is really a bad parameter (PROTOCOL.md).
_PARAMETER_ALGO_ERROR = "InternalError.Algo.InvalidParameter"
_TAG = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.DOTALL | re.IGNORECASE)
_MAX_HTML_MESSAGE = 200
_MAX_MESSAGE = 2000  # a service message is a sentence; anything longer is cut

_CLASS_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    429: RateLimitError,
}


def error_for_status(status_code: int) -> type[APIError]:
    """The :class:`APIError` subclass for an effective HTTP status."""
    if status_code >= 500:
        return ServerError
    return _CLASS_BY_STATUS.get(status_code, APIError)


def infer_status(code: str) -> int:
    """The HTTP status a code implies when nothing on the wire says it."""
    if code == _PARAMETER_ALGO_ERROR:
        return 400
    if code.startswith("Throttling"):
        return 429
    if code == "InvalidApiKey":
        return 401
    if "AccessDenied" in code:
        return 403
    if code == "ModelNotFound":
        return 404
    if code.startswith("InternalError") or code in ("SystemError", "ModelServiceFailed"):
        return 500
    if code in ("ModelServingError", "ModelUnavailable"):
        return 503
    return 400


def api_error(
    status: int | None,
    code: str,
    message: str,
    request_id: str | None,
    partial: ModelOutput | None = None,
) -> APIError:
    """The right :class:`APIError` subclass for an effective status and code."""
    if code == _PARAMETER_ALGO_ERROR:
        status = 400
        cls: type[APIError] = BadRequestError
    else:
        if status is None or 200 <= status < 300:
            status = infer_status(code) if code else 500
        cls = error_for_status(status)
    return cls(
        message or code or f"HTTP {status}",
        status_code=status,
        code=code,
        request_id=request_id,
        partial=partial,
    )


def error_from_payload(
    payload: Mapping[str, object],
    status: int | None,
    request_id: str | None,
    partial: ModelOutput | None = None,
) -> APIError:
    """An error from a ``{"code", "message", "request_id"}`` payload, maybe nested in ``error``."""
    nested = payload.get("error")
    if isinstance(nested, Mapping):
        payload = {**payload, **nested}
    code = payload.get("code")
    message = payload.get("message", payload.get("msg"))
    rid = payload.get("request_id")
    return api_error(
        status,
        _short(code) if code not in (None, "") else "",
        _short(message) if message is not None else "",
        rid if isinstance(rid, str) and rid else request_id,
        partial,
    )


def _short(value: object) -> str:
    """A payload field as a one-line-ish string of bounded size."""
    try:
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = f"<{type(value).__name__}>"
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return text


def error_from_http_body(
    status: int, content_type: str, body: bytes, request_id: str | None
) -> APIError:
    """An error from a non-2xx reply: JSON, an SSE ``event:error`` frame, or HTML/text."""
    text = body
    if "event-stream" in content_type:
        try:
            decoder = SSEDecoder()
            events = decoder.feed(body) + decoder.flush()
        except SSEProtocolError:
            events = []
        for event in events:
            payload = _json_object(event.data)
            if payload is not None:
                return error_from_payload(payload, event.status or status, request_id)
        if events:  # no JSON in it: the first event's data says more than its framing
            text = events[0].data
    payload = _json_object(body)
    if payload is not None:
        return error_from_payload(payload, status, request_id)
    return api_error(status, "", _plain_text(text) or f"HTTP {status}", request_id)


def _json_object(raw: bytes) -> Mapping[str, object] | None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply to decode
        return None
    return value if isinstance(value, dict) else None


def _plain_text(body: bytes) -> str:
    text = html.unescape(_TAG.sub(" ", body.decode("utf-8", "replace")))
    text = " ".join(text.split())
    if len(text) > _MAX_HTML_MESSAGE:
        text = text[: _MAX_HTML_MESSAGE - 3] + "..."
    return text
