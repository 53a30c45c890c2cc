"""Deliberate differences between aiotongyi and the official dashscope SDK 2.0.2.

This is the one place that lists them, each with its reason. The parity tests
only relax a comparison after naming its entry with ``use(key)``, and
``test_every_difference_is_referenced`` checks that every entry is named somewhere.
Known SDK *bugs* are not differences: they live in ``test_sdk_bugs.py``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Difference:
    """One deliberate divergence from the official SDK."""

    key: str
    side: str  # "request" or "response"
    sdk: str
    aiotongyi: str
    reason: str


DELIBERATE_DIFFERENCES: tuple[Difference, ...] = (
    Difference(
        "accept-header",
        "request",
        "v2 sends httpx's default `Accept: */*` (only `X-DashScope-SSE: enable` asks for SSE); "
        "legacy sends `Accept: text/event-stream`",
        "`Accept: text/event-stream` with `X-DashScope-SSE: enable`",
        "PROTOCOL.md: send Accept with the SSE header. Compared against legacy only.",
    ),
    Difference(
        "content-type-charset",
        "request",
        "legacy: `application/json; charset=utf-8`",
        "`application/json` (v2 sends the same)",
        "JSON is UTF-8 by definition (RFC 8259); only the media type is compared.",
    ),
    Difference(
        "sdk-identification-headers",
        "request",
        "`x-dashscope-sdk-client`, `x-dashscope-sdk-session-id`, legacy `X-Accel-Buffering: no`, "
        "its own User-Agent",
        "none of them; `User-Agent: aiotongyi/...`",
        "PROTOCOL.md: don't imitate the official UA or its x-dashscope-sdk-* headers.",
    ),
    Difference(
        "body-serialisation",
        "request",
        "legacy: `json.dumps` with spaces, `model/parameters/input` key order",
        "compact UTF-8 JSON, `model/input/parameters`",
        "Same JSON value; bodies are compared parsed.",
    ),
    Difference(
        "always-message-incremental",
        "request",
        "legacy sends `result_format`/`incremental_output` only when passed (the tests pass "
        "`message`/`True`)",
        'always `result_format:"message"` and `incremental_output:true`',
        "PROTOCOL.md: model defaults differ; thinking and tools need them.",
    ),
    Difference(
        "incremental-output-rewrite",
        "request",
        "`incremental_output=False` is rewritten to `true` on the wire and merged client-side "
        "(v2 and legacy); only v2's `parameters={'incremental_output': False}` sends false",
        "`extra_body={'incremental_output': False}` sends false and the accumulator switches "
        "to snapshot mode",
        "aiotongyi never rewrites a parameter the caller set; snapshots are handled natively.",
    ),
    Difference(
        "legacy-drops-false-enable-search",
        "request",
        "legacy drops `enable_search=False` for `qwen*` models (sent only when truthy)",
        "`enable_search: false` is sent, as v2 does",
        "API.md: a value is sent when it is not None.",
    ),
    Difference(
        "vl-model-path",
        "request",
        "v2 picks the multimodal path only when a message has a media part, so a text-only "
        "`qwen-vl-max` call goes to the text path",
        "the model name also picks it (`-vl`, `qvq*`, `*-audio*`)",
        "PROTOCOL.md: those models live on the multimodal path; the text path answers `url error`.",
    ),
    Difference(
        "omni-refused",
        "request",
        "a `*omni*` model is sent to the native multimodal path",
        "refused with a `ValueError` naming the OpenAI-compatible endpoint, unless "
        "`endpoint='multimodal'` is passed (then the same request as the SDK's)",
        "The Qwen-Omni model pages: 'supports only OpenAI-compatible invocation' (streaming "
        "only); a native request cannot work.",
    ),
    Difference(
        "local-media-inline",
        "request",
        "a local path or `file://` URL in a media part is uploaded to OSS (getPolicy, then a "
        "POST to OSS) and sent as `oss://...` with `X-DashScope-OssResourceResolve: enable`",
        "a file up to 10 MiB is read and sent inline as `data:<mime>;base64,...`, no header; "
        "larger ones, and any with `upload=True`, are uploaded exactly as the SDK does "
        "(test_upload_parity.py)",
        "No extra round trips for small media; PROTOCOL.md allows data URIs. The tests decode "
        "the data URL and compare MIME type and bytes.",
    ),
    Difference(
        "media-bytes-and-paths",
        "request",
        "media values must be str: `bytes` and `pathlib.Path` raise (legacy TypeError/"
        "AttributeError, v2 ValidationError)",
        "`bytes` (type sniffed) and `os.PathLike` are accepted and inlined as data URLs",
        "Issue 9 asks for bytes and paths; the SDK is given the equivalent str to compare.",
    ),
    Difference(
        "openai-style-parts",
        "request",
        "legacy `MultiModalConversation` forwards `{'type': 'image_url', ...}` parts verbatim",
        "translated to native one-key parts (`{'image': url}`), as v2 does",
        "The native wire only knows one-key parts; compared against v2 only.",
    ),
    Difference(
        "error-class-granularity",
        "response",
        "PermissionDeniedError (403), ContentFilterError, InternalServerError, "
        "ServiceUnavailableError, GatewayTimeoutError",
        "AuthenticationError for 401/403, BadRequestError for DataInspectionFailed, "
        "ServerError for every 5xx",
        "API.md fixes the exception tree; the SDK's classes are compared through a mapping.",
    ),
    Difference(
        "arrearage-class",
        "response",
        "`Arrearage` (HTTP 400) raises PermissionDeniedError (class chosen by code)",
        "BadRequestError (class chosen by status)",
        "PROTOCOL.md lists Arrearage under 400; the status the server sent wins.",
    ),
    Difference(
        "502-class",
        "response",
        "502 has no class of its own: plain APIStatusError",
        "ServerError, like every 5xx",
        "API.md: 5xx is ServerError.",
    ),
    Difference(
        "html-error-message",
        "response",
        "the whole HTML page as the message",
        "the page's text, tags stripped, about 200 characters",
        "PROTOCOL.md: gateway pages carry no code; a short readable message is kinder to logs.",
    ),
)

_BY_KEY = {d.key: d for d in DELIBERATE_DIFFERENCES}


def use(key: str) -> Difference:
    """Name the difference a relaxation relies on (unknown keys fail loudly)."""
    return _BY_KEY[key]


# ---- request side ----------------------------------------------------------------


def media_type(value: str | None) -> str | None:
    """``application/json; charset=utf-8`` -> ``application/json``."""
    use("content-type-charset")
    return None if value is None else value.split(";")[0].strip().lower()


# ---- response side ---------------------------------------------------------------

_SDK_CLASS = {
    "BadRequestError": "BadRequestError",
    "ContentFilterError": "BadRequestError",
    "AuthenticationError": "AuthenticationError",
    "PermissionDeniedError": "AuthenticationError",
    "NotFoundError": "NotFoundError",
    "RateLimitError": "RateLimitError",
    "InternalServerError": "ServerError",
    "ServiceUnavailableError": "ServerError",
    "GatewayTimeoutError": "ServerError",
}
_TAG = re.compile(r"<[^>]*>")


def normalise_sdk_error(result: dict[str, object], *, is_html: bool) -> dict[str, object]:
    """The SDK's error outcome, relaxed by the response-side differences above."""
    if "error" not in result:
        return result
    out = copy.deepcopy(result)
    error = out["error"]
    assert isinstance(error, dict)
    cls = error["class"]
    status = error["status_code"]
    if cls != _SDK_CLASS.get(cls, cls):
        use("error-class-granularity")
    if error.get("code") == "Arrearage" and status == 400:
        use("arrearage-class")
        error["class"] = "BadRequestError"
    elif cls == "APIStatusError" and isinstance(status, int) and status >= 500:
        use("502-class")
        error["class"] = "ServerError"
    else:
        error["class"] = _SDK_CLASS.get(cls, cls)
    if is_html:
        use("html-error-message")
        error["message"] = None
    return out


def check_html_message(message: object, title: str) -> None:
    """aiotongyi's side of ``html-error-message``: short, tag-free, still informative."""
    use("html-error-message")
    assert isinstance(message, str)
    assert not _TAG.search(message), message
    assert title in message, message
    assert len(message) <= 300, message
