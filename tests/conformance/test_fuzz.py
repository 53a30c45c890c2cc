"""Property tests: random streams, random framing, random garbage.

Everything goes through public behaviour only: bytes are served by the emulator
(``Reply.raw_body`` + ``chunk_sizes``) and read by one shared aiotongyi client
(its sync bridge, so hypothesis can drive plain functions).
"""

from __future__ import annotations

import json
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiotongyi import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ModelOutput,
    ProtocolError,
    StreamInterruptedError,
    Timeout,
    TongyiError,
    TongyiLLMClient,
)
from aiotongyi.testing import DashScopeEmulator, Reply

FUZZ = settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
SSE = "text/event-stream;charset=UTF-8"


@pytest.fixture(scope="module")
def emu() -> Iterator[DashScopeEmulator]:
    with DashScopeEmulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def client(emu: DashScopeEmulator) -> Iterator[TongyiLLMClient]:
    with TongyiLLMClient(
        api_key=emu.api_key, base_url=emu.base_url, max_retries=0, timeout=Timeout(read=5.0)
    ) as shared:
        yield shared


def _run(
    client: TongyiLLMClient, emu: DashScopeEmulator, body: bytes, cuts: list[int], **params: object
) -> tuple[list[ModelOutput], BaseException | None, float]:
    emu.reset()
    emu.enqueue(Reply(raw_body=body, content_type=SSE, chunk_sizes=_sizes(len(body), cuts)))
    outputs: list[ModelOutput] = []
    started = time.monotonic()
    try:
        for out in client.sync_generate_stream("fuzz", **params):  # type: ignore[arg-type]
            outputs.append(out)  # noqa: PERF402 - keeps what arrived before a raise
    except Exception as exc:
        return outputs, exc, time.monotonic() - started
    return outputs, None, time.monotonic() - started


def _sizes(length: int, cuts: list[int]) -> list[int] | None:
    points = sorted({c for c in cuts if 0 < c < length})
    if not points:
        return None
    edges = [0, *points, length]
    return [b - a for a, b in pairwise(edges)]


# ---- valid streams --------------------------------------------------------------

# Any character JSON can carry raw (ensure_ascii=False), including U+2028 and
# U+0085, which str.splitlines() would wrongly treat as line ends.
TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=0, max_size=12)


@dataclass(frozen=True)
class ToolStep:
    index: int
    arguments: str


@dataclass(frozen=True)
class Script:
    thinking: list[str]
    text: list[str]
    tools: list[ToolStep]
    finish: str
    usage: tuple[int, int]


@st.composite
def scripts(draw: st.DrawFn) -> Script:
    tools = draw(st.lists(st.builds(ToolStep, st.integers(0, 2), TEXT), max_size=6))
    finish = "tool_calls" if tools else draw(st.sampled_from(["stop", "length"]))
    return Script(
        thinking=draw(st.lists(TEXT, max_size=4)),
        text=draw(st.lists(TEXT, max_size=6)),
        tools=tools,
        finish=finish,
        usage=(draw(st.integers(0, 10**6)), draw(st.integers(0, 10**6))),
    )


@dataclass(frozen=True)
class Framing:
    line_ending: str
    spaced: bool  # "data: {...}" instead of "data:{...}"
    with_ids: bool
    noise: list[int]  # event positions that get a comment event before them
    bom: bool


framings = st.builds(
    Framing,
    line_ending=st.sampled_from(["\n", "\r\n", "\r"]),
    spaced=st.booleans(),
    with_ids=st.booleans(),
    noise=st.lists(st.integers(0, 20), max_size=5),
    bom=st.booleans(),
)


def _frames(script: Script, rid: str) -> list[dict[str, object]]:
    frames: list[dict[str, object]] = []
    names: dict[int, str] = {}

    def add(message: dict[str, object], finish: str = "null") -> None:
        n = len(frames) + 1
        frames.append(
            {
                "output": {
                    "choices": [
                        {"message": {**message, "role": "assistant"}, "finish_reason": finish}
                    ]
                },
                "usage": {"input_tokens": 1, "output_tokens": n, "total_tokens": 1 + n},
                "request_id": rid,
            }
        )

    for piece in script.thinking:
        add({"content": "", "reasoning_content": piece})
    for piece in script.text:
        add({"content": piece, "reasoning_content": ""})
    for step in script.tools:
        function: dict[str, str] = {"arguments": step.arguments}
        call_id = ""
        if step.index not in names:
            names[step.index] = function["name"] = f"tool_{step.index}"
            call_id = f"call_{step.index}"
        add(
            {
                "content": "",
                "tool_calls": [
                    {"index": step.index, "id": call_id, "type": "function", "function": function}
                ],
            }
        )
    add({"content": ""}, script.finish)
    prompt, completion = script.usage
    frames[-1]["usage"] = {
        "input_tokens": prompt,
        "output_tokens": completion,
        "total_tokens": prompt + completion,
    }
    return frames


def _render(frames: list[dict[str, object]], framing: Framing) -> bytes:
    end = framing.line_ending
    sep = " " if framing.spaced else ""
    parts = ["\ufeff"] if framing.bom else []
    for n, data in enumerate(frames):
        if n in framing.noise:
            parts.append(f":keepalive{end}{end}: ping{end}")
        if framing.with_ids:
            parts.append(f"id:{sep}{n + 1}{end}")
        parts.append(f"event:{sep}result{end}:HTTP_STATUS/200{end}")
        line = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        parts.append(f"data:{sep}{line}{end}{end}")
    return "".join(parts).encode()


