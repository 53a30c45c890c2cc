"""The accumulator: frames in, cumulative outputs out."""

from __future__ import annotations

import itertools
import json
import logging
import pickle
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiotongyi import (
    APIConnectionError,
    BadRequestError,
    ProtocolError,
    RateLimitError,
    SearchInfo,
    SearchResult,
    StreamInterruptedError,
    TokenLogprob,
    ToolCall,
    TopLogprob,
    Usage,
)
from aiotongyi._accumulate import Accumulator
from aiotongyi._sse import SSEEvent

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the checkout, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks.frame_shapes import SHAPES, per_frame_seconds  # noqa: E402


def frame(
    content: str | None = "",
    *,
    reasoning: str | None = None,
    finish: object = "null",
    tool_calls: list[dict[str, Any]] | None = None,
    usage: dict[str, Any] | None = None,
    index: int | None = None,
) -> SSEEvent:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    choice: dict[str, Any] = {"message": message, "finish_reason": finish}
    if index is not None:
        choice["index"] = index
    body: dict[str, Any] = {"output": {"choices": [choice]}, "request_id": "req-1"}
    if usage is not None:
        body["usage"] = usage
    return SSEEvent("result", json.dumps(body, ensure_ascii=False).encode(), None, 200)


def run(events: list[SSEEvent], **kwargs: Any) -> list[Any]:
    acc = Accumulator("qwen-plus", **kwargs)
    outputs = []
    for event in events:
        outputs += acc.add_event(event)
    return outputs


@given(st.lists(st.text(min_size=0, max_size=8), max_size=20))
def test_text_is_the_concatenation_of_deltas(deltas: list[str]) -> None:
    outputs = run([frame(d) for d in deltas] + [frame("", finish="stop")])
    assert outputs[-1].text == "".join(deltas)
    assert "".join(o.delta for o in outputs) == "".join(deltas)
    for earlier, later in itertools.pairwise(outputs):
        assert later.text.startswith(earlier.text)


def test_empty_frames_are_not_yielded() -> None:
    outputs = run([frame("a"), frame(""), frame(None), frame("", finish="stop")])
    assert [(o.delta, o.finish_reason) for o in outputs] == [("a", None), ("", "stop")]


@pytest.mark.parametrize("raw", ["null", None, ""])
def test_null_finish_reasons_become_none(raw: object) -> None:
    assert run([frame("a", finish=raw)])[0].finish_reason is None


def test_other_finish_reasons_pass_through() -> None:
    assert run([frame("a", finish="length")])[0].finish_reason == "length"


def test_final_frame_text_is_kept() -> None:
    outputs = run([frame("a"), frame("b", finish="stop")])
    assert outputs[-1].text == "ab"
    assert outputs[-1].delta == "b"


def test_thinking_accumulates_apart_from_text() -> None:
    outputs = run(
        [
            frame("", reasoning="先看"),
            frame("", reasoning="个位"),
            frame("答案", reasoning=""),
            frame("", finish="stop"),
        ]
    )
    assert [o.thinking_delta for o in outputs] == ["先看", "个位", "", ""]
    assert outputs[-1].thinking == "先看个位"
    assert outputs[-1].text == "答案"
    assert outputs[1].text == ""


def test_tool_calls_merge_by_index() -> None:
    first = {
        "index": 0,
        "id": "call_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "'},
    }
    second = {"index": 1, "id": "call_2", "type": "function", "function": {"name": "now"}}
    more = {"index": 0, "id": "", "type": "function", "function": {"arguments": ' 杭州"}'}}
    outputs = run(
        [
            frame(tool_calls=[first]),
            frame(tool_calls=[second]),
            frame(tool_calls=[more]),
            frame(finish="tool_calls"),
        ]
    )
    assert outputs[-1].finish_reason == "tool_calls"
    assert outputs[-1].tool_calls == (
        ToolCall(0, "call_1", "get_weather", '{"city": " 杭州"}'),
        ToolCall(1, "call_2", "now", ""),
    )
    assert outputs[0].tool_calls == (ToolCall(0, "call_1", "get_weather", '{"city": "'),)


