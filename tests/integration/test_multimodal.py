"""Vision, structured output and n > 1 against the emulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiotongyi import JSONOutputError, StreamInterruptedError, TongyiLLMClient
from aiotongyi.testing import DashScopeEmulator, Reply

IMAGE = Path(__file__).parents[2] / "examples" / "assets" / "red_square.png"


async def test_vision_request_goes_to_the_multimodal_endpoint(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["一个", "红色方块"]))
    out = await client.generate(
        [{"role": "user", "content": [{"image": IMAGE}, {"text": "这是什么？"}]}],
        model="qwen-vl-max",
    )
    assert out.text == "一个红色方块"
    (request,) = dashscope_emulator.requests
    assert request.path.endswith("/services/aigc/multimodal-generation/generation")
    image = request.json["input"]["messages"][0]["content"][0]["image"]
    assert image.startswith("data:image/png;base64,")


async def test_non_text_parts_are_kept_on_the_output(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    frames = (
        b'data:{"output":{"choices":[{"message":{"role":"assistant","content":[{"text":"a"},'
        b'{"audio":{"data":"UklGRg=="}}]},"finish_reason":"null"}]},"request_id":"r"}\n\n'
        b'data:{"output":{"choices":[{"message":{"role":"assistant","content":[{"text":"b"}]},'
        b'"finish_reason":"stop"}]},"request_id":"r"}\n\n'
    )
    dashscope_emulator.enqueue(Reply(raw_body=frames))
    outputs = [o async for o in client.generate_stream("hi", model="qwen-audio-turbo")]
    assert outputs[-1].text == "ab"
    assert outputs[-1].parts == ({"audio": {"data": "UklGRg=="}},)
    assert outputs[0].parts == outputs[-1].parts


async def test_generate_json_asks_for_json_and_parses_it(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=['{"city": ', '"杭州", "temp": 21}']))
    result = await client.generate_json("Reply in json: the weather?")
    assert result == {"city": "杭州", "temp": 21}
    params = dashscope_emulator.requests[0].json["parameters"]
    assert params["response_format"] == {"type": "json_object"}


async def test_invalid_json_is_a_clear_error_with_the_text(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["not ", "json"]))
    with pytest.raises(JSONOutputError) as info:
        await client.generate_json("json please")
    assert isinstance(info.value, ValueError)
    assert info.value.partial is not None
    assert info.value.partial.text == "not json"
    assert "not json" in str(info.value)


async def test_fenced_json_is_accepted(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=['```json\n{"a": 1}\n```']))
    assert (await client.generate("json")).parse_json() == {"a": 1}


async def test_n_choices_end_when_every_choice_finished(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["x", "y", "z"], choices=3))
    outputs = [o async for o in client.generate_stream("hi", n=3)]
    finished = [o.index for o in outputs if o.finish_reason]
    assert sorted(finished) == [0, 1, 2]
    for index in range(3):
        assert [o.text for o in outputs if o.index == index][-1] == "xyz"


async def test_a_missing_choice_finish_is_an_interruption(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    frames = (
        b'data:{"output":{"choices":[{"index":0,"message":{"content":"a"},"finish_reason":"stop"},'
        b'{"index":1,"message":{"content":"b"},"finish_reason":"null"}]}}\n\n'
    )
    dashscope_emulator.enqueue(Reply(raw_body=frames))
    with pytest.raises(StreamInterruptedError):
        await client.generate("hi", n=2)
