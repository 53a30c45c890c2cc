"""Accumulator cost per frame, by frame shape, at 1k and 16k frames (pure, no network).

    python -m benchmarks.frame_shapes            # the table
    python -m benchmarks.frame_shapes --frames 1000 16000 --repeat 5

Every shape the service can send must cost the same per frame however long
the stream already is: an accumulator that rebuilt the tool-call tuple, or
re-concatenated a growing string, on every frame would show a ratio well above
1 here (issue 15 measured 90x at 8k tool-call frames).  The last output is
read in full at the end, as ``generate()`` does, so lazy work is counted too.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator

from aiotongyi._accumulate import Accumulator
from aiotongyi._sse import SSEEvent

__all__ = ["SHAPES", "events", "per_frame_seconds"]

_CHARS = "通义千问流式输出ab"  # 10 characters, mixed widths


def _usage(i: int) -> dict[str, object]:
    return {"input_tokens": 30, "output_tokens": i, "total_tokens": 30 + i}


def _choice(message: dict[str, object], i: int, last: bool, index: int = 0) -> dict[str, object]:
    return {"index": index, "message": message, "finish_reason": "stop" if last else "null"}


def _text(i: int, last: bool) -> list[dict[str, object]]:
    return [_choice({"role": "assistant", "content": _CHARS * 2}, i, last)]


def _thinking(i: int, last: bool) -> list[dict[str, object]]:
    message = {"role": "assistant", "content": "", "reasoning_content": _CHARS * 2}
    return [_choice(message, i, last)]


def _tool_indices(i: int, last: bool) -> list[dict[str, object]]:
    call = {
        "index": i,
        "id": f"call_{i}",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"q": 1}'},
    }
    return [_choice({"role": "assistant", "content": "", "tool_calls": [call]}, i, last)]


def _tool_arguments(i: int, last: bool) -> list[dict[str, object]]:
    function = {"arguments": '"abcdefghijklmnopqrst",'}
    if i == 0:
        function["name"] = "lookup"
    call = {"index": 0, "id": "call_0" if i == 0 else "", "function": function}
    return [_choice({"role": "assistant", "content": "", "tool_calls": [call]}, i, last)]


def _two_choices(i: int, last: bool) -> list[dict[str, object]]:
    return [
        _choice({"role": "assistant", "content": _CHARS}, i, last, index=0),
        _choice({"role": "assistant", "content": _CHARS}, i, last, index=1),
    ]


def _parts(i: int, last: bool) -> list[dict[str, object]]:
    content = [{"text": _CHARS}, {"audio": {"id": f"a{i}", "data": "AAAA"}}]
    return [_choice({"role": "assistant", "content": content}, i, last)]


def _logprobs(i: int, last: bool) -> list[dict[str, object]]:
    token = {"token": "ab", "logprob": -0.5, "bytes": [97, 98], "top_logprobs": []}
    choice = _choice({"role": "assistant", "content": "ab"}, i, last)
    choice["logprobs"] = {"content": [token]}
    return [choice]


def _search(i: int, last: bool) -> list[dict[str, object]]:
    return _text(i, last)  # search_info rides on every frame: see events()


SHAPES: dict[str, Callable[[int, bool], list[dict[str, object]]]] = {
    "text": _text,
    "thinking": _thinking,
    "tool indices": _tool_indices,
    "tool arguments": _tool_arguments,
    "n=2": _two_choices,
    "multimodal parts": _parts,
    "logprobs": _logprobs,
    "search_info": _search,
}

_SEARCH_INFO = {
    "search_results": [
        {"index": 1, "title": "t", "url": "https://example.com", "site_name": "s", "icon": ""}
    ]
}


def events(shape: str, frames: int) -> Iterator[SSEEvent]:
    """The SSE events of one stream of ``frames`` frames of ``shape``."""
    build = SHAPES[shape]
    for i in range(frames):
        output: dict[str, object] = {"choices": build(i, i == frames - 1)}
        if shape == "search_info":
            output["search_info"] = _SEARCH_INFO
        frame = {"output": output, "usage": _usage(i + 1), "request_id": "r-1"}
        data = json.dumps(frame, ensure_ascii=False, separators=(",", ":")).encode()
        yield SSEEvent("result", data, str(i + 1), 200)


def _read(output: object) -> None:
    for name in ("text", "thinking", "tool_calls", "parts", "logprobs", "search_info"):
        getattr(output, name, None)


def per_frame_seconds(shape: str, frames: int, repeat: int = 3) -> float:
    """Best CPU time per frame of feeding one stream and reading its last output."""
    stream = list(events(shape, frames))
    best = float("inf")
    for _ in range(repeat):
        accumulator = Accumulator("qwen-plus")
        add = accumulator.add_event
        started = time.process_time()
        for event in stream:
            add(event)
        _read(accumulator.last)
        best = min(best, time.process_time() - started)
    return best / frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs=2, default=(1000, 16000))
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    small, large = args.frames
    print(f"| shape | us/frame at {small} | us/frame at {large} | ratio |")
    print("|---|---|---|---|")
    for shape in SHAPES:
        # The same total work at both sizes keeps warm-up effects comparable.
        a = per_frame_seconds(shape, small, repeat=args.repeat * max(1, large // small // 4))
        b = per_frame_seconds(shape, large, repeat=args.repeat)
        print(f"| {shape} | {a * 1e6:.2f} | {b * 1e6:.2f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