def test_delivered_outputs_never_change() -> None:
    fragment = {"index": 0, "id": "c", "function": {"name": "f", "arguments": "{"}}
    outputs = run([frame(tool_calls=[fragment]), frame(tool_calls=[fragment])])
    assert outputs[0].tool_calls[0].arguments == "{"
    assert outputs[1].tool_calls[0].arguments == "{{"


def test_usage_maps_dashscope_names_and_last_wins() -> None:
    outputs = run(
        [
            frame("a", usage={"input_tokens": 5, "output_tokens": 1, "total_tokens": 6}),
            frame(
                "",
                finish="stop",
                usage={
                    "input_tokens": 5,
                    "output_tokens": 9,
                    "output_tokens_details": {"reasoning_tokens": 4},
                },
            ),
        ]
    )
    assert outputs[0].usage == Usage(5, 1, 6)
    assert outputs[-1].usage == Usage(5, 9, 14, reasoning_tokens=4)
    assert outputs[-1].usage is not None
    assert outputs[-1].usage.to_dict() == {
        "prompt_tokens": 5,
        "completion_tokens": 9,
        "total_tokens": 14,
    }


def test_request_id_and_model_are_on_every_output() -> None:
    out = run([frame("a")])[0]
    assert (out.request_id, out.model, out.index, out.error_code) == ("req-1", "qwen-plus", 0, 0)


def test_snapshot_mode_diffs_against_the_previous_snapshot() -> None:
    outputs = run(
        [frame("春"), frame("春眠"), frame("春眠不觉晓", finish="stop")], incremental=False
    )
    assert [o.delta for o in outputs] == ["春", "眠", "不觉晓"]
    assert outputs[-1].text == "春眠不觉晓"
    assert outputs[0].text == "春"


def test_snapshot_rewrite_starts_over() -> None:
    outputs = run([frame("abc"), frame("xyz")], incremental=False)
    assert [o.text for o in outputs] == ["abc", "xyz"]
    assert outputs[1].delta == "xyz"


def test_choices_are_never_mixed() -> None:
    outputs = run([frame("a", index=0), frame("b", index=1), frame("c", index=0, finish="stop")])
    assert [(o.index, o.text) for o in outputs] == [(0, "a"), (1, "b"), (0, "ac")]


def test_completion_needs_every_choice_seen() -> None:
    acc = Accumulator("m")
    assert not acc.is_complete
    acc.add_event(frame("a", index=0, finish="stop"))
    assert acc.is_complete  # a model may ignore n and send one choice
    acc.add_event(frame("b", index=1))
    assert not acc.is_complete
    acc.add_event(frame("", index=1, finish="stop"))
    assert acc.is_complete


def test_multimodal_list_content_is_flattened() -> None:
    event = SSEEvent(
        "result",
        json.dumps(
            {
                "output": {
                    "choices": [
                        {
                            "message": {"content": [{"text": "这是"}, {"image": "x"}]},
                            "finish_reason": "stop",
                        }
                    ]
                }
            }
        ).encode(),
    )
    assert run([event])[0].text == "这是"


def test_legacy_text_format_is_understood() -> None:
    event = SSEEvent("result", b'{"output":{"text":"hi","finish_reason":"stop"}}')
    out = run([event], incremental=False)[0]
    assert (out.text, out.finish_reason) == ("hi", "stop")


def test_error_event_raises_its_status_class_with_partial() -> None:
    acc = Accumulator("m")
    acc.add_event(frame("partial text"))
    error = SSEEvent(
        "error",
        b'{"code":"Throttling.RateQuota","message":"slow down","request_id":"r9"}',
        None,
        429,
    )
    with pytest.raises(RateLimitError) as info:
        acc.add_event(error)
    assert info.value.status_code == 429
    assert info.value.code == "Throttling.RateQuota"
    assert info.value.request_id == "r9"
    assert info.value.partial is not None
    assert info.value.partial.text == "partial text"


