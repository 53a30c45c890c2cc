"""Build and check the native request body before anything is sent (pure)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable

from ._config import MULTIMODAL_PATH, TEXT_PATH
from ._media import LocalFile, has_media, local_files, normalize_parts, uses_oss
from ._models import ModelRequest, Timeout

__all__ = [
    "GenerateParams",
    "PreparedRequest",
    "RequestLike",
    "finish_uploads",
    "prepare_request",
]

ROLES = frozenset({"system", "user", "assistant", "tool"})
# oss:// URLs from DashScope's upload service resolve only when the request says so.
_OSS_HEADERS = {"X-DashScope-OssResourceResolve": "enable"}


@runtime_checkable
class _HasCommonMessages(Protocol):
    def to_common_messages(self) -> list[dict[str, Any]]: ...


RequestLike = ModelRequest | str | Sequence[Mapping[str, Any]] | _HasCommonMessages


class GenerateParams(TypedDict, total=False):
    """Keyword parameters of every generate call (``None`` means "not sent")."""

    model: str | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    max_tokens: int | None
    max_new_tokens: int | None
    stop: str | Sequence[str] | None
    seed: int | None
    presence_penalty: float | None
    repetition_penalty: float | None
    tools: Sequence[Mapping[str, Any]] | None
    tool_choice: str | Mapping[str, Any] | None
    parallel_tool_calls: bool | None
    enable_search: bool | None
    enable_thinking: bool | None
    thinking_budget: int | None
    response_format: Mapping[str, Any] | None
    n: int | None
    search_options: Mapping[str, Any] | None
    logprobs: bool | None
    top_logprobs: int | None
    enable_code_interpreter: bool | None
    vl_high_resolution_images: bool | None
    translation_options: Mapping[str, Any] | None
    extra_body: Mapping[str, Any] | None
    timeout: Timeout | float | None
    endpoint: Literal["text", "multimodal"] | None
    upload: bool | None


PARAMETER_NAMES = frozenset(GenerateParams.__annotations__)
# Fields of a DB-GPT ModelRequest read when not None (DBGPT.md).
_DBGPT_FIELDS = {
    "model": "model",
    "temperature": "temperature",
    "top_p": "top_p",
    "max_new_tokens": "max_tokens",
    "stop": "stop",
}


@dataclasses.dataclass(frozen=True, slots=True)
class PreparedRequest:
    """Everything a call sends, checked and encoded."""

    model: str
    path: str
    body: bytes
    incremental: bool
    timeout: Timeout | None  # None: the client's default
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)  # per request
    #: How many choices were asked for (``n``, 1 when not sent): ``Accumulator(choices=...)``.
    choices: int = 1
    # Local media still to upload: until finish_uploads(), body is empty and
    # document holds the body with LocalFile placeholders.
    uploads: tuple[LocalFile, ...] = ()
    document: Mapping[str, Any] | None = None


def prepare_request(
    request: RequestLike,
    params: Mapping[str, Any],
    *,
    default_model: str,
    model_alias: str | None,
) -> PreparedRequest:
    """Merge request and keyword params, validate them, and encode the body.

    :raises ValueError: for wrong types, out-of-range values or bad messages.
    """
    unknown = set(params) - PARAMETER_NAMES
    if unknown:
        raise ValueError(f"unknown parameter(s): {', '.join(sorted(unknown))}")
    merged, messages = _merge(request, params)
    model = merged.pop("model", None)
    if model is not None and not isinstance(model, str):
        raise ValueError(f"model must be a string, not {type(model).__name__}")
    if not model or model == model_alias:
        model = default_model
    timeout = merged.pop("timeout", None)
    if timeout is not None:
        timeout = Timeout.coerce(timeout)
    endpoint = merged.pop("endpoint", None)
    if endpoint not in (None, "text", "multimodal"):
        raise ValueError(f"endpoint must be 'text', 'multimodal' or None, not {endpoint!r}")
    extra_body = merged.pop("extra_body", None)
    upload = merged.pop("upload", False)
    if not isinstance(upload, bool):
        raise ValueError(f"upload must be True or False, not {upload!r}")
    checked_messages = [_check_message(i, m, upload) for i, m in enumerate(messages)]
    if not checked_messages:
        raise ValueError("a request needs at least one message")

    # Always: thinking and tools need "message", thinking needs increments, and
    # older models default to cumulative text frames (PROTOCOL.md).
    parameters: dict[str, Any] = {"result_format": "message", "incremental_output": True}
    for name, value in merged.items():
        parameters[name] = _check_parameter(name, value)
    if extra_body is not None:
        if not isinstance(extra_body, Mapping):
            raise ValueError(f"extra_body must be a mapping, not {type(extra_body).__name__}")
        parameters.update(extra_body)
    body = {"model": model, "input": {"messages": checked_messages}, "parameters": parameters}
    uploads = tuple(
        dict.fromkeys(
            file
            for message in checked_messages
            if isinstance(message.get("content"), list)
            for file in local_files(message["content"])
        )
    )
    # With uploads pending this only checks that the body encodes (placeholders
    # stand for the URLs); finish_uploads() encodes it for real.
    encoded = _encode(body, _PENDING if uploads else {})
    n = parameters.get("n")
    return PreparedRequest(
        model=model,
        path=_path(endpoint, model, checked_messages),
        body=b"" if uploads else encoded,
        incremental=parameters.get("incremental_output", False) is not False,
        headers=_OSS_HEADERS if _uses_oss(checked_messages) else {},
        timeout=timeout,
        choices=n if type(n) is int and n > 1 else 1,
        uploads=uploads,
        document=body if uploads else None,
    )


def finish_uploads(prepared: PreparedRequest, urls: Mapping[LocalFile, str]) -> PreparedRequest:
    """The request with each :class:`LocalFile` replaced by its uploaded ``oss://`` URL.

    :raises KeyError: when ``urls`` lacks one of ``prepared.uploads``.
    """
    if not prepared.uploads:
        return prepared
    assert prepared.document is not None
    missing = [file.name for file in prepared.uploads if file not in urls]
    if missing:
        raise KeyError(f"no uploaded URL for {', '.join(missing)}")
    return dataclasses.replace(
        prepared,
        body=_encode(prepared.document, urls),
        headers={**prepared.headers, **_OSS_HEADERS},
        uploads=(),
        document=None,
    )


class _Placeholders(dict[LocalFile, str]):
    def __missing__(self, key: LocalFile) -> str:
        return "oss://pending"


_PENDING = _Placeholders()


def _encode(body: Mapping[str, Any], urls: Mapping[LocalFile, str]) -> bytes:
    def default(value: object) -> str:
        if isinstance(value, LocalFile):
            return urls[value]
        raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")

    try:
        return json.dumps(
            body, ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=default
        ).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        reason = "it is nested too deeply" if isinstance(exc, RecursionError) else exc
        raise ValueError(f"the request cannot be encoded as JSON: {reason}") from None


def _merge(request: RequestLike, params: Mapping[str, Any]) -> tuple[dict[str, Any], Sequence[Any]]:
    """Parameters (keyword beats request field, ``None`` dropped) and the messages."""
    fields: dict[str, Any] = {}
    if isinstance(request, ModelRequest):
        fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)}
        messages: Any = fields.pop("messages")
    elif isinstance(request, str):
        messages = request
    elif isinstance(request, _HasCommonMessages):
        for source, target in _DBGPT_FIELDS.items():
            value = getattr(request, source, None)
            if value is not None:
                fields[target] = value
        messages = request.to_common_messages()
    elif isinstance(request, Sequence):
        messages = request
    else:
        raise ValueError(
            "request must be a ModelRequest, a str, a sequence of message mappings or an "
            f"object with to_common_messages(), not {type(request).__name__}"
        )
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    elif not isinstance(messages, Sequence):
        raise ValueError(f"messages must be a sequence, not {type(messages).__name__}")
    params = dict(params)
    if "max_new_tokens" in params:
        alias = params.pop("max_new_tokens")
        if params.get("max_tokens") is None:
            params["max_tokens"] = alias
    for name, value in params.items():
        if value is not None:
            fields[name] = value
    return {k: v for k, v in fields.items() if v is not None}, messages


def _check_message(position: int, message: Any, upload: bool) -> dict[str, Any]:
    where = f"messages[{position}]"
    if not isinstance(message, Mapping):
        raise ValueError(f"{where} must be a mapping with 'role' and 'content'")
    role = message.get("role")
    if role not in ROLES:
        raise ValueError(f"{where} has role {role!r}; use one of {', '.join(sorted(ROLES))}")
    content = message.get("content")
    if content is None:
        if role != "assistant" or not message.get("tool_calls"):
            raise ValueError(f"{where} has no content")
    elif isinstance(content, list | tuple):
        return {**message, "content": normalize_parts(f"{where}.content", content, upload=upload)}
    elif not isinstance(content, str):
        raise ValueError(
            f"{where} content must be a str or a list of parts, not {type(content).__name__}"
        )
    return dict(message)


def _uses_oss(messages: list[dict[str, Any]]) -> bool:
    return any(
        isinstance(message.get("content"), list) and uses_oss(message["content"])
        for message in messages
    )


def _path(endpoint: str | None, model: str, messages: list[dict[str, Any]]) -> str:
    """``endpoint`` if given, else PROTOCOL.md's rule: media parts or a vision/audio model.

    :raises ValueError: for a Qwen-Omni model without an explicit ``endpoint``.
    """
    if endpoint is not None:
        return MULTIMODAL_PATH if endpoint == "multimodal" else TEXT_PATH
    name = model.lower()
    if "omni" in name:
        # The model pages say Qwen-Omni "supports only OpenAI-compatible
        # invocation" (streaming only), and its -realtime variants speak
        # WebSocket: a native request would only come back as an error.
        raise ValueError(
            f"{model!r} is a Qwen-Omni model, which DashScope serves only through its "
            "OpenAI-compatible endpoint (.../compatible-mode/v1, stream=True; the -realtime "
            "ones over WebSocket), not the native API aiotongyi speaks; call it with an "
            "OpenAI client, or pass endpoint='multimodal' if your deployment serves it natively"
        )
    if "-vl" in name or name.startswith("qvq") or "-audio" in name:
        return MULTIMODAL_PATH
    for message in messages:
        content = message.get("content")
        if isinstance(content, list) and has_media(content):
            return MULTIMODAL_PATH
    return TEXT_PATH


def _number(name: str, value: Any, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind}, not {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, not {value!r}")
    return value


def _check_range(name: str, value: float, ok: bool, rule: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {rule}, not {value!r}")


_BOOLEANS = frozenset(
    {
        "parallel_tool_calls",
        "enable_search",
        "enable_thinking",
        "logprobs",
        "enable_code_interpreter",
        "vl_high_resolution_images",
    }
)


def _check_parameter(name: str, value: Any) -> Any:
    """Type and range rules from PROTOCOL.md; model-specific rules are the service's."""
    if name == "temperature":
        v = _number(name, value)
        _check_range(name, v, 0 <= v < 2, "in [0, 2)")
    elif name == "top_p":
        v = _number(name, value)
        _check_range(name, v, 0 < v <= 1, "in (0, 1]")
    elif name == "top_k":
        v = _number(name, value, integer=True)
        _check_range(name, v, v >= 0, ">= 0")
    elif name in ("max_tokens", "thinking_budget"):
        v = _number(name, value, integer=True)
        _check_range(name, v, v >= 1, ">= 1")
    elif name == "seed":
        v = _number(name, value, integer=True)
        _check_range(name, v, 0 <= v <= 2**63 - 1, "in [0, 2**63 - 1]")
    elif name == "presence_penalty":
        v = _number(name, value)
        _check_range(name, v, -2 <= v <= 2, "in [-2, 2]")
    elif name == "repetition_penalty":
        v = _number(name, value)
        _check_range(name, v, v > 0, "> 0")
    elif name == "n":
        v = _number(name, value, integer=True)
        _check_range(name, v, 1 <= v <= 4, "in [1, 4]")
    elif name == "top_logprobs":
        v = _number(name, value, integer=True)
        _check_range(name, v, 0 <= v <= 20, "in [0, 20]")
    elif name == "stop":
        return _check_stop(value)
    elif name in _BOOLEANS:
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, not {value!r}")
    elif name == "tools":
        return _check_tools(value)
    elif name == "tool_choice":
        if not (value in ("auto", "none") or isinstance(value, Mapping)):
            raise ValueError(f"tool_choice must be 'auto', 'none' or a mapping, not {value!r}")
    elif name in ("search_options", "translation_options"):
        if not isinstance(value, Mapping):
            raise ValueError(f"{name} must be a mapping, not {type(value).__name__}")
        return dict(value)
    elif name == "response_format":
        if not isinstance(value, Mapping) or not isinstance(value.get("type"), str):
            raise ValueError('response_format must be a mapping like {"type": "json_object"}')
    return value


def _check_stop(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        items = list(value)
        if all(isinstance(item, str) for item in items) or all(
            isinstance(item, int) and not isinstance(item, bool) for item in items
        ):
            return items
    raise ValueError("stop must be a str or a list of str (or of token ids)")


def _check_tools(value: Any) -> list[Any]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError("tools must be a list of tool mappings")
    for position, tool in enumerate(value):
        if not isinstance(tool, Mapping):
            raise ValueError(f"tools[{position}] must be a mapping")
    return list(value)