def _expected(script: Script, rid: str) -> dict[str, object]:
    tools: dict[int, list[str]] = {}
    for step in script.tools:
        tools.setdefault(step.index, []).append(step.arguments)
    prompt, completion = script.usage
    return {
        "text": "".join(script.text),
        "thinking": "".join(script.thinking),
        "tool_calls": [
            (i, f"call_{i}", f"tool_{i}", "".join(args)) for i, args in sorted(tools.items())
        ],
        "finish_reason": script.finish,
        "usage": (prompt, completion, prompt + completion),
        "request_id": rid,
    }


def _state(out: ModelOutput) -> dict[str, object]:
    assert out.usage is not None
    return {
        "text": out.text,
        "thinking": out.thinking,
        "tool_calls": [(c.index, c.id, c.name, c.arguments) for c in out.tool_calls],
        "finish_reason": out.finish_reason,
        "usage": (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens),
        "request_id": out.request_id,
    }


@FUZZ
@given(script=scripts(), framing=framings, cuts=st.lists(st.integers(0, 4096), max_size=12))
def test_any_valid_stream_reaches_its_final_state(
    client: TongyiLLMClient,
    emu: DashScopeEmulator,
    script: Script,
    framing: Framing,
    cuts: list[int],
) -> None:
    rid = "fuzz-valid"
    body = _render(_frames(script, rid), framing)
    outputs, exc, elapsed = _run(client, emu, body, cuts)
    assert exc is None, repr(exc)
    assert _state(outputs[-1]) == _expected(script, rid)
    # Deltas add up to the cumulative fields, frame by frame.
    assert "".join(o.delta for o in outputs) == outputs[-1].text
    assert "".join(o.thinking_delta for o in outputs) == outputs[-1].thinking
    assert [o.finish_reason for o in outputs[:-1]] == [None] * (len(outputs) - 1)
    assert elapsed < 1.0


@FUZZ
@given(
    snapshots=st.lists(TEXT, min_size=1, max_size=6),
    framing=framings,
    cuts=st.lists(st.integers(0, 2048), max_size=8),
)
def test_cumulative_snapshots_reach_the_last_snapshot(
    client: TongyiLLMClient,
    emu: DashScopeEmulator,
    snapshots: list[str],
    framing: Framing,
    cuts: list[int],
) -> None:
    # Each frame repeats the whole answer so far (incremental_output:false).
    whole = [""]
    for piece in snapshots:
        whole.append(whole[-1] + piece)
    script = Script([], whole[1:], [], "stop", (3, len(snapshots)))
    frames = _frames(script, "fuzz-cumulative")
    frames[-1]["output"]["choices"][0]["message"]["content"] = whole[-1]  # type: ignore[index]
    body = _render(frames, framing)
    outputs, exc, _ = _run(client, emu, body, cuts, extra_body={"incremental_output": False})
    assert exc is None, repr(exc)
    assert outputs[-1].text == whole[-1]
    assert "".join(o.delta for o in outputs) == whole[-1]
    assert outputs[-1].finish_reason == "stop"


# ---- garbage ---------------------------------------------------------------------

# Garbage is either rejected (ProtocolError), or happens to parse: then it is a
# clean answer, an EOF without a finish_reason (APIConnectionError before
# content, StreamInterruptedError after, as API.md requires), or an error
# event the mutation left intact (APIError). Nothing else, and no timeout.
_ALLOWED = (ProtocolError, StreamInterruptedError, APIConnectionError, APIError)
_VALID = _render(
    _frames(Script(["想"], ["Hi", " 你好"], [ToolStep(0, '{"a": 1}')], "tool_calls", (2, 3)), "g"),
    Framing("\n", False, True, [], False),
)


def _assert_clean(outputs: list[ModelOutput], exc: BaseException | None, elapsed: float) -> None:
    assert elapsed < 1.0
    if exc is None:
        assert outputs and outputs[-1].finish_reason is not None
        return
    assert isinstance(exc, TongyiError), repr(exc)
    assert isinstance(exc, _ALLOWED), repr(exc)
    assert not isinstance(exc, APITimeoutError), repr(exc)


@FUZZ
@given(body=st.binary(max_size=3000), cuts=st.lists(st.integers(0, 3000), max_size=8))
def test_random_bytes_never_escape_as_other_errors(
    client: TongyiLLMClient, emu: DashScopeEmulator, body: bytes, cuts: list[int]
) -> None:
    _assert_clean(*_run(client, emu, body, cuts))


@FUZZ
@given(data=st.data(), cuts=st.lists(st.integers(0, 2000), max_size=8))
def test_mutated_streams_never_escape_as_other_errors(
    client: TongyiLLMClient, emu: DashScopeEmulator, data: st.DataObject, cuts: list[int]
) -> None:
    body = bytearray(_VALID)
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(body)))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        if op == "insert":
            body[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif pos < len(body):
            if op == "flip":
                body[pos] = data.draw(st.integers(0, 255))
            else:
                del body[pos]
    _assert_clean(*_run(client, emu, bytes(body), cuts))


def test_endless_line_is_capped(client: TongyiLLMClient, emu: DashScopeEmulator) -> None:
    emu.reset()
    emu.enqueue(Reply(endless=True))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.monotonic()
    with pytest.raises(ProtocolError):
        for _ in client.sync_generate_stream("endless"):
            pass
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert time.monotonic() - started < 20
    # The cap is 64 MiB per event; the peak must not run far past it.
    assert grown_mib < 160, grown_mib
