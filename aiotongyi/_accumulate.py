"""Turn decoded DashScope frames into ``ModelOutput`` objects (pure, no I/O).

Frames carry increments (``incremental_output: true``, what this client asks
for) or whole snapshots (when ``extra_body`` turns that off); both become
outputs with cumulative ``text`` and a ``delta``.  Tool-call fragments merge
by index, usage is a running total (the last one wins), and DashScope's
``"null"`` finish reason becomes ``None``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._errors import error_from_payload
from ._exceptions import APIConnectionError, APIError, ProtocolError, StreamInterruptedError
from ._models import ModelOutput, ToolCall, Usage
from ._sse import SSEEvent
from ._text import TextBuffer

__all__ = ["Accumulator"]

_NO_FINISH = (None, "null", "")
_decode_json = json.JSONDecoder().decode


class _Choice:
    """What one choice (``index``) has accumulated so far."""

    __slots__ = ("finish_reason", "parts", "text", "thinking", "tool_calls", "tools")

    def __init__(self) -> None:
        self.text = TextBuffer()
        self.thinking = TextBuffer()
        self.tools: dict[int, list[str]] = {}  # index -> [id, name, arguments, type]
        self.tool_calls: tuple[ToolCall, ...] = ()
        self.finish_reason: str | None = None
        self.parts: tuple[dict[str, Any], ...] = ()


class Accumulator:
    """Feed it SSE events (or JSON frames); get the outputs they produce.

    :param model: the model name put on every output.
    :param incremental: whether frames hold increments (else snapshots).
    :param request_id: fallback request id (the ``x-request-id`` header).
    """

    __slots__ = (
        "_choices",
        "_incremental",
        "_model",
        "_usage",
        "_usage_raw",
        "last",
        "request_id",
    )

    def __init__(
        self,
        model: str,
        *,
        incremental: bool = True,
        request_id: str | None = None,
    ) -> None:
        self._model = model
        self._incremental = incremental
        self._choices: dict[int, _Choice] = {}
        self._usage: Usage | None = None
        self._usage_raw: dict[str, Any] | None = None
        #: The last output produced (the ``partial`` of a later error).
        self.last: ModelOutput | None = None
        self.request_id = request_id

    @property
    def is_complete(self) -> bool:
        """Whether every choice seen has a finish reason."""
        # Not n: a model may ignore n and answer with one choice, which is complete.
        choices = self._choices.values()
        return bool(choices) and all(c.finish_reason is not None for c in choices)

    def add_event(self, event: SSEEvent) -> list[ModelOutput]:
        """Outputs for one SSE event; raises the error an ``event:error`` carries."""
        try:
            # str input skips json.loads' encoding sniffing; bad UTF-8 is a ValueError too
            frame = _decode_json(event.data.decode())
        except ValueError as exc:
            raise self._protocol_error(f"a frame's data is not valid JSON ({exc})") from None
        if type(frame) is not dict:
            raise self._protocol_error("a frame's data is not a JSON object")
        if event.event == "error":
            raise self._error(frame, event.status)
        return self.add_frame(frame, event.status)

    def add_frame(self, frame: dict[str, Any], status: int | None = None) -> list[ModelOutput]:
        """Outputs for one decoded JSON frame."""
        request_id = frame.get("request_id")
        if request_id and type(request_id) is str:
            self.request_id = request_id
        output = frame.get("output")
        if output is None:
            if frame.get("code"):
                raise self._error(frame, status)
            return []  # e.g. a bare {"request_id": ...}: nothing to show
        try:
            usage = frame.get("usage")
            if usage is not None:
                self._take_usage(usage)
            choices = output.get("choices")
            if choices is None:  # result_format "text"
                choices = [
                    {
                        "message": {"content": output.get("text")},
                        "finish_reason": output.get("finish_reason"),
                    }
                ]
            outputs = []
            for choice in choices:
                produced = self._add_choice(choice)
                if produced is not None:
                    outputs.append(produced)
        except (AttributeError, TypeError, KeyError, ValueError) as exc:
            raise self._protocol_error(f"a frame has an unexpected shape ({exc!r})") from None
        if outputs:
            self.last = outputs[-1]
        return outputs

    def interrupted(self) -> APIConnectionError | StreamInterruptedError:
        """The error for a stream that ended before the answer was complete."""
        if self.last is None:
            return APIConnectionError(
                "the stream ended before any content arrived", request_id=self.request_id
            )
        return StreamInterruptedError(
            "the stream ended before the answer finished (no finish_reason)",
            request_id=self.request_id,
            partial=self.last,
        )

    def _add_choice(self, choice: dict[str, Any]) -> ModelOutput | None:
        index = choice.get("index", 0)
        state = self._choices.get(index)
        if state is None:
            if type(index) is not int:
                raise TypeError("choice index is not an integer")
            state = self._choices[index] = _Choice()
        message = choice.get("message") or {}
        delta = thinking_delta = ""
        content = message.get("content")
        parts_changed = False
        if content:
            if type(content) is not str:
                content, parts_changed = self._split_parts(state, content)
            if content:
                delta = self._extend(state.text, content, is_thinking=False, state=state)
        reasoning = message.get("reasoning_content")
        if reasoning:
            if type(reasoning) is not str:
                raise TypeError("reasoning_content is not a string")
            thinking_delta = self._extend(state.thinking, reasoning, is_thinking=True, state=state)
        fragments = message.get("tool_calls")
        tools_changed = self._merge_tools(state, fragments) if fragments else False
        finish = choice.get("finish_reason")
        if finish in _NO_FINISH:
            finish = None
        elif type(finish) is not str:
            raise TypeError("finish_reason is not a string")
        new_finish = finish is not None and state.finish_reason is None
        if new_finish:
            state.finish_reason = finish
        if not (delta or thinking_delta or tools_changed or new_finish or parts_changed):
            return None
        return ModelOutput._streamed(
            (state.text, state.text.length),
            delta,
            (state.thinking, state.thinking.length),
            thinking_delta,
            state.tool_calls,
            finish,
            self._usage,
            self.request_id,
            self._model,
            index,
            state.parts,
        )

    def _split_parts(self, state: _Choice, content: object) -> tuple[str, bool]:
        """Multimodal content ``[{"text": ...}, {"image": ...}]``: text joins, the rest is kept."""
        if not isinstance(content, list):
            raise TypeError("message content is neither a string nor a list of parts")
        texts = []
        others = []
        for part in content:
            if not isinstance(part, dict):
                raise TypeError("a content part is not an object")
            text = part.get("text")
            if isinstance(text, str):
                texts.append(text)
            else:
                others.append(part)
        if not others or (not self._incremental and list(state.parts) == others):
            return "".join(texts), False
        state.parts = (*state.parts, *others) if self._incremental else tuple(others)
        return "".join(texts), True

    def _extend(self, buffer: TextBuffer, piece: str, *, is_thinking: bool, state: _Choice) -> str:
        """Add an increment, or diff a snapshot against what came before."""
        if self._incremental:
            buffer.append(piece)
            return piece
        previous = buffer.upto(buffer.length)
        if piece.startswith(previous):
            delta = piece[len(previous) :]
        else:  # the service rewrote its answer: start over from the snapshot
            delta = piece
        fresh = TextBuffer.of(piece)
        if is_thinking:
            state.thinking = fresh
        else:
            state.text = fresh
        return delta

    def _merge_tools(self, state: _Choice, fragments: list[dict[str, Any]]) -> bool:
        changed = False
        for position, fragment in enumerate(fragments):
            index = fragment.get("index", position)
            function = fragment.get("function") or {}
            call = state.tools.get(index)
            call_id = fragment.get("id") or ""
            name = function.get("name") or ""
            arguments = function.get("arguments") or ""
            kind = fragment.get("type") or "function"
            if type(call_id) is not str or type(name) is not str or type(arguments) is not str:
                raise TypeError("tool call fields are not strings")
            if call is None:
                if type(index) is not int:
                    raise TypeError("tool call index is not an integer")
                state.tools[index] = [call_id, name, arguments, kind]
                changed = True
                continue
            if call_id and not call[0]:
                call[0] = call_id
                changed = True
            if name and not call[1]:
                call[1] = name
                changed = True
            if arguments:
                if self._incremental:
                    call[2] += arguments
                    changed = True
                elif arguments != call[2]:
                    call[2] = arguments
                    changed = True
        if changed:
            state.tool_calls = tuple(
                ToolCall(index, call[0], call[1], call[2], call[3])
                for index, call in sorted(state.tools.items())
            )
        return changed

    def _take_usage(self, usage: dict[str, Any]) -> None:
        if usage == self._usage_raw:  # unchanged since the last frame
            return
        self._usage_raw = usage
        prompt = usage.get("input_tokens")
        if prompt is None:
            prompt = usage.get("prompt_tokens", 0)
        completion = usage.get("output_tokens")
        if completion is None:
            completion = usage.get("completion_tokens", 0)
        if type(prompt) is not int or type(completion) is not int:
            prompt, completion = _int(prompt), _int(completion)
        total = usage.get("total_tokens")
        if total is None:
            total = prompt + completion
        elif type(total) is not int:
            total = _int(total)
        reasoning = _detail(usage.get("output_tokens_details"), "reasoning_tokens")
        cached = _detail(usage.get("prompt_tokens_details"), "cached_tokens")
        self._usage = Usage._of(prompt, completion, total, reasoning, cached)

    def _error(self, payload: Mapping[str, object], status: int | None) -> APIError:
        return error_from_payload(payload, status, self.request_id, self.last)

    def _protocol_error(self, message: str) -> ProtocolError:
        return ProtocolError(message, request_id=self.request_id, partial=self.last)


def _int(value: object) -> int:
    if type(value) is int:
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise TypeError(f"a token count is not an integer: {value!r}")


def _detail(details: object, key: str) -> int | None:
    if isinstance(details, dict):
        value = details.get(key)
        if value is not None:
            return _int(value)
    return None