def test_a_code_without_output_is_an_error() -> None:
    with pytest.raises(BadRequestError):
        run([SSEEvent("result", b'{"code":"InvalidParameter","message":"bad"}')])


def test_a_frame_without_output_is_skipped() -> None:
    assert run([SSEEvent("result", b'{"request_id":"r"}')]) == []


@pytest.mark.parametrize(
    "data",
    [b"{not json", b"[1,2]", b"\xff\xfe", b'{"output":{"choices":5}}', b'{"output":[]}'],
)
def test_malformed_frames_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        run([SSEEvent("result", data)])


def test_wrong_types_inside_a_choice_are_protocol_errors() -> None:
    bad = b'{"output":{"choices":[{"message":{"content":5},"finish_reason":"null"}]}}'
    with pytest.raises(ProtocolError):
        run([SSEEvent("result", bad)])


def test_unknown_fields_are_ignored() -> None:
    data = (
        b'{"output":{"choices":[{"message":{"content":"a","x":1},"finish_reason":"null",'
        b'"logprobs":null}],"search_info":{}},"extra":true}'
    )
    assert run([SSEEvent("result", data)])[0].text == "a"


def test_interrupted_before_and_after_content() -> None:
    acc = Accumulator("m")
    assert type(acc.interrupted()) is APIConnectionError
    acc.add_event(frame("x"))
    error = acc.interrupted()
    assert isinstance(error, StreamInterruptedError)
    assert error.partial is not None
    assert error.partial.text == "x"


def test_long_answers_keep_every_prefix_right() -> None:
    # past the eager limit texts are joined lazily; every output must still see its prefix
    deltas = [f"{i:05d}-春眠不觉晓，处处闻啼鸟。" for i in range(4000)]
    outputs = run([frame(d) for d in deltas] + [frame("", finish="stop")])
    for i in (0, 1000, 1800, 2500, 3999):
        assert outputs[i].text == "".join(deltas[: i + 1])
    assert outputs[-1].text == "".join(deltas)
    assert outputs[10].text == "".join(deltas[:11])  # read again after later joins


@given(
    st.lists(st.text(max_size=6), min_size=1, max_size=120),
    st.lists(st.tuples(st.integers(0, 119), st.integers(0, 119)), max_size=40),
)
def test_any_output_read_at_any_time_has_its_prefix(
    deltas: list[str], reads: list[tuple[int, int]]
) -> None:
    # Unread parts are joined in runs as they come (memory at 5,000 streams):
    # an output read before, during or after any run still sees exactly its prefix.
    acc = Accumulator("qwen-plus")
    outputs: list[Any] = []
    arrived: list[str] = []
    for step, delta in enumerate(deltas):
        outputs += acc.add_event(frame(delta))
        if delta:
            arrived.append(delta)
        for when, which in reads:
            if when == step and outputs:
                output = outputs[which % len(outputs)]
                assert output.text == "".join(arrived[: outputs.index(output) + 1])
    expected = "".join(deltas)
    if outputs:
        assert outputs[-1].text == expected
        assert [o.text for o in outputs] == list(itertools.accumulate(arrived))


# -- flat cost per frame (issue 15) ----------------------------------------------------


@pytest.mark.parametrize("shape", list(SHAPES))
def test_cost_per_frame_is_flat_for_every_shape(shape: str) -> None:
    # Loose on purpose (a shared machine is noisy): quadratic merging gave 12x here.
    small = per_frame_seconds(shape, 1000, repeat=8)
    large = per_frame_seconds(shape, 8000, repeat=2)
    assert large / small < 2, f"{shape}: {small * 1e6:.1f} -> {large * 1e6:.1f} us/frame"


def tool_frame(index: int, *, call_id: str = "", name: str = "", arguments: str = "") -> SSEEvent:
    fragment: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        fragment["id"] = call_id
    if name:
        fragment["function"]["name"] = name
    return frame("", tool_calls=[fragment])


