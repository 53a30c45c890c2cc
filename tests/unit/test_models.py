"""Value types: immutability, lazy text, error outputs, timeouts."""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle

import pytest

from aiotongyi import (
    APIConnectionError,
    AuthenticationError,
    JSONOutputError,
    ModelOutput,
    Timeout,
    ToolCall,
    Usage,
)
from aiotongyi._accumulate import Accumulator


def frame(text: str) -> dict[str, object]:
    return {"output": {"choices": [{"message": {"content": text}, "finish_reason": "null"}]}}


def streamed(*texts: str) -> list[ModelOutput]:
    """Outputs built the way a stream builds them (lazy text and raw frames)."""
    accumulator = Accumulator("m", request_id="r")
    return [out for text in texts for out in accumulator.add_frame(frame(text))]


def test_outputs_are_frozen() -> None:
    out = ModelOutput(text="a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.text = "b"  # type: ignore[misc]


def test_streamed_outputs_behave_like_plain_ones() -> None:
    (out,) = streamed("春眠")
    plain = ModelOutput(text="春眠", delta="春眠", request_id="r", model="m", raw=frame("春眠"))
    assert out == plain
    assert hash(out) == hash(plain)
    assert repr(out) == repr(plain)
    assert dataclasses.asdict(out) == dataclasses.asdict(plain)
    assert dataclasses.replace(out, delta="x").text == "春眠"
    assert pickle.loads(pickle.dumps(out)) == plain
    assert pickle.loads(pickle.dumps(out)).raw == frame("春眠")
    assert copy.deepcopy(out) == plain
    assert (out.tool_calls, out.parts, out.logprobs, out.tool_info) == ((), (), (), ())
    assert out.search_info is None


def test_lazy_text_is_a_prefix_of_the_shared_buffer() -> None:
    a, b = streamed("ab", "cd")
    assert (b.text, a.text, a.thinking) == ("abcd", "ab", "")


def test_raw_is_the_frame_read_only() -> None:
    (out,) = streamed("x")
    assert out.raw == frame("x")
    with pytest.raises(TypeError):
        out.raw["output"] = {}  # type: ignore[index]
    assert ModelOutput().raw == {}
    assert ModelOutput.from_error(ValueError("e")).raw == {}


def test_unknown_attributes_still_raise() -> None:
    with pytest.raises(AttributeError):
        _ = streamed("x")[0].nope  # type: ignore[attr-defined]


def test_from_error_for_api_errors() -> None:
    error = AuthenticationError(
        "Invalid API-key provided.", status_code=401, code="InvalidApiKey", request_id="r"
    )
    out = ModelOutput.from_error(error)
    assert (out.error_code, out.text, out.request_id) == (
        -1,
        "InvalidApiKey:Invalid API-key provided.",
        "r",
    )


def test_from_error_for_other_exceptions_is_one_line() -> None:
    out = ModelOutput.from_error(APIConnectionError("boom\nsecond line"))
    assert out.error_code == 1
    assert "\n" not in out.text
    assert out.text.startswith("**LLMServer Generate Error, Please CheckErrorInfo.**: boom")
    assert ModelOutput.from_error(ValueError()).text.endswith("ValueError")


def test_timeout_coercion() -> None:
    assert Timeout.coerce(None) == Timeout(connect=5.0, read=60.0, total=None)
    assert Timeout.coerce(3) == Timeout(total=3.0)
    custom = Timeout(connect=1, read=None)
    assert Timeout.coerce(custom) is custom
    with pytest.raises(ValueError):
        Timeout(read=0)
    for bad in (math.inf, -math.inf, math.nan, -1, 0.0):
        for name in ("connect", "read", "total"):
            with pytest.raises(ValueError, match=name):
                Timeout(**{name: bad})
        with pytest.raises(ValueError):
            Timeout.coerce(bad)
    with pytest.raises(ValueError):
        Timeout.coerce("1")  # type: ignore[arg-type]


def test_usage_and_tool_call_are_frozen_values() -> None:
    assert Usage(1, 2, 3).to_dict() == {
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "total_tokens": 3,
    }
    call = ToolCall(0, "id", "name", "{}")
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.name = "x"  # type: ignore[misc]


def test_to_message_builds_the_assistant_turn_of_a_tool_round_trip() -> None:
    out = ModelOutput(
        text="", tool_calls=(ToolCall(0, "call_1", "get_weather", '{"city": "杭州"}'),)
    )
    assert out.to_message() == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "杭州"}'},
            }
        ],
    }
    assert ModelOutput(text="hi").to_message() == {"role": "assistant", "content": "hi"}


def test_parse_json_of_a_deeply_nested_answer_is_a_json_output_error() -> None:
    out = ModelOutput(text="[" * 5000 + "]" * 5000, finish_reason="stop")
    with pytest.raises(JSONOutputError, match="nested too deeply"):
        out.parse_json()
