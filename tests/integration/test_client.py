"""The async client against the emulator: what is sent and what comes back."""

from __future__ import annotations

import asyncio
import itertools
import json

import aiohttp
import pytest

from aiotongyi import (
    AuthenticationError,
    ModelOutput,
    ModelRequest,
    Stream,
    TongyiLLMClient,
    ToolCall,
    Usage,
)
from aiotongyi.testing import DashScopeEmulator, Reply, ToolCallScript

from ..conftest import make_client


async def test_streams_cumulative_outputs(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["春眠", "不觉", "晓"], usage=(12, 3), request_id="r-1"))
    outputs = [out async for out in client.generate_stream("写诗")]
    # the service ends with an empty frame that only carries the finish reason
    assert [o.delta for o in outputs] == ["春眠", "不觉", "晓", ""]
    assert [o.text for o in outputs] == ["春眠", "春眠不觉", "春眠不觉晓", "春眠不觉晓"]
    last = outputs[-1]
    assert last.finish_reason == "stop"
    assert [o.finish_reason for o in outputs[:-1]] == [None, None, None]
    assert last.usage == Usage(12, 3, 15)
    assert last.request_id == "r-1"
    assert last.model == "qwen-turbo"


async def test_request_as_sent(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    await client.generate(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        model="qwen-plus",
        temperature=0,
        max_new_tokens=32,
        stop=["\n\n", "END"],
    )
    (request,) = dashscope_emulator.requests
    assert request.method == "POST"
    assert request.path == "/api/v1/services/aigc/text-generation/generation"
    assert request.headers["authorization"] == f"Bearer {dashscope_emulator.api_key}"
    assert request.headers["x-dashscope-sse"] == "enable"
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"].startswith("aiotongyi/")
    assert "x-dashscope-async" not in request.headers
    assert request.json == {
        "model": "qwen-plus",
        "input": {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "hi"},
            ]
        },
        "parameters": {
            "result_format": "message",
            "incremental_output": True,
            "temperature": 0,
            "max_tokens": 32,
            "stop": ["\n\n", "END"],
        },
    }
    assert b'"temperature":0' in request.body


async def test_no_top_p_unless_given(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    await client.generate("hi")
    await client.generate("hi", top_p=0.5)
    first, second = (r.json for r in dashscope_emulator.requests)
    assert "top_p" not in first["parameters"]
    assert second["parameters"]["top_p"] == 0.5


async def test_model_request_and_extra_headers(dashscope_emulator: DashScopeEmulator) -> None:
    async with make_client(
        dashscope_emulator, model="qwen-max", headers={"X-DashScope-WorkSpace": "ws1"}
    ) as client:
        await client.generate(ModelRequest(messages="hi", seed=7, model="tongyi_proxyllm"))
    (request,) = dashscope_emulator.requests
    assert request.headers["x-dashscope-workspace"] == "ws1"
    assert request.json["model"] == "qwen-max"
    assert request.json["parameters"]["seed"] == 7


async def test_generate_returns_the_final_output(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["a", "b"]))
    out = await client.generate("x")
    assert isinstance(out, ModelOutput)
    assert (out.text, out.finish_reason) == ("ab", "stop")


async def test_thinking_and_text(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(thinking=["先看", "个位"], text=["答案", "是3"]))
    outputs = [o async for o in client.generate_stream("1+2?", enable_thinking=True)]
    assert outputs[-1].thinking == "先看个位"
    assert outputs[-1].text == "答案是3"
    assert outputs[1].text == ""
    assert dashscope_emulator.requests[0].json["parameters"]["enable_thinking"] is True


async def test_tool_calls(client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(
        Reply(
            tool_calls=[
                ToolCallScript("get_weather", ['{"city": "', '杭州"}'], id="call_1"),
                ToolCallScript("get_time", ["{}"], id="call_2"),
            ]
        )
    )
    out = await client.generate("weather?", tools=[{"type": "function", "function": {"name": "x"}}])
    assert out.finish_reason == "tool_calls"
    assert out.tool_calls == (
        ToolCall(0, "call_1", "get_weather", '{"city": "杭州"}'),
        ToolCall(1, "call_2", "get_time", "{}"),
    )
    assert json.loads(out.tool_calls[0].arguments) == {"city": "杭州"}


async def test_cumulative_mode_via_extra_body(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["春眠", "不觉", "晓"]))
    outputs = [
        o async for o in client.generate_stream("x", extra_body={"incremental_output": False})
    ]
    assert [o.delta for o in outputs] == ["春眠", "不觉", "晓", ""]
    assert outputs[-1].text == "春眠不觉晓"


async def test_two_choices_are_kept_apart(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["a", "b"], choices=2))
    outputs = [o async for o in client.generate_stream("x", n=2)]
    finals = {o.index: o for o in outputs if o.finish_reason}
    assert set(finals) == {0, 1}
    for index in (0, 1):
        texts = [o.text for o in outputs if o.index == index]
        assert all(b.startswith(a) for a, b in itertools.pairwise(texts))


