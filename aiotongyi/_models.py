"""Public value types: requests, outputs, usage, tool calls and timeouts."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ModelOutput",
    "ModelRequest",
    "SearchInfo",
    "SearchResult",
    "Timeout",
    "TokenLogprob",
    "ToolCall",
    "TopLogprob",
    "Usage",
]


_GENERATE_ERROR_PREFIX = "**LLMServer Generate Error, Please CheckErrorInfo.**: "


@dataclass(frozen=True, slots=True)
class Timeout:
    """Time limits of one call, in seconds; ``None`` means no limit.

    :param connect: to open the TCP (and TLS) connection.
    :param read: the longest silence between two received bytes.
    :param total: the whole call, retries and backoff included.
    """

    connect: float | None = 5.0
    read: float | None = 60.0
    total: float | None = None

    def __post_init__(self) -> None:
        for name in ("connect", "read", "total"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"Timeout.{name} must be a number or None, not {value!r}")
            # inf would overflow the event loop's timer; use None for "no limit"
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(
                    f"Timeout.{name} must be a finite number > 0 (None for no limit), not {value!r}"
                )

    @classmethod
    def coerce(cls, value: Timeout | float | None) -> Timeout:
        """``None`` -> ``Timeout()``, a number -> ``Timeout(total=number)``."""
        if value is None:
            return cls()
        if isinstance(value, Timeout):
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"timeout must be a Timeout, a number or None, not {value!r}")
        return cls(total=float(value))


class ReadOnlyMapping(Mapping[str, object]):
    """A read-only view of a decoded JSON object, as sent (no copy is made).

    Unlike ``types.MappingProxyType`` it pickles and deep-copies (as a copy of
    the data), so outputs and errors that hold one cross process boundaries.
    Nested objects are the decoded values themselves: treat them as read-only.
    """

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, object] | None = None) -> None:
        self._data: Mapping[str, object] = {} if data is None else data

    def __getitem__(self, key: str) -> object:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __repr__(self) -> str:
        return repr(self._data)

    def __reduce__(self) -> tuple[type[ReadOnlyMapping], tuple[dict[str, object]]]:
        return type(self), (dict(self._data),)


_EMPTY = ReadOnlyMapping()


def _empty() -> ReadOnlyMapping:
    return _EMPTY


@dataclass(frozen=True)
class Usage:
    """Token counts of a call (running totals; the last frame's win).

    ``prompt_tokens`` is DashScope's ``input_tokens``, ``completion_tokens`` its
    ``output_tokens`` (reasoning included).  The details are ``None`` when the
    service did not send them; ``raw`` is the usage object as sent, for any
    field not listed here (``seconds``, ``cache_creation``, ...).

    :param cached_tokens: read from ``prompt_tokens_details`` /
        ``input_tokens_details``, or the top level of ``usage``.
    :param plugins: per-plugin counts such as ``{"search": {"count": 1}}``.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    image_tokens: int | None = None
    audio_tokens: int | None = None
    video_tokens: int | None = None
    plugins: Mapping[str, object] | None = field(default=None, hash=False)
    raw: Mapping[str, object] = field(default_factory=_empty, hash=False, compare=False, repr=False)

    @classmethod
    def _of(
        cls,
        prompt_tokens: int,
        completion_tokens: int,
        total_tokens: int,
        raw: dict[str, Any],
        details: dict[str, Any] | None = None,
    ) -> Usage:
        """Build without the frozen ``__init__`` (once per frame whose counts changed).

        ``details`` holds the optional fields that were sent; the others keep
        their class defaults, and ``raw`` is wrapped only when read.
        """
        usage = object.__new__(cls)
        fields = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": total_tokens,
            "_raw_at": raw,
        }
        if details:
            fields.update(details)
        object.__setattr__(usage, "__dict__", fields)
        return usage

    @classmethod
    def _plain(cls, raw: dict[str, Any]) -> Usage:
        """The usage of the three plain counts (input, output, total), ints already checked."""
        return cls._of(raw["input_tokens"], raw["output_tokens"], raw["total_tokens"], raw)

    def to_dict(self) -> dict[str, int]:
        """The three OpenAI-style keys DB-GPT's metrics read."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call merged from its streamed fragments.

    :param arguments: JSON text, concatenated verbatim from the fragments.
    """

    index: int
    id: str
    name: str
    arguments: str
    type: str = "function"

    def to_dict(self) -> dict[str, object]:
        """The wire form, for the assistant turn of a tool round trip."""
        return {
            "index": self.index,
            "id": self.id,
            "type": self.type,
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True, slots=True)
class TopLogprob:
    """One of the likeliest tokens at a position (``top_logprobs`` of a :class:`TokenLogprob`).

    :param bytes: the token's UTF-8 bytes as integers (``None`` when not sent).
    """

    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """A generated token with its log probability (``logprobs=True``)."""

    token: str
    logprob: float
    bytes: tuple[int, ...] | None = None
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True, slots=True)
class SearchResult:
    """A web page the answer drew on (``enable_search`` with ``enable_source``)."""

    index: int | None = None
    title: str = ""
    url: str = ""
    site_name: str = ""
    icon: str = ""