def test_many_tool_calls_merge_correctly_whatever_order_outputs_are_read() -> None:
    events = [tool_frame(i, call_id=f"c{i}", name="f", arguments="{") for i in (2, 0, 1)]
    events += [tool_frame(i, arguments=f"{i}}}") for i in range(3)]
    outputs = run([*events, frame("", finish="tool_calls")])
    expected = [
        [(2, "{")],
        [(0, "{"), (2, "{")],
        [(0, "{"), (1, "{"), (2, "{")],
        [(0, "{0}"), (1, "{"), (2, "{")],
        [(0, "{0}"), (1, "{1}"), (2, "{")],
        [(0, "{0}"), (1, "{1}"), (2, "{2}")],
        [(0, "{0}"), (1, "{1}"), (2, "{2}")],
    ]
    for order in (range(len(outputs)), reversed(range(len(outputs))), [6, 0, 3, 3, 1]):
        for i in order:
            calls = outputs[i].tool_calls
            assert [(c.index, c.arguments) for c in calls] == expected[i]
            assert all(isinstance(c, ToolCall) and c.name == "f" for c in calls)
            assert [c.id for c in calls] == [f"c{c.index}" for c in calls]


# -- frames after the finish ---------------------------------------------------------


def finished(**kwargs: Any) -> tuple[Accumulator, list[Any]]:
    acc = Accumulator("qwen-plus", **kwargs)
    outputs = acc.add_event(frame("answer", usage={"input_tokens": 1, "output_tokens": 2}))
    outputs += acc.add_event(frame("", finish="stop"))
    return acc, outputs


