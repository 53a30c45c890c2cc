"""Search citations, logprobs, tool info, full usage and raw frames reach the caller in
every call form (async stream, generate, sync stream, sync generate, n > 1)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiotongyi import ModelOutput, SearchResult, TongyiLLMClient
from aiotongyi.testing import DashScopeEmulator, Reply

TRANSCRIPT = Path(__file__).parents[1] / "transcripts" / "search_logprobs_usage.sse"


def recorded_body() -> bytes:
    raw = TRANSCRIPT.read_bytes()
    return raw[raw.index(b"\n#!\n") + 4 :]


def check(out: ModelOutput) -> None:
    assert out.text == "杭州[ref_1]今天晴。"
    assert out.search_info is not None
    first = out.search_info.search_results[0]
    assert first == SearchResult(
        1,
        "杭州天气预报",
        "https://weather.example.com/hangzhou",
        "天气网",
        "https://weather.example.com/favicon.ico",
    )
    assert [t.token for t in out.logprobs] == ["杭州", "[ref_1]", "今天", "晴。"]
    assert out.logprobs[0].bytes == tuple("杭州".encode())
    assert out.usage is not None
    assert (out.usage.cached_tokens, out.usage.total_tokens) == (1024, 1324)
    assert out.usage.plugins == {"search": {"count": 1, "strategy": "turbo"}}
    assert out.raw["request_id"] == "5d2c7a10-91b3-9e4f-a6c1-3b7f0e2d1c44"
    assert "search_info" in out.raw["output"]


async def test_async_stream_and_generate(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(raw_body=recorded_body()))
    outputs = [o async for o in client.generate_stream("weather?", enable_search=True)]
    check(outputs[-1])
    assert [[t.token for t in o.logprobs_delta] for o in outputs] == [
        ["杭州", "[ref_1]"],
        ["今天", "晴。"],
        [],
    ]
    dashscope_emulator.enqueue(Reply(raw_body=recorded_body()))
    check(await client.generate("weather?", logprobs=True, top_logprobs=1))
    sent = json.loads(dashscope_emulator.requests[-1].body)["parameters"]
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 1)


def test_sync_stream_and_generate(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(raw_body=recorded_body()))
    outputs = list(sync_client.sync_generate_stream("weather?"))
    check(outputs[-1])
    dashscope_emulator.enqueue(Reply(raw_body=recorded_body()))
    check(sync_client.sync_generate("weather?"))


def two_choice_body() -> bytes:
    frames: list[dict[str, Any]] = []
    for step, (finish, pieces) in enumerate([("null", ["a", "x"]), ("stop", ["b", "y"])]):
        frames.append(
            {
                "output": {
                    "choices": [
                        {
                            "index": i,
                            "message": {"role": "assistant", "content": piece},
                            "finish_reason": finish,
                            "logprobs": {
                                "content": [{"token": piece, "logprob": -1.0 * step, "bytes": None}]
                            },
                        }
                        for i, piece in enumerate(pieces)
                    ]
                },
                "request_id": "r2",
            }
        )
    return b"".join(b"data:" + json.dumps(frame).encode() + b"\n\n" for frame in frames)


async def test_logprobs_per_choice(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(raw_body=two_choice_body()))
    last: dict[int, ModelOutput] = {}
    async with client.generate_stream("two", n=2, logprobs=True) as stream:
        async for out in stream:
            last[out.index] = out
    assert {i: [t.token for t in o.logprobs] for i, o in last.items()} == {
        0: ["a", "b"],
        1: ["x", "y"],
    }
    assert last[1].logprobs[0].bytes is None