@dataclass(frozen=True, slots=True)
class SearchInfo:
    """What web search returned (``output.search_info``)."""

    search_results: tuple[SearchResult, ...] = ()


@dataclass(frozen=True)
class ModelOutput:
    """One content frame of a streamed answer (immutable).

    ``text`` and ``thinking`` are cumulative; ``delta`` and ``thinking_delta``
    are what this frame added.  ``finish_reason`` is ``None`` until the end.
    ``error_code`` is ``0`` except in outputs built by :meth:`from_error`.

    ``raw`` is the decoded JSON frame this output was built from, read-only
    (``{}`` for outputs not built from a frame): every field the service
    sends is reachable there, including those with no attribute here.
    ``search_info`` and ``tool_info`` are the latest the service sent, kept
    on later outputs; ``logprobs`` is cumulative and ``logprobs_delta`` is
    this frame's tokens (``()`` unless ``logprobs=True`` was asked).
    """

    text: str = ""
    delta: str = ""
    thinking: str = ""
    thinking_delta: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None
    request_id: str | None = None
    model: str = ""
    index: int = 0
    error_code: int = 0
    #: Non-text content parts received so far (multimodal replies), as sent.
    parts: tuple[Mapping[str, object], ...] = field(default=(), hash=False)
    raw: Mapping[str, object] = field(default_factory=_empty, hash=False, compare=False, repr=False)
    search_info: SearchInfo | None = None
    logprobs: tuple[TokenLogprob, ...] = ()
    logprobs_delta: tuple[TokenLogprob, ...] = ()
    tool_info: tuple[Mapping[str, object], ...] = field(default=(), hash=False)

    def __getstate__(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __setstate__(self, state: dict[str, object]) -> None:
        object.__setattr__(self, "__dict__", dict(state))

    def to_message(self) -> dict[str, object]:
        """This answer as an assistant message, ready to append to the conversation.

        Carries ``tool_calls`` when the model asked for tools, so the next
        request can follow it with ``{"role": "tool", ...}`` results.
        """
        message: dict[str, object] = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            message["tool_calls"] = [call.to_dict() for call in self.tool_calls]
        return message

    def parse_json(self) -> object:
        """The answer parsed as JSON (for ``response_format={"type": "json_object"}``).

        A fenced ```` ```json ```` block is accepted too.

        :raises JSONOutputError: when the text is not valid JSON; ``partial`` is this output.
        """
        from ._exceptions import JSONOutputError

        text = self.text.strip()
        if text.startswith("```") and text.endswith("```"):
            text = text[3:-3].removeprefix("json").strip()
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as exc:
            if isinstance(exc, RecursionError):
                exc = ValueError("nested too deeply to decode")
            raise JSONOutputError(
                f"the answer is not valid JSON ({exc}): {self.text[:200]!r}",
                request_id=self.request_id,
                partial=self,
            ) from None

    @classmethod
    def from_error(cls, exc: BaseException) -> ModelOutput:
        """An output that reports ``exc`` the way DB-GPT's workers expect.

        ``error_code`` is ``-1`` with text ``"code:message"`` for an
        :class:`~aiotongyi.APIError`, and ``1`` with a one-line description
        for anything else.
        """
        from ._exceptions import APIError, TongyiError

        partial = exc.partial if isinstance(exc, TongyiError) else None
        request_id = exc.request_id if isinstance(exc, TongyiError) else None
        if isinstance(exc, APIError):
            code = exc.code or type(exc).__name__
            text = f"{code}:{exc.message}"
            error_code = -1
        else:
            text = _GENERATE_ERROR_PREFIX + (str(exc) or type(exc).__name__)
            error_code = 1
        return cls(
            text=" ".join(text.split()),
            finish_reason=None,
            usage=partial.usage if partial is not None else None,
            request_id=request_id,
            model=partial.model if partial is not None else "",
            index=partial.index if partial is not None else 0,
            error_code=error_code,
        )


class _Cumulative:
    """A field of outputs built while streaming, computed on first read.

    Those outputs leave the value out of the instance dict and keep
    ``(source, length)`` under ``_<name>_at`` instead (a ``TextBuffer`` for
    text, an item log for tuples): building the whole answer on every frame
    would make a long stream quadratic.  The first read builds and caches it;
    as a non-data descriptor this runs only when the dict has no value, so
    plain outputs (and cached reads) cost a normal attribute lookup.
    """

    def __init__(self, name: str, default: object) -> None:
        self._name = name
        self._source = f"_{name}_at"
        self._default = default

    def __get__(self, output: ModelOutput | None, owner: type[ModelOutput] | None = None) -> Any:
        if output is None:
            return self._default  # the field's default, as a plain class attribute would give
        fields = output.__dict__
        at = fields.get(self._source)
        if at is None:  # a streamed output that never had any: the default
            return self._default
        source, length = at
        value = source.upto(length)
        fields[self._name] = value
        return value


class _StreamedUsage:
    """``usage`` of streamed outputs: kept as ``_usage_at``, a Usage or a checked usage dict.

    The accumulator checks the usual three counts on every frame but leaves
    building the :class:`Usage` to the first read (most callers read it once,
    from the last output).
    """

    def __get__(self, output: ModelOutput | None, owner: type[ModelOutput] | None = None) -> Any:
        if output is None:
            return None  # the field's default
        fields = output.__dict__
        usage = fields.get("_usage_at")
        if type(usage) is dict:
            usage = Usage._plain(usage)
        fields["usage"] = usage
        return usage


class _Raw:
    """``raw`` of streamed outputs and usage: the decoded dict, wrapped on first read.

    A streamed output keeps its frame's JSON bytes rather than the decoded
    frame (one small object instead of a tree of dicts while outputs wait in
    a batch); they were decoded once already, so decoding them again succeeds.
    """

    def __get__(self, owner_object: object, owner: type | None = None) -> Any:
        if owner_object is None:
            return _EMPTY
        fields = owner_object.__dict__
        source = fields["_raw_at"]
        if type(source) is bytes:
            source = json.loads(source)
        value = fields["raw"] = ReadOnlyMapping(source)
        return value


# Installed after the dataclass is built: its __init__ keeps the plain defaults.
ModelOutput.text = _Cumulative("text", "")  # type: ignore[assignment]
ModelOutput.thinking = _Cumulative("thinking", "")  # type: ignore[assignment]
ModelOutput.tool_calls = _Cumulative("tool_calls", ())  # type: ignore[assignment]
ModelOutput.parts = _Cumulative("parts", ())  # type: ignore[assignment]
ModelOutput.logprobs = _Cumulative("logprobs", ())  # type: ignore[assignment]
ModelOutput.raw = _Raw()  # type: ignore[assignment]
ModelOutput.usage = _StreamedUsage()  # type: ignore[assignment]
Usage.raw = _Raw()  # type: ignore[assignment]


@dataclass
class ModelRequest:
    """A chat request: ``messages`` plus optional generation parameters.

    Every parameter left ``None`` is not sent.  Keyword arguments given to a
    call beat the same field here.
    """

    messages: Sequence[Mapping[str, object]] | str = field(default_factory=list)
    model: str | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    stop: str | Sequence[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None
    tools: Sequence[Mapping[str, object]] | None = None
    tool_choice: str | Mapping[str, object] | None = None
    parallel_tool_calls: bool | None = None
    enable_search: bool | None = None
    enable_thinking: bool | None = None
    thinking_budget: int | None = None
    response_format: Mapping[str, object] | None = None
    n: int | None = None
    search_options: Mapping[str, object] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    enable_code_interpreter: bool | None = None
    vl_high_resolution_images: bool | None = None
    translation_options: Mapping[str, object] | None = None
    extra_body: Mapping[str, object] | None = None
    timeout: Timeout | float | None = None
    endpoint: Literal["text", "multimodal"] | None = None
    upload: bool | None = None
