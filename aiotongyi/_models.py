"""Public value types: requests, outputs, usage, tool calls and timeouts."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, overload

if TYPE_CHECKING:
    from ._text import TextBuffer

__all__ = ["ModelOutput", "ModelRequest", "Timeout", "ToolCall", "Usage"]

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
            if not value > 0:
                raise ValueError(f"Timeout.{name} must be > 0, not {value!r}")

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


@dataclass(frozen=True)
class Usage:
    """Token counts of a call (running totals; the last frame's win).

    ``prompt_tokens`` is DashScope's ``input_tokens``, ``completion_tokens`` its
    ``output_tokens`` (reasoning included).
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    reasoning_tokens: int | None = None
    cached_tokens: int | None = None

    @classmethod
    def _of(
        cls,
        prompt_tokens: int,
        completion_tokens: int,
        total_tokens: int,
        reasoning_tokens: int | None,
        cached_tokens: int | None,
    ) -> Usage:
        """Build without the frozen ``__init__`` (once per frame whose counts changed)."""
        usage = object.__new__(cls)
        object.__setattr__(
            usage,
            "__dict__",
            {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": total_tokens,
                "reasoning_tokens": reasoning_tokens,
                "cached_tokens": cached_tokens,
            },
        )
        return usage

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


@dataclass(frozen=True)
class ModelOutput:
    """One content frame of a streamed answer (immutable).

    ``text`` and ``thinking`` are cumulative; ``delta`` and ``thinking_delta``
    are what this frame added.  ``finish_reason`` is ``None`` until the end.
    ``error_code`` is ``0`` except in outputs built by :meth:`from_error`.
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

    def __getstate__(self) -> dict[str, object]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def __setstate__(self, state: dict[str, object]) -> None:
        object.__setattr__(self, "__dict__", dict(state))

    @classmethod
    def _streamed(
        cls,
        text: tuple[TextBuffer, int],
        delta: str,
        thinking: tuple[TextBuffer, int],
        thinking_delta: str,
        tool_calls: tuple[ToolCall, ...],
        finish_reason: str | None,
        usage: Usage | None,
        request_id: str | None,
        model: str,
        index: int,
        parts: tuple[Mapping[str, object], ...] = (),
    ) -> ModelOutput:
        """Build an output without the frozen ``__init__`` (hot path, once per frame)."""
        output = object.__new__(cls)
        object.__setattr__(
            output,
            "__dict__",
            {
                "_text_at": text,
                "delta": delta,
                "_thinking_at": thinking,
                "thinking_delta": thinking_delta,
                "tool_calls": tool_calls,
                "finish_reason": finish_reason,
                "usage": usage,
                "request_id": request_id,
                "model": model,
                "index": index,
                "error_code": 0,
                "parts": parts,
            },
        )
        return output

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
        except ValueError as exc:
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


class _CumulativeText:
    """``ModelOutput.text``/``.thinking`` of outputs built while streaming.

    Those outputs leave the string out of the instance dict and keep
    ``(TextBuffer, length)`` instead: joining the whole answer on every frame
    would make a long stream quadratic.  The first read joins and caches it;
    as a non-data descriptor this runs only when the dict has no value, so
    plain outputs (and cached reads) cost a normal attribute lookup.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._source = f"_{name}_at"

    @overload
    def __get__(self, output: None, owner: type[ModelOutput]) -> str: ...
    @overload
    def __get__(self, output: ModelOutput, owner: type[ModelOutput] | None = None) -> str: ...
    def __get__(self, output: ModelOutput | None, owner: type[ModelOutput] | None = None) -> str:
        if output is None:
            return ""  # the field's default, as a plain class attribute would give
        fields = output.__dict__
        buffer, length = fields[self._source]
        value: str = buffer.upto(length)
        fields[self._name] = value
        return value


# Installed after the dataclass is built: its __init__ keeps the "" defaults.
ModelOutput.text = _CumulativeText("text")  # type: ignore[assignment]
ModelOutput.thinking = _CumulativeText("thinking")  # type: ignore[assignment]


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
    extra_body: Mapping[str, object] | None = None
    timeout: Timeout | float | None = None
    endpoint: Literal["text", "multimodal"] | None = None
    upload: bool | None = None
