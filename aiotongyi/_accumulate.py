"""Turn decoded DashScope frames into ``ModelOutput`` objects (pure, no I/O).

Frames carry increments (``incremental_output: true``, what this client asks
for) or whole snapshots (when ``extra_body`` turns that off); both become
outputs with cumulative ``text`` and a ``delta``.  Tool-call fragments merge
by index, usage is a running total (the last one wins), and DashScope's
``"null"`` finish reason becomes ``None``.

Every frame costs the same however long the stream already is: cumulative
values (text, thinking, tool calls, parts, logprobs) live in append-only logs
and outputs keep ``(log, length)``, built into a ``str``/``tuple`` only when
read.  Once every choice has finished, later frames change nothing (a frame
that carries only usage still updates :attr:`Accumulator.usage`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from ._errors import error_from_payload
from ._exceptions import APIConnectionError, APIError, ProtocolError, StreamInterruptedError
from ._models import (
    ModelOutput,
    ReadOnlyMapping,
    SearchInfo,
    SearchResult,
    TokenLogprob,
    ToolCall,
    TopLogprob,
    Usage,
)
from ._sse import SSEEvent
from ._text import ItemLog, TextBuffer

__all__ = ["Accumulator", "ToolCallLog"]

logger = logging.getLogger("aiotongyi")

_NO_FINISH = (None, "null", "")
_decoder = json.JSONDecoder()
_decode_json = _decoder.decode
_scan_json = _decoder.scan_once  # type: ignore[attr-defined]  # set in __init__, untyped


_NO_TOOLS: tuple[ToolCall, ...] = ()
_new = object.__new__
_set = object.__setattr__
# Any failure while reading a frame's shape is the frame's fault, not ours.
_SHAPE_ERRORS = (AttributeError, TypeError, KeyError, ValueError, RecursionError)


# One tool call as merged so far: (index, id, name, type, arguments source, its
# length).  The source is a ``str`` until a second fragment arrives, then an
# append-only buffer; a change makes a new record, so older outputs keep theirs.
# Plain tuples of strings and ints: the garbage collector stops tracking them,
# which keeps a stream of many thousand calls from slowing every collection.
_ToolRecord = tuple[int, str, str, str, "str | TextBuffer", int]


class ToolCallLog:
    """The tool calls of one choice: each change is recorded, tuples are built on read.

    Rebuilding the ``tuple[ToolCall, ...]`` on every frame that adds an index
    made many-call streams quadratic; here a frame costs one append, and
    :meth:`upto` rebuilds only the calls that changed since the last tuple
    it built.  A record keeps the arguments' source (an immutable ``str`` or
    an append-only buffer) and its length then, so old outputs stay as they were.
    """

    __slots__ = ("_cache", "_changes")

    def __init__(self) -> None:
        self._changes: list[_ToolRecord] = []
        self._cache: tuple[int, tuple[ToolCall, ...]] = (0, ())

    @property
    def length(self) -> int:
        return len(self._changes)

    def record(self, record: _ToolRecord) -> None:
        self._changes.append(record)

    def upto(self, length: int) -> tuple[ToolCall, ...]:
        cached_length, cached = self._cache
        if length == cached_length:
            return cached
        start, base = (cached_length, cached) if length > cached_length else (0, _NO_TOOLS)
        latest = {change[0]: change for change in self._changes[start:length]}
        calls = {call.index: call for call in base}
        for index, call_id, name, kind, source, size in latest.values():
            arguments = source if isinstance(source, str) else source.upto(size)
            calls[index] = ToolCall(index, call_id, name, arguments, kind)
        # New indices usually come in order: sorting an already sorted list is linear.
        value = tuple(calls[i] for i in sorted(calls))
        if length > cached_length:
            self._cache = (length, value)
        return value


class _Choice:
    """What one choice (``index``) has accumulated so far."""

    __slots__ = ("finish_reason", "logprobs", "parts", "text", "thinking", "tool_log", "tools")

    def __init__(self) -> None:
        self.text = TextBuffer()
        # Made when first needed: most answers have neither (memory per open stream).
        self.thinking: TextBuffer | None = None
        self.tools: dict[int, _ToolRecord] | None = None
        self.tool_log: ToolCallLog | None = None
        self.finish_reason: str | None = None
        self.parts: ItemLog | None = None
        self.logprobs: ItemLog | None = None


class Accumulator:
    """Feed it SSE events (or JSON frames); get the outputs they produce.

    :param model: the model name put on every output.
    :param incremental: whether frames hold increments (else snapshots).
    :param request_id: fallback request id (the ``x-request-id`` header).
    :param choices: how many choices the request asked for (``n``), if known:
        until that many have finished, a new choice index is still accepted.
    """

    __slots__ = (
        "_choices",
        "_expected",
        "_incremental",
        "_model",
        "_open",
        "_search_info",
        "_search_raw",
        "_tool_info",
        "_tool_info_raw",
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
        choices: int | None = None,
    ) -> None:
        self._model = model
        self._incremental = incremental
        self._expected = choices
        self._choices: dict[int, _Choice] = {}
        self._open = 0  # choices seen without a finish reason
        # The usage of outputs: a Usage, or (for the plain three counts, already
        # checked) the usage dict itself, made a Usage only when read.
        self._usage: Usage | dict[str, Any] | None = None
        self._usage_raw: object = None
        self._search_info: SearchInfo | None = None
        self._search_raw: object = None
        self._tool_info: tuple[Mapping[str, object], ...] = ()
        self._tool_info_raw: object = None
        #: The last output produced (the ``partial`` of a later error).
        self.last: ModelOutput | None = None
        self.request_id = request_id

    @property
    def is_complete(self) -> bool:
        """Whether every choice seen has a finish reason."""
        # Not n: a model may ignore n and answer with one choice, which is complete.
        return self._open == 0 and bool(self._choices)

    @property
    def usage(self) -> Usage | None:
        """The latest usage, including one sent by a usage-only frame after the finish."""
        usage = self._usage
        if type(usage) is dict:
            usage = self._usage = Usage._plain(usage)
        return usage  # type: ignore[return-value]  # a dict became a Usage above

    def _closed(self, frame: object) -> bool:
        """Whether ``frame`` arrives after the answer finished and must change nothing.

        Complete means every choice seen has finished; a frame that starts a
        choice not seen yet is still taken while fewer than ``choices`` (or,
        when that is unknown, any number of) choices have been seen.
        """
        if not self.is_complete:
            return False
        if self._expected is not None and len(self._choices) >= self._expected:
            return True
        output = frame.get("output") if isinstance(frame, dict) else None
        choices = output.get("choices") if isinstance(output, dict) else None
        if not isinstance(choices, list):
            return True
        return all(
            not isinstance(choice, dict) or choice.get("index", 0) in self._choices
            for choice in choices
        )

    def add_event(self, event: SSEEvent) -> list[ModelOutput]:
        """Outputs for one SSE event; raises the error an ``event:error`` carries."""
        try:
            # str input skips json.loads' encoding sniffing; bad UTF-8 is a ValueError too
            text = event.data.decode()
            # Frames are compact JSON: the scanner alone reads them, without
            # json.loads' two whitespace regex matches; anything else (surrounding
            # whitespace, trailing data, invalid JSON) goes through the full
            # decoder, which accepts it or raises its usual ValueError.
            try:
                frame, end = _scan_json(text, 0)
            except StopIteration:
                end = -1
            if end != len(text):
                frame = _decode_json(text)
        except (ValueError, RecursionError) as exc:
            if self.is_complete:
                return self._ignore("an undecodable frame")
            reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
            raise self._protocol_error(f"a frame's data is not valid JSON ({reason})") from None
        if type(frame) is not dict:
            if self.is_complete:
                return self._ignore("a frame that is not an object")
            raise self._protocol_error("a frame's data is not a JSON object")
        if event.event == "error":
            if self.is_complete:
                return self._ignore("an error frame")
            raise self._error(frame, event.status)
        # An incremental frame's output keeps the frame's bytes, decoded again only
        # if ``raw`` is read: one untracked object where the decoded frame is
        # dozens.  A snapshot frame keeps its dict: its text, the bulk of it, is
        # the very string the output's text is, where the bytes would be a copy.
        return self._add(frame, event.status, event.data if self._incremental else None)

    def add_body(self, body: bytes) -> list[ModelOutput]:
        """Outputs for a whole non-stream JSON reply (the single, final frame).

        :raises ProtocolError: when the body is not a JSON object (nested too
            deeply included), as for a stream's frame.
        """
        return self.add_event(SSEEvent("result", body))

    def add_frame(
        self, frame: dict[str, Any], status: int | None = None, *, raw: bytes | None = None
    ) -> list[ModelOutput]:
        """Outputs for one decoded JSON frame (``raw``: its JSON text, if at hand)."""
        return self._add(frame, status, raw)

    def _add(
        self, frame: dict[str, Any], status: int | None, raw: bytes | None
    ) -> list[ModelOutput]:
        if self._open == 0 and self._choices and self._closed(frame):  # is_complete, inlined
            return self._after_finish(frame)
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
                if (  # the usual three counts: checked here, made a Usage when read
                    type(usage) is dict
                    and len(usage) == 3
                    and type(usage.get("input_tokens")) is int
                    and type(usage.get("output_tokens")) is int
                    and type(usage.get("total_tokens")) is int
                ):
                    self._usage = self._usage_raw = usage
                else:
                    self._take_usage(usage)
            choices = output.get("choices")
            if choices is None:  # result_format "text"
                choices = [
                    {
                        "message": {"content": output.get("text")},
                        "finish_reason": output.get("finish_reason"),
                    }
                ]
            if len(output) > 1:  # more than "choices": maybe search or tool info
                self._take_output_extras(output)
            outputs = []
            for choice in choices:
                produced = self._add_choice(choice, frame if raw is None else raw)
                if produced is not None:
                    outputs.append(produced)
        except _SHAPE_ERRORS as exc:
            if isinstance(exc, RecursionError):
                exc = ValueError("nested too deeply")
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

    def _after_finish(self, frame: dict[str, Any]) -> list[ModelOutput]:
        """A frame after every choice finished: only a usage-only frame counts."""
        usage = frame.get("usage")
        if usage is not None and not frame.get("code") and _carries_nothing(frame.get("output")):
            try:
                self._take_usage(usage)
            except _SHAPE_ERRORS:
                return self._ignore("a malformed usage frame")
            return []
        return self._ignore("a frame")

    def _ignore(self, what: str) -> list[ModelOutput]:
        logger.debug(
            "ignored %s received after the answer finished (request_id=%s)",
            what,
            self.request_id,
        )
        return []

    def _add_choice(
        self, choice: dict[str, Any], raw: dict[str, Any] | bytes
    ) -> ModelOutput | None:
        index = choice.get("index", 0)
        state = self._choices.get(index)
        if state is None:
            if type(index) is not int:
                raise TypeError("choice index is not an integer")
            state = self._choices[index] = _Choice()
            self._open += 1
        elif state.finish_reason is not None:
            if choice.get("message") or choice.get("finish_reason") not in _NO_FINISH:
                self._ignore(f"a frame for finished choice {index}")
            return None
        message = choice.get("message") or {}
        delta = thinking_delta = ""
        content = message.get("content")
        parts_changed = False
        if content:
            if type(content) is not str:
                content, parts_changed = self._split_parts(state, content)
            if content:
                if self._incremental:  # _extend's first case, inlined: nearly every frame
                    state.text.append(content)
                    delta = content
                else:
                    delta = self._extend(state.text, content, is_thinking=False, state=state)
        reasoning = message.get("reasoning_content")
        if reasoning:
            if type(reasoning) is not str:
                raise TypeError("reasoning_content is not a string")
            thinking = state.thinking
            if thinking is None:
                thinking = state.thinking = TextBuffer()
            thinking_delta = self._extend(thinking, reasoning, is_thinking=True, state=state)
        fragments = message.get("tool_calls")
        tools_changed = self._merge_tools(state, fragments) if fragments else False
        logprobs = choice.get("logprobs")
        logprobs_delta = self._take_logprobs(state, logprobs) if logprobs else ()
        finish = choice.get("finish_reason")
        if finish in _NO_FINISH:
            finish = None
        elif type(finish) is not str:
            raise TypeError("finish_reason is not a string")
        new_finish = finish is not None and state.finish_reason is None
        if new_finish:
            state.finish_reason = finish
            self._open -= 1
        if not (delta or thinking_delta or tools_changed or new_finish or parts_changed):
            return None
        text = state.text
        fields: dict[str, Any] = {
            "_text_at": (text, text.length),
            "delta": delta,
            "thinking_delta": thinking_delta,
            "finish_reason": finish,
            "_usage_at": self._usage,
            "request_id": self.request_id,
            "model": self._model,
            "index": index,
            "_raw_at": raw,
        }
        thinking = state.thinking
        if thinking is not None and thinking.length:  # none yet: the class default ""
            fields["_thinking_at"] = (thinking, thinking.length)
        # Fields left out keep their class defaults (error_code 0, no tool calls, ...).
        log = state.tool_log
        if log is not None:
            fields["_tool_calls_at"] = (log, log.length)
        items = state.parts
        if items is not None:
            fields["_parts_at"] = (items, items.length)
        items = state.logprobs
        if items is not None:
            fields["_logprobs_at"] = (items, items.length)
            fields["logprobs_delta"] = logprobs_delta
        if self._search_info is not None:
            fields["search_info"] = self._search_info
        if self._tool_info:
            fields["tool_info"] = self._tool_info
        # Built without the frozen __init__: ``fields`` holds only what differs from
        # the class defaults, cumulative values as lazy ``_<name>_at`` sources
        # (see _Cumulative, _Raw and _StreamedUsage in _models).
        output = _new(ModelOutput)
        _set(output, "__dict__", fields)
        return output

    def _split_parts(self, state: _Choice, content: object) -> tuple[str, bool]:
        """Multimodal content ``[{"text": ...}, {"image": ...}]``: text joins, the rest is kept."""
        if not isinstance(content, list):
            raise TypeError("message content is neither a string nor a list of parts")
        texts = []
        others: list[object] = []
        for part in content:
            if not isinstance(part, dict):
                raise TypeError("a content part is not an object")
            text = part.get("text")
            if isinstance(text, str):
                texts.append(text)
            else:
                others.append(part)
        if not others:
            return "".join(texts), False
        if self._incremental:
            if state.parts is None:
                state.parts = ItemLog()
            state.parts.extend(others)
        else:
            previous = state.parts
            if previous is not None and list(previous.upto(previous.length)) == others:
                return "".join(texts), False
            state.parts = ItemLog()
            state.parts.extend(others)
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
        log = state.tool_log
        if log is None:
            log = state.tool_log = ToolCallLog()
        tools = state.tools
        if tools is None:
            tools = state.tools = {}
        changed = False
        for position, fragment in enumerate(fragments):
            index = fragment.get("index", position)
            function = fragment.get("function") or {}
            call_id = fragment.get("id") or ""
            name = function.get("name") or ""
            arguments = function.get("arguments") or ""
            kind = fragment.get("type") or "function"
            if type(call_id) is not str or type(name) is not str or type(arguments) is not str:
                raise TypeError("tool call fields are not strings")
            record = tools.get(index)
            if record is None:
                if type(index) is not int:
                    raise TypeError("tool call index is not an integer")
                if type(kind) is not str:
                    raise TypeError("tool call type is not a string")
                record = tools[index] = (index, call_id, name, kind, arguments, len(arguments))
                log.record(record)
                changed = True
                continue
            _, old_id, old_name, kind, source, size = record
            touched = False
            if call_id and not old_id:
                old_id = call_id
                touched = True
            if name and not old_name:
                old_name = name
                touched = True
            if arguments:
                if self._incremental:
                    if isinstance(source, str):
                        source = TextBuffer.of(source)
                    source.append(arguments)
                    size = source.length
                    touched = True
                else:
                    current = source if isinstance(source, str) else source.upto(size)
                    if arguments != current:
                        source, size = arguments, len(arguments)
                        touched = True
            if touched:
                record = tools[index] = (index, old_id, old_name, kind, source, size)
                log.record(record)
                changed = True
        return changed

    def _take_logprobs(self, state: _Choice, logprobs: object) -> tuple[TokenLogprob, ...]:
        """This frame's tokens of ``choices[].logprobs.content``, added to the choice's log."""
        if not isinstance(logprobs, dict):
            raise TypeError("logprobs is not an object")
        content = logprobs.get("content")
        if not content:
            return ()
        if not isinstance(content, list):
            raise TypeError("logprobs.content is not a list")
        tokens = tuple(_token_logprob(item) for item in content)
        log = state.logprobs
        if self._incremental:
            if log is None:
                log = state.logprobs = ItemLog()
            log.extend(tokens)
            return tokens
        # Snapshots repeat every token so far: the new ones are those past the old length.
        seen = 0 if log is None else log.length
        state.logprobs = ItemLog()
        state.logprobs.extend(tokens)
        return tokens[seen:]

    def _take_output_extras(self, output: dict[str, Any]) -> None:
        search = output.get("search_info")
        if search is not None and search is not self._search_raw and search != self._search_raw:
            self._search_info = _search_info(search)
            self._search_raw = search
        info = output.get("tool_info")
        if info is not None and info is not self._tool_info_raw and info != self._tool_info_raw:
            if not isinstance(info, list):
                info = [info]
            self._tool_info = tuple(ReadOnlyMapping(item) for item in info if type(item) is dict)
            self._tool_info_raw = output.get("tool_info")

    def _take_usage(self, usage: dict[str, Any]) -> None:
        if usage == self._usage_raw:  # unchanged since the last frame
            return
        if type(usage) is not dict:
            raise TypeError("usage is not an object")
        self._usage_raw = usage
        known = 0  # how many keys are the three plain counts
        prompt = usage.get("input_tokens")
        if prompt is None:
            prompt = usage.get("prompt_tokens")
        if prompt is None:
            prompt = 0
        else:
            known += 1
        completion = usage.get("output_tokens")
        if completion is None:
            completion = usage.get("completion_tokens")
        if completion is None:
            completion = 0
        else:
            known += 1
        if type(prompt) is not int or type(completion) is not int:
            prompt, completion = _int(prompt), _int(completion)
        total = usage.get("total_tokens")
        if total is None:
            total = prompt + completion
        else:
            known += 1
            if type(total) is not int:
                total = _int(total)
        if known == len(usage):  # the usual input/output/total: no details to look for
            self._usage = Usage._of(prompt, completion, total, usage)
            return
        outputs = usage.get("output_tokens_details") or usage.get("completion_tokens_details")
        inputs = usage.get("input_tokens_details") or usage.get("prompt_tokens_details")
        plugins = usage.get("plugins")
        details = {
            "reasoning_tokens": _either(usage, outputs, "reasoning_tokens"),
            "cached_tokens": _either(usage, inputs, "cached_tokens"),
            "cache_creation_input_tokens": _either(usage, inputs, "cache_creation_input_tokens"),
            "image_tokens": _either(usage, inputs, "image_tokens"),
            "audio_tokens": _either(usage, inputs, "audio_tokens"),
            "video_tokens": _either(usage, inputs, "video_tokens"),
            "plugins": ReadOnlyMapping(plugins) if type(plugins) is dict else None,
        }
        self._usage = Usage._of(prompt, completion, total, usage, details)

    def _error(self, payload: Mapping[str, object], status: int | None) -> APIError:
        return error_from_payload(payload, status, self.request_id, self.last)

    def _protocol_error(self, message: str) -> ProtocolError:
        return ProtocolError(message, request_id=self.request_id, partial=self.last)


def _carries_nothing(output: object) -> bool:
    """Whether an ``output`` object has no text, thinking or tool calls for any choice."""
    if not isinstance(output, dict):
        return output is None
    if output.get("text"):
        return False
    choices = output.get("choices")
    if not choices:
        return True
    if not isinstance(choices, list):
        return False
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and (
            message.get("content") or message.get("reasoning_content") or message.get("tool_calls")
        ):
            return False
    return True


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


def _either(usage: dict[str, Any], details: object, key: str) -> int | None:
    """``key`` from the details object, else from the top level of ``usage``."""
    value = _detail(details, key)
    if value is None:
        value = _detail(usage, key)
    return value


def _token_logprob(item: object) -> TokenLogprob:
    if not isinstance(item, dict):
        raise TypeError("a logprobs entry is not an object")
    top = item.get("top_logprobs") or ()
    return TokenLogprob(
        _str(item.get("token")),
        _float(item.get("logprob")),
        _bytes(item.get("bytes")),
        tuple(
            TopLogprob(_str(t.get("token")), _float(t.get("logprob")), _bytes(t.get("bytes")))
            for t in top
        ),
    )


def _str(value: object) -> str:
    if type(value) is not str:
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"a logprob is not a number: {value!r}")
    return float(value)


def _bytes(value: object) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(type(b) is int for b in value):
        raise TypeError("logprob bytes are not a list of integers")
    return tuple(value)


def _search_info(raw: object) -> SearchInfo:
    if not isinstance(raw, dict):
        raise TypeError("search_info is not an object")
    results = raw.get("search_results") or ()
    if not isinstance(results, list | tuple):
        raise TypeError("search_info.search_results is not a list")
    return SearchInfo(tuple(_search_result(item) for item in results))


def _search_result(item: object) -> SearchResult:
    if not isinstance(item, dict):
        raise TypeError("a search result is not an object")
    index = item.get("index")

    def text(key: str) -> str:
        value = item.get(key)
        return value if type(value) is str else ""

    return SearchResult(
        index if type(index) is int else None,
        text("title"),
        text("url"),
        text("site_name"),
        text("icon"),
    )