@pytest.mark.parametrize("choices", [None, 1])
def test_content_and_finish_frames_after_the_finish_change_nothing(
    choices: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    acc, outputs = finished(choices=choices)
    caplog.set_level(logging.DEBUG, logger="aiotongyi")
    usage = {"input_tokens": 1, "output_tokens": 99, "total_tokens": 100}
    assert acc.add_event(frame(" INJECTED", usage=usage)) == []
    assert acc.add_event(frame(" INJECTED", finish="length")) == []
    assert acc.add_event(frame("", reasoning="hmm", finish="null")) == []
    assert acc.add_event(frame("", tool_calls=[{"index": 0, "function": {"name": "f"}}])) == []
    assert acc.last is outputs[-1]
    assert (acc.last.text, acc.last.finish_reason) == ("answer", "stop")
    assert acc.usage == Usage(1, 2, 3)
    assert acc.is_complete
    assert "after the answer finished" in caplog.text


def test_error_and_garbage_frames_after_the_finish_are_ignored() -> None:
    acc, _ = finished()
    error = json.dumps({"code": "Throttling", "message": "late"}).encode()
    assert acc.add_event(SSEEvent("error", error, None, 429)) == []
    assert acc.add_frame({"code": "InternalError", "message": "late"}) == []
    assert acc.add_event(SSEEvent("result", b"{not json", None, 200)) == []
    assert acc.add_event(SSEEvent("result", b"[" * 1500 + b"]" * 1500, None, 200)) == []
    assert acc.add_event(SSEEvent("result", b"[1]", None, 200)) == []
    assert acc.last is not None
    assert acc.last.text == "answer"


def test_a_usage_only_frame_after_the_finish_updates_usage_only() -> None:
    acc, outputs = finished()
    usage = {"input_tokens": 1, "output_tokens": 5, "total_tokens": 6}
    assert acc.add_frame({"output": {"choices": []}, "usage": usage}) == []
    assert acc.usage == Usage(1, 5, 6)
    assert acc.add_frame({"usage": {**usage, "output_tokens": 7, "total_tokens": 8}}) == []
    assert acc.usage == Usage(1, 7, 8)
    assert acc.last is outputs[-1]  # outputs already delivered never change


def test_a_new_choice_after_the_first_finished_is_taken_while_n_allows() -> None:
    acc, _ = finished(choices=2)
    assert [o.text for o in acc.add_event(frame("second", index=1))] == ["second"]
    assert not acc.is_complete
    acc.add_event(frame("", index=1, finish="stop"))
    assert acc.add_event(frame("third", index=2)) == []


def test_a_new_choice_index_after_the_finish_is_refused_when_n_is_one() -> None:
    acc, _ = finished(choices=1)
    assert acc.add_event(frame("other", index=1)) == []
    assert acc.is_complete


# -- hostile JSON --------------------------------------------------------------------


def test_a_deeply_nested_frame_is_a_protocol_error_keeping_partial() -> None:
    acc = Accumulator("qwen-plus")
    acc.add_event(frame("half"))
    deep = b'{"output":' + b"[" * 1500 + b"]" * 1500 + b"}"
    assert 2900 < len(deep) < 3100
    with pytest.raises(ProtocolError) as caught:
        acc.add_event(SSEEvent("result", deep, None, 200))
    assert caught.value.partial is not None
    assert caught.value.partial.text == "half"
    assert "nested too deeply" in str(caught.value)


def test_a_frame_nested_just_under_the_limit_in_odd_places_is_a_protocol_error() -> None:
    acc = Accumulator("qwen-plus")
    acc.add_event(frame("half"))
    nested = "[" * 900 + "]" * 900
    body = (
        '{"output":{"choices":[{"message":{"content":"x"},"logprobs":{"content":' + nested + "}}]}}"
    )
    with pytest.raises(ProtocolError) as caught:
        acc.add_event(SSEEvent("result", body.encode(), None, 200))
    assert caught.value.partial is not None


# -- usage in every spelling ---------------------------------------------------------


def test_cached_tokens_at_the_top_level_of_usage() -> None:
    # qwen-doc-turbo puts cached_tokens beside input_tokens (a recorded reply).
    usage = {"input_tokens": 10, "output_tokens": 2, "total_tokens": 12, "cached_tokens": 8}
    (out,) = run([frame("a", finish="stop", usage=usage)])
    assert out.usage.cached_tokens == 8


def test_cached_tokens_under_either_details_object() -> None:
    for key in ("prompt_tokens_details", "input_tokens_details"):
        usage = {"input_tokens": 10, "output_tokens": 2, key: {"cached_tokens": 4}}
        (out,) = run([frame("a", finish="stop", usage=usage)])
        assert out.usage.cached_tokens == 4


# -- everything the service sends (issue 16) -----------------------------------------

SEARCH = {
    "search_results": [
        {
            "index": 1,
            "title": "杭州天气",
            "url": "https://weather.example/hz",
            "site_name": "天气网",
            "icon": "https://weather.example/i.png",
            "extra": "kept in raw",
        }
    ]
}


def rich(content: str, *, finish: str = "null", **output_extra: Any) -> dict[str, Any]:
    return {
        "output": {
            "choices": [
                {"message": {"role": "assistant", "content": content}, "finish_reason": finish}
            ],
            **output_extra,
        },
        "request_id": "r",
    }


def test_search_info_is_typed_and_kept_from_the_frame_that_carries_it() -> None:
    acc = Accumulator("qwen-plus")
    first = acc.add_frame(rich("a"))
    second = acc.add_frame(rich("b", search_info=SEARCH))
    third = acc.add_frame(rich("", finish="stop"))
    assert first[0].search_info is None
    expected = SearchInfo(
        (
            SearchResult(
                1,
                "杭州天气",
                "https://weather.example/hz",
                "天气网",
                "https://weather.example/i.png",
            ),
        )
    )
    assert second[0].search_info == expected
    assert third[0].search_info == expected
    assert third[0].raw["output"] == rich("", finish="stop")["output"]
    assert second[0].raw["output"]["search_info"]["search_results"][0]["extra"] == "kept in raw"


def test_logprobs_cumulative_and_per_frame() -> None:
    def token(text: str, logprob: float) -> dict[str, Any]:
        return {
            "token": text,
            "logprob": logprob,
            "bytes": list(text.encode()),
            "top_logprobs": [{"token": text, "logprob": logprob, "bytes": list(text.encode())}],
        }

    frames = []
    for i, pieces in enumerate([["春", "眠"], ["不"], []]):
        body = rich("".join(pieces), finish="stop" if i == 2 else "null")
        body["output"]["choices"][0]["logprobs"] = {
            "content": [token(p, -0.1 * n) for n, p in enumerate(pieces)]
        }
        frames.append(body)
    acc = Accumulator("qwen-plus")
    outputs = [out for body in frames for out in acc.add_frame(body)]
    assert [[t.token for t in o.logprobs_delta] for o in outputs] == [["春", "眠"], ["不"], []]
    assert [[t.token for t in o.logprobs] for o in outputs] == [
        ["春", "眠"],
        ["春", "眠", "不"],
        ["春", "眠", "不"],
    ]
    first = outputs[0].logprobs[0]
    assert first == TokenLogprob(
        "春", -0.0, tuple("春".encode()), (TopLogprob("春", -0.0, tuple("春".encode())),)
    )


def test_outputs_without_logprobs_have_empty_tuples() -> None:
    (out,) = run([frame("a", finish="stop")])
    assert (out.logprobs, out.logprobs_delta, out.tool_info, out.search_info) == ((), (), (), None)


def test_tool_info_is_kept_as_sent() -> None:
    info = [{"type": "code_interpreter", "code_interpreter": {"code": "print(12**3)"}}]
    acc = Accumulator("qwen3-max")
    outputs = acc.add_frame(rich("", tool_info=info))  # no text: no output yet
    outputs += acc.add_frame(rich("1728", finish="stop"))
    (out,) = outputs
    assert out.tool_info == tuple(info)
    assert out.tool_info[0]["code_interpreter"] == {"code": "print(12**3)"}
    with pytest.raises(TypeError):
        out.tool_info[0]["type"] = "x"  # type: ignore[index]


def test_usage_keeps_every_detail() -> None:
    usage = {
        "input_tokens": 100,
        "output_tokens": 20,
        "total_tokens": 120,
        "input_tokens_details": {
            "text_tokens": 40,
            "image_tokens": 50,
            "audio_tokens": 6,
            "video_tokens": 4,
            "cached_tokens": 30,
            "cache_creation_input_tokens": 10,
        },
        "output_tokens_details": {"text_tokens": 12, "reasoning_tokens": 8},
        "plugins": {"search": {"count": 1, "strategy": "turbo"}},
        "seconds": 3,
    }
    (out,) = run([frame("a", finish="stop", usage=usage)])
    got = out.usage
    assert (got.prompt_tokens, got.completion_tokens, got.total_tokens) == (100, 20, 120)
    assert (got.reasoning_tokens, got.cached_tokens, got.cache_creation_input_tokens) == (8, 30, 10)
    assert (got.image_tokens, got.audio_tokens, got.video_tokens) == (50, 6, 4)
    assert got.plugins == {"search": {"count": 1, "strategy": "turbo"}}
    assert got.raw == usage
    assert got.raw["seconds"] == 3
    assert got.to_dict() == {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    assert pickle.loads(pickle.dumps(got)) == got


def test_top_level_token_details_are_read_too() -> None:
    usage = {
        "input_tokens": 9,
        "output_tokens": 1,
        "image_tokens": 7,
        "cache_creation_input_tokens": 2,
    }
    (out,) = run([frame("a", finish="stop", usage=usage)])
    assert (out.usage.image_tokens, out.usage.cache_creation_input_tokens) == (7, 2)


def test_plain_usage_has_no_details() -> None:
    (out,) = run(
        [
            frame(
                "a", finish="stop", usage={"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}
            )
        ]
    )
    assert out.usage == Usage(1, 2, 3)
    assert out.usage.plugins is None
    assert out.usage.raw == {"input_tokens": 1, "output_tokens": 2, "total_tokens": 3}


@pytest.mark.parametrize(
    "bad",
    [
        {"search_info": "nope"},
        {"search_info": {"search_results": [1]}},
    ],
)
def test_malformed_extras_are_protocol_errors(bad: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        Accumulator("m").add_frame(rich("a", **bad))


def test_malformed_logprobs_are_protocol_errors() -> None:
    body = rich("a")
    body["output"]["choices"][0]["logprobs"] = {"content": [{"token": 1, "logprob": "x"}]}
    with pytest.raises(ProtocolError):
        Accumulator("m").add_frame(body)


def test_a_json_body_is_one_frame_and_garbage_is_a_protocol_error() -> None:
    body = json.dumps(
        {"output": {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]}}
    )
    assert [o.text for o in Accumulator("m").add_body(body.encode())] == ["ok"]
    for bad in (b"[" * 1500 + b"]" * 1500, b"not json", b"[1, 2]", b"\xff"):
        with pytest.raises(ProtocolError):
            Accumulator("m").add_body(bad)


def test_snapshot_tool_arguments_leave_earlier_outputs_alone() -> None:
    events = [
        tool_frame(0, call_id="c", name="f", arguments='{"a"'),
        tool_frame(0, arguments='{"a": 1'),
        tool_frame(0, arguments='{"b": 2}'),  # the service rewrote it
    ]
    outputs = run(events, incremental=False)
    assert [o.tool_calls[0].arguments for o in outputs] == ['{"a"', '{"a": 1', '{"b": 2}']
    incremental = run(
        [tool_frame(0, call_id="c", name="f", arguments="{"), tool_frame(0, arguments="}")]
    )
    assert [o.tool_calls[0].arguments for o in incremental] == ["{", "{}"]


fragments = st.lists(
    st.tuples(
        st.integers(0, 4),  # index
        st.sampled_from(["", "id1", "id2"]),
        st.sampled_from(["", "f", "g"]),
        st.text(alphabet="{}ab:1", max_size=4),
    ),
    min_size=1,
    max_size=25,
)


@given(fragments, st.booleans())
def test_tool_calls_match_a_naive_merge_at_every_output(
    steps: list[tuple[int, str, str, str]], incremental: bool
) -> None:
    """Every output's tool calls equal a straightforward merge of the fragments so far."""
    acc = Accumulator("m", incremental=incremental)
    expected: list[tuple[ToolCall, ...]] = []
    produced = []
    state: dict[int, list[str]] = {}
    for index, call_id, name, arguments in steps:
        outs = acc.add_event(tool_frame(index, call_id=call_id, name=name, arguments=arguments))
        call = state.get(index)
        if call is None:
            state[index] = [call_id, name, arguments]
        else:
            call[0] = call[0] or call_id
            call[1] = call[1] or name
            if arguments:
                call[2] = call[2] + arguments if incremental else arguments
        produced += outs
        expected += [tuple(ToolCall(i, c[0], c[1], c[2]) for i, c in sorted(state.items()))] * len(
            outs
        )
    # Read in reverse, then forwards: the cache must not leak between outputs.
    assert [o.tool_calls for o in reversed(produced)] == expected[::-1]
    assert [o.tool_calls for o in produced] == expected


def test_plain_usage_on_every_frame_reads_like_any_other_usage() -> None:
    acc = Accumulator("m")
    outputs = []
    for i in range(1, 4):
        usage = {"input_tokens": 5, "output_tokens": i, "total_tokens": 5 + i}
        outputs += acc.add_event(frame("ab", usage=usage, finish="stop" if i == 3 else "null"))
    assert [o.usage for o in outputs] == [Usage(5, 1, 6), Usage(5, 2, 7), Usage(5, 3, 8)]
    assert outputs[0].usage is outputs[0].usage  # built once per output
    assert acc.usage == Usage(5, 3, 8)
    assert acc.usage.raw == {"input_tokens": 5, "output_tokens": 3, "total_tokens": 8}
    copy = pickle.loads(pickle.dumps(outputs[1]))
    assert copy == outputs[1]
    assert copy.usage == Usage(5, 2, 7)


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": 5, "output_tokens": "1", "total_tokens": 6},
        {"input_tokens": 5.5, "output_tokens": 1, "total_tokens": 6},
        {"input_tokens": True, "output_tokens": 1, "total_tokens": 6},
    ],
)
def test_a_bad_token_count_is_a_protocol_error_on_its_frame(usage: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError):
        run([frame("a", usage=usage)])