async def test_any_chunking_gives_the_same_outputs(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    reply = {"text": ["春眠", "不觉晓，", "处处闻啼鸟。"], "request_id": "r"}
    dashscope_emulator.enqueue(Reply(**reply))
    whole = [o async for o in client.generate_stream("x")]
    for sizes, ending in (([1], "\n"), ([7, 3], "\r\n"), ([2], "\r")):
        dashscope_emulator.enqueue(Reply(**reply, chunk_sizes=sizes, line_ending=ending))
        assert [o async for o in client.generate_stream("x")] == whole


async def test_keepalive_comments_are_ignored(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["a", "b"], keepalive=True))
    assert (await client.generate("x")).text == "ab"


async def test_json_reply_to_a_stream_request_is_the_final_frame(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    body = (
        b'{"output":{"choices":[{"finish_reason":"stop","message":{"role":"assistant",'
        b'"content":"whole"}}]},"usage":{"input_tokens":1,"output_tokens":2},"request_id":"j"}'
    )
    dashscope_emulator.enqueue(Reply(raw_body=body, content_type="application/json"))
    out = await client.generate("x")
    assert (out.text, out.finish_reason, out.request_id) == ("whole", "stop", "j")
    assert out.usage == Usage(1, 2, 3)


async def test_missing_key_raises_before_any_request(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    client = TongyiLLMClient(base_url=dashscope_emulator.base_url)
    with pytest.raises(AuthenticationError, match="DASHSCOPE_API_KEY"):
        client.generate_stream("x")
    await client.aclose()
    assert dashscope_emulator.requests == []


async def test_key_from_the_environment(
    dashscope_emulator: DashScopeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-from-env")
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", dashscope_emulator.base_url)
    async with TongyiLLMClient() as client:
        await client.generate("x")
    assert dashscope_emulator.requests[0].headers["authorization"] == "Bearer sk-from-env"


async def test_two_clients_keep_their_own_keys(dashscope_emulator: DashScopeEmulator) -> None:
    async with (
        make_client(dashscope_emulator, api_key="sk-one") as one,
        make_client(dashscope_emulator, api_key="sk-two") as two,
    ):
        await asyncio.gather(one.generate("a"), two.generate("b"))
    keys = sorted(r.headers["authorization"] for r in dashscope_emulator.requests)
    assert keys == ["Bearer sk-one", "Bearer sk-two"]


async def test_stream_is_lazy_and_knows_its_request_id(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["a"], request_id="rid-7"))
    stream = client.generate_stream("x")
    assert isinstance(stream, Stream)
    assert stream.request_id is None
    await asyncio.sleep(0.05)
    assert dashscope_emulator.requests == []
    async with stream:
        async for _ in stream:
            break
        assert stream.request_id == "rid-7"


async def test_caller_session_is_used_and_never_closed(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    async with aiohttp.ClientSession() as session:
        client = make_client(dashscope_emulator, session=session)
        assert (await client.generate("x")).finish_reason == "stop"
        await client.aclose()
        assert not session.closed


def test_caller_session_on_another_loop_is_refused(dashscope_emulator: DashScopeEmulator) -> None:
    async def make_session() -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    loop = asyncio.new_event_loop()
    session = loop.run_until_complete(make_session())
    try:
        client = make_client(dashscope_emulator, session=session)
        with pytest.raises(RuntimeError, match="another event loop"):
            asyncio.run(client.generate("x"))
        with pytest.raises(RuntimeError, match="session="):
            client.sync_generate("x")
    finally:
        loop.run_until_complete(session.close())
        loop.close()


def test_one_client_on_successive_event_loops(dashscope_emulator: DashScopeEmulator) -> None:
    client = make_client(dashscope_emulator)
    for _ in range(3):
        assert asyncio.run(client.generate("x")).finish_reason == "stop"
        # each loop's connections closed with its loop
        assert dashscope_emulator.wait_for_open_connections(0)
    assert dashscope_emulator.connections == 3
    client.close()


async def test_closed_client_refuses_new_calls(dashscope_emulator: DashScopeEmulator) -> None:
    client = make_client(dashscope_emulator)
    await client.generate("x")
    await client.aclose()
    await client.aclose()  # idempotent
    assert client.is_closed
    with pytest.raises(RuntimeError, match="closed"):
        client.generate_stream("x")
    with pytest.raises(RuntimeError, match="closed"):
        client.sync_generate("x")


async def test_connections_are_reused(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    for _ in range(5):
        await client.generate("x")
    assert dashscope_emulator.connections == 1


def test_repr_shows_settings_and_hides_the_key(dashscope_emulator: DashScopeEmulator) -> None:
    client = TongyiLLMClient(model="qwen-plus", api_key="sk-secret-123456", api_region="intl")
    text = repr(client)
    assert "qwen-plus" in text
    assert "intl" in text
    assert "dashscope-intl.aliyuncs.com" in text
    assert "sk-secret" not in text
    assert "123456" not in text
