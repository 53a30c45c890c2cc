"""Rendering a reply script to wire bytes, for one request.

Pure: no aiohttp and no asyncio. The server asks :func:`render` for the status,
headers and body frames of one reply, then only writes bytes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from ._infer import count_tokens
from ._script import JSON_CONTENT_TYPE, SSE_CONTENT_TYPE, Reply, dumps

__all__ = ["Exchange", "Rendered", "render"]

MALFORMED_DATA = '{"output": '


@dataclass(frozen=True)
class Exchange:
    """What render() needs to know about the request being answered."""

    stream: bool
    incremental: bool
    multimodal: bool
    input_tokens: int


@dataclass(frozen=True)
class Rendered:
    """One reply as wire data: the body is split into frames (units of pacing)."""

    status: int
    headers: dict[str, str]
    frames: list[bytes]
    chunked: bool


def render(reply: Reply, exchange: Exchange) -> Rendered:
    """Turn a reply script into status, headers and body frames for one request."""
    request_id = reply.request_id or str(uuid.uuid4())
    stream = exchange.stream
    if reply.raw_body is not None:
        frames = [reply.raw_body]
    elif stream:
        frames = _stream_frames(reply, exchange, request_id)
    else:
        frames = [_json_body(reply, exchange, request_id).encode()]
    status = reply.status
    if reply.raw_body is None and not stream and reply.error_event is not None:
        status = reply.error_event.status
    content_type = reply.content_type or (SSE_CONTENT_TYPE if stream else JSON_CONTENT_TYPE)
    headers = {
        "Content-Type": content_type,
        "X-Request-Id": request_id,
        "X-DashScope-Finished": "false" if stream else "true",
    }
    for name, value in reply.headers.items():  # a scripted header replaces ours, whatever its case
        for existing in [key for key in headers if key.lower() == name.lower()]:
            del headers[existing]
        headers[name] = value
    return Rendered(status=status, headers=headers, frames=frames, chunked=stream)


class _Script:
    """The content of one choice, expanded into per-frame steps."""

    def __init__(self, reply: Reply) -> None:
        text = [reply.text] if isinstance(reply.text, str) else list(reply.text)
        thinking = [reply.thinking] if isinstance(reply.thinking, str) else reply.thinking
        self.steps: list[tuple[str, int, str]] = [("thinking", 0, d) for d in thinking]
        self.steps += [("text", 0, d) for d in text]
        self.tools: list[tuple[int, str, str]] = []
        for position, call in enumerate(reply.tool_calls):
            fragments = [call.arguments] if isinstance(call.arguments, str) else call.arguments
            index = position if call.index is None else call.index
            call_id = call.id if call.id is not None else "call_" + uuid.uuid4().hex[:12]
            self.tools.append((index, call_id, call.name))
            self.steps += [("tool", position, frag) for frag in (list(fragments) or [""])]
        self.has_thinking = bool(reply.thinking)


class _Choice:
    """Running state of one choice while its frames are rendered."""

    def __init__(self, script: _Script) -> None:
        self.script = script
        self.text = ""
        self.thinking = ""
        self.arguments: dict[int, str] = {}

    def message(
        self, exchange: Exchange, kind: str, position: int, delta: str
    ) -> dict[str, object]:
        """The ``message`` object of one frame, incremental or cumulative."""
        first = False
        if kind == "text":
            self.text += delta
        elif kind == "thinking":
            self.thinking += delta
        elif kind == "tool":
            first = position not in self.arguments
            self.arguments[position] = self.arguments.get(position, "") + delta
        if exchange.incremental:
            content = delta if kind == "text" else ""
            reasoning = delta if kind == "thinking" else ""
            tools = [self._tool(position, delta, first)] if kind == "tool" else []
        else:
            content, reasoning = self.text, self.thinking
            tools = [self._tool(pos, args, True) for pos, args in self.arguments.items()]
        message: dict[str, object] = {"content": _content(content, exchange.multimodal)}
        if self.script.has_thinking:
            message["reasoning_content"] = reasoning
        if tools:
            message["tool_calls"] = tools
        message["role"] = "assistant"
        return message

    def _tool(self, position: int, arguments: str, first: bool) -> dict[str, object]:
        index, call_id, name = self.script.tools[position]
        function = {"name": name, "arguments": arguments} if first else {"arguments": arguments}
        return {
            "index": index,
            "id": call_id if first else "",
            "type": "function",
            "function": function,
        }


def _content(text: str, multimodal: bool) -> object:
    if not multimodal:
        return text
    return [{"text": text}] if text else []


def _finish_reason(reply: Reply) -> str | None:
    if reply.tool_calls and reply.finish_reason == "stop":
        return "tool_calls"
    return reply.finish_reason


class _Usage:
    """Running token counts by :func:`count_tokens` (each delta on its own), unless fixed."""

    def __init__(self, reply: Reply, exchange: Exchange, has_thinking: bool) -> None:
        self.fixed = reply.usage
        self.input = reply.usage[0] if reply.usage else exchange.input_tokens
        self.output = 0
        self.reasoning = 0
        self.has_thinking = has_thinking

    def add(self, kind: str, delta: str) -> None:
        tokens = count_tokens(delta)
        self.output += tokens
        if kind == "thinking":
            self.reasoning += tokens

    def to_dict(self, last: bool) -> dict[str, object]:
        output, reasoning = self.output, self.reasoning
        if self.fixed is not None:
            output = self.fixed[1] if last else min(output, self.fixed[1])
            reasoning = min(reasoning, output)
        usage: dict[str, object] = {
            "input_tokens": self.input,
            "output_tokens": output,
            "total_tokens": self.input + output,
        }
        if self.has_thinking:
            usage["output_tokens_details"] = {"reasoning_tokens": reasoning}
        return usage


# A frame before encoding: (event, status, data).
_Frame = tuple[str, int, str]


def _stream_frames(reply: Reply, exchange: Exchange, request_id: str) -> list[bytes]:
    script = _Script(reply)
    choices = [_Choice(script) for _ in range(reply.choices)]
    with_index = reply.choices > 1 or bool(reply.tool_calls)
    finish = _finish_reason(reply)
    usage = _Usage(reply, exchange, script.has_thinking)
    # (choice, message, finish_reason) per frame; usage is filled in afterwards
    # so the last frame can carry the final counts.
    planned: list[tuple[int, dict[str, object], str, dict[str, object]]] = []
    for kind, position, delta in script.steps:
        for number, choice in enumerate(choices):
            usage.add(kind, delta)
            message = choice.message(exchange, kind, position, delta)
            planned.append((number, message, "null", usage.to_dict(last=False)))
    if finish is not None:
        for number, choice in enumerate(choices):
            usage.add("text", reply.final_text)
            message = choice.message(exchange, "text", 0, reply.final_text)
            planned.append((number, message, finish, usage.to_dict(last=False)))
    frames: list[_Frame] = []
    for position, (number, message, reason, counts) in enumerate(planned):
        choice_object: dict[str, object] = {"message": message}
        if with_index:
            choice_object["index"] = number
        choice_object["finish_reason"] = reason
        last = position == len(planned) - 1
        data = {
            "output": {"choices": [choice_object]},
            "usage": usage.to_dict(last=True) if last else counts,
            "request_id": request_id,
        }
        frames.append(("result", 200, dumps(data)))
    return _encode(_apply_faults(reply, frames, request_id), reply)


def _apply_faults(reply: Reply, frames: list[_Frame], request_id: str) -> list[_Frame]:
    event = reply.error_event
    if event is not None:
        error = {"code": event.code, "message": event.message, "request_id": request_id}
        frames = [*frames[: event.after_frames], ("error", event.status, dumps(error))]
    at = reply.malformed_frame_at
    if at is not None and at < len(frames):
        frames[at] = (frames[at][0], frames[at][1], MALFORMED_DATA)
    return frames


def _encode(frames: list[_Frame], reply: Reply) -> list[bytes]:
    end = reply.line_ending
    prefix = f":keepalive{end}{end}" if reply.keepalive else ""
    spaced = reply.error_event is not None and reply.error_event.space_after_colon
    encoded = []
    for number, (event, status, data) in enumerate(frames, start=1):
        sep = ": " if spaced and event == "error" else ":"
        encoded.append(
            f"{prefix}id:{number}{end}event{sep}{event}{end}:HTTP_STATUS/{status}{end}"
            f"data{sep}{data}{end}{end}".encode()
        )
    return encoded


def _json_body(reply: Reply, exchange: Exchange, request_id: str) -> str:
    """The non-stream answer: the whole reply in one JSON object."""
    if reply.error_event is not None:
        event = reply.error_event
        return dumps({"code": event.code, "message": event.message, "request_id": request_id})
    if reply.malformed_frame_at == 0:
        return MALFORMED_DATA
    script = _Script(reply)
    cumulative = Exchange(False, False, exchange.multimodal, exchange.input_tokens)
    usage = _Usage(reply, exchange, script.has_thinking)
    choices: list[dict[str, object]] = []
    for number in range(reply.choices):
        choice = _Choice(script)
        for kind, position, delta in script.steps:
            usage.add(kind, delta)
            choice.message(cumulative, kind, position, delta)
        usage.add("text", reply.final_text)
        message = choice.message(cumulative, "text", 0, reply.final_text)
        choice_object: dict[str, object] = {"finish_reason": _finish_reason(reply) or "null"}
        if reply.choices > 1:
            choice_object["index"] = number
        choice_object["message"] = message
        choices.append(choice_object)
    data = {
        "output": {"choices": choices},
        "usage": usage.to_dict(last=True),
        "request_id": request_id,
    }
    return dumps(data)
