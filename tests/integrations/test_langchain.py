"""aiotongyi.integrations.langchain.ChatTongyi against the emulator.

Skipped unless langchain-core is installed (the ``aiotongyi[langchain]`` extra;
CI runs it in its own venv through ``.ci/langchain.sh``, which sets
``AIOTONGYI_REQUIRE_LANGCHAIN`` so that nothing is skipped there).
"""

from __future__ import annotations

import gc
import json
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

if not os.environ.get("AIOTONGYI_REQUIRE_LANGCHAIN"):
    pytest.importorskip(
        "langchain_core",
        reason="langchain-core is not installed (pip install 'aiotongyi[langchain]')",
    )

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from aiotongyi import AuthenticationError, RateLimitError
from aiotongyi.integrations.langchain import ChatTongyi
from aiotongyi.testing import DashScopeEmulator, Reply, ToolCallScript, http_error

Emu = DashScopeEmulator


@pytest.fixture
def emu(dashscope_emulator: DashScopeEmulator) -> DashScopeEmulator:
    return dashscope_emulator


def chat(emu: Emu, **fields: Any) -> ChatTongyi:
    return ChatTongyi(base_url=emu.base_url, api_key=emu.api_key, **fields)


def sent(emu: Emu, number: int = -1) -> dict[str, Any]:
    body = emu.requests[number].json
    assert isinstance(body, dict)
    return body


def add_up(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


# -- parameters ---------------------------------------------------------------------


def test_fields_reach_the_request_and_top_p_is_not_forced(emu: Emu) -> None:
    model = chat(emu, model="qwen-max", temperature=0.3, max_tokens=64, stop=["END"])
    model.invoke("hi")
    body = sent(emu)
    assert body["model"] == "qwen-max"
    parameters = body["parameters"]
    assert (parameters["temperature"], parameters["max_tokens"], parameters["stop"]) == (
        0.3,
        64,
        ["END"],
    )
    assert "top_p" not in parameters


def test_call_options_win_and_unknown_model_kwargs_are_sent_as_they_are(emu: Emu) -> None:
    model = chat(emu, model_name="qwen-plus", model_kwargs={"seed": 7, "vendor_flag": "x"})
    model.invoke("hi", stop=["you"], model="qwen-max", top_k=5)
    body = sent(emu)
    assert body["model"] == "qwen-max"
    assert body["parameters"]["seed"] == 7
    assert body["parameters"]["vendor_flag"] == "x"
    assert body["parameters"]["top_k"] == 5
    assert body["parameters"]["stop"] == ["you"]


def test_api_key_from_the_environment_never_shows(
    emu: Emu, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-secret-from-env")
    model = ChatTongyi(base_url=emu.base_url)
    assert model.api_key is not None
    assert "sk-secret-from-env" not in repr(model) + str(model.model_dump())
    model.invoke("hi")
    assert emu.requests[-1].headers["authorization"] == "Bearer sk-secret-from-env"


def test_messages_become_dashscope_messages(emu: Emu) -> None:
    model = chat(emu)
    history: list[BaseMessage] = [
        SystemMessage("be brief"),
        HumanMessage([{"type": "text", "text": "what is 1 + 2"}]),
        AIMessage("", tool_calls=[{"name": "add", "args": {"a": 1, "b": 2}, "id": "c1"}]),
        ToolMessage("3", tool_call_id="c1", name="add"),
    ]
    answer = model.invoke(history)
    assert answer.text == "The tool returned: 3"
    messages = sent(emu)["input"]["messages"]
    assert messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"text": "what is 1 + 2"}]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'},
                }
            ],
        },
        {"role": "tool", "content": "3", "tool_call_id": "c1", "name": "add"},
    ]


# -- answers ------------------------------------------------------------------------


def test_stream_metadata_and_usage_on_exactly_one_chunk(emu: Emu) -> None:
    emu.enqueue(Reply(text=["Hel", "lo"], usage=(9, 2), request_id="rid-1"))
    chunks = list(chat(emu, model="qwen-plus").stream("hi"))
    assert "".join(str(c.content) for c in chunks) == "Hello"
    with_usage = [c for c in chunks if c.usage_metadata]
    with_metadata = [c for c in chunks if c.response_metadata.get("model_name")]
    assert len(with_usage) == len(with_metadata) == 1
    total = add_up(chunks)
    assert total.usage_metadata == {"input_tokens": 9, "output_tokens": 2, "total_tokens": 11}
    assert total.response_metadata["model_name"] == "qwen-plus"
    assert total.response_metadata["model_provider"] == "tongyi"
    assert total.response_metadata["finish_reason"] == "stop"
    assert total.response_metadata["request_id"] == "rid-1"


async def test_tool_call_chunks_carry_their_index(emu: Emu) -> None:
    emu.enqueue(
        Reply(
            tool_calls=[
                ToolCallScript("get_weather", ['{"city": "', '杭州"}'], id="call_a"),
                ToolCallScript("get_time", ['{"zone"', ': "UTC+8"}'], id="call_b"),
            ]
        )
    )
    chunks = [c async for c in chat(emu).astream("weather and time?")]
    pieces = [piece for c in chunks for piece in c.tool_call_chunks]
    assert [(p["index"], p["name"], p["args"]) for p in pieces] == [
        (0, "get_weather", '{"city": "'),
        (0, None, '杭州"}'),
        (1, "get_time", '{"zone"'),
        (1, None, ': "UTC+8"}'),
    ]
    total = add_up(chunks)
    assert [(c["name"], c["args"], c["id"]) for c in total.tool_calls] == [
        ("get_weather", {"city": "杭州"}, "call_a"),
        ("get_time", {"zone": "UTC+8"}, "call_b"),
    ]
    assert total.response_metadata["finish_reason"] == "tool_calls"


async def test_invoke_parses_tool_calls_and_keeps_bad_arguments_as_invalid(emu: Emu) -> None:
    emu.enqueue(
        Reply(
            tool_calls=[
                ToolCallScript("ok", '{"a": 1}', id="c1"),
                ToolCallScript("broken", '{"a": ', id="c2"),
            ]
        )
    )
    answer = await chat(emu).ainvoke("go")
    assert [(c["name"], c["args"]) for c in answer.tool_calls] == [("ok", {"a": 1})]
    [invalid] = answer.invalid_tool_calls
    assert (invalid["name"], invalid["args"], invalid["id"]) == ("broken", '{"a": ', "c2")


@pytest.mark.parametrize("streamed", [False, True])
def test_reasoning_goes_to_additional_kwargs(emu: Emu, streamed: bool) -> None:
    model = chat(emu, model_kwargs={"enable_thinking": True})
    if streamed:
        chunks = list(model.stream("What is 3^3?"))
        assert all(c.content == "" for c in chunks if c.additional_kwargs.get("reasoning_content"))
        answer: AIMessage = add_up(chunks)
    else:
        answer = model.invoke("What is 3^3?")
    assert answer.text == "3^3 = 27."
    assert answer.additional_kwargs["reasoning_content"].startswith("The user wrote")
    assert answer.usage_metadata is not None
    reasoning = answer.usage_metadata.get("output_token_details", {}).get("reasoning")
    assert isinstance(reasoning, int) and reasoning > 0
    assert any(block["type"] == "reasoning" for block in answer.content_blocks)


def test_n_gives_several_generations(emu: Emu) -> None:
    result = chat(emu, model_kwargs={"n": 2}).generate([[HumanMessage("hi")]])
    assert [g.text for g in result.generations[0]] == ["Hello! You said: hi"] * 2


def test_streaming_field_makes_invoke_stream(emu: Emu) -> None:
    tokens: list[str] = []

    class Collect(BaseCallbackHandler):
        def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
            tokens.append(token)

    emu.enqueue(Reply(text=["a", "b", "c"]))
    answer = chat(emu, streaming=True).invoke("hi", config={"callbacks": [Collect()]})
    assert answer.text == "abc"
    assert "".join(tokens) == "abc" and len(tokens) >= 3


# -- errors -------------------------------------------------------------------------


def test_typed_errors_pass_through_sync(emu: Emu) -> None:
    emu.enqueue(http_error(429, "Throttling.RateQuota", request_id="rid-429"))
    with pytest.raises(RateLimitError) as caught:
        chat(emu, max_retries=0).invoke("hi")
    assert caught.value.code == "Throttling.RateQuota"
    assert caught.value.request_id == "rid-429"


async def test_typed_errors_pass_through_async(emu: Emu) -> None:
    emu.enqueue(http_error(401))
    with pytest.raises(AuthenticationError):
        async for _ in chat(emu, max_retries=0).astream("hi"):
            pass


def test_retries_apply_to_streams(emu: Emu) -> None:
    emu.enqueue(http_error(503, retry_after=0), Reply(text=["recovered"]))
    chunks = list(chat(emu, max_retries=1).stream("hi"))
    assert add_up(chunks).text == "recovered"
    assert len(emu.requests) == 2


# -- tools and structured output ----------------------------------------------------


@tool
def get_weather(location: str) -> str:
    """Get the weather at a location."""
    return f"It is sunny in {location}."


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pytest.mark.parametrize(
    ("tools", "choice", "expected"),
    [
        ([get_weather], "any", {"type": "function", "function": {"name": "get_weather"}}),
        ([get_weather, add], "add", {"type": "function", "function": {"name": "add"}}),
        ([get_weather, add], "auto", "auto"),
        ([get_weather, add], "none", "none"),
        ([get_weather, add], "required", "required"),
        ([get_weather, add], True, "required"),
    ],
)
def test_tool_choice_in_dashscope_terms(
    emu: Emu, tools: list[Any], choice: Any, expected: object
) -> None:
    chat(emu).bind_tools(tools, tool_choice=choice).invoke("What is 2 + 5?")
    parameters = sent(emu)["parameters"]
    assert parameters["tool_choice"] == expected
    assert [t["function"]["name"] for t in parameters["tools"]] == [t.name for t in tools]


def test_tool_choice_naming_no_tool_is_refused(emu: Emu) -> None:
    with pytest.raises(ValueError, match="names none of the tools"):
        chat(emu).bind_tools([add], tool_choice="multiply")


def test_bind_tools_takes_functions_pydantic_models_and_dicts(emu: Emu) -> None:
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    class Search(BaseModel):
        """Search the web."""

        query: str

    schema = {"name": "lookup", "description": "Look up", "parameters": {"type": "object"}}
    chat(emu).bind_tools([multiply, Search, schema]).invoke("hi")
    names = [t["function"]["name"] for t in sent(emu)["parameters"]["tools"]]
    assert names == ["multiply", "Search", "lookup"]


class Joke(BaseModel):
    """Joke to tell user."""

    setup: str = Field(description="question to set up a joke")
    punchline: str = Field(description="answer to resolve the joke")


@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
def test_structured_output_methods(emu: Emu, method: Any) -> None:
    prompt = "Tell me a joke about cats as JSON with 'setup' and 'punchline' keys."
    joke = chat(emu).with_structured_output(Joke, method=method).invoke(prompt)
    assert isinstance(joke, Joke)
    assert "cats" in joke.setup
    parameters = sent(emu)["parameters"]
    if method == "function_calling":
        assert parameters["tool_choice"] == {"type": "function", "function": {"name": "Joke"}}
    elif method == "json_schema":
        spec = parameters["response_format"]["json_schema"]
        assert spec["name"] == "Joke"
        assert set(spec["schema"]["properties"]) == {"setup", "punchline"}
    else:
        assert parameters["response_format"] == {"type": "json_object"}


async def test_structured_output_include_raw(emu: Emu) -> None:
    model = chat(emu).with_structured_output(Joke, include_raw=True)
    result = await model.ainvoke("Tell me a joke about dogs.")
    assert isinstance(result, dict)
    assert isinstance(result["raw"], AIMessage) and result["parsing_error"] is None
    assert isinstance(result["parsed"], Joke)


def test_structured_output_rejects_unknown_methods(emu: Emu) -> None:
    with pytest.raises(ValueError, match="method must be"):
        chat(emu).with_structured_output(Joke, method="xml")  # type: ignore[arg-type]


# -- an agent loop (no LangGraph) ---------------------------------------------------

TOOLS: dict[str, Callable[..., Any]] = {"get_weather": get_weather, "add": add}


def run_calls(answer: AIMessage) -> list[ToolMessage]:
    return [TOOLS[call["name"]].invoke(call) for call in answer.tool_calls]


def test_agent_loop_streams_sync(emu: Emu) -> None:
    model = chat(emu).bind_tools([get_weather, add])
    history: list[BaseMessage] = [HumanMessage("What is the weather in San Francisco, CA?")]
    for _ in range(5):
        answer = add_up(list(model.stream(history)))
        history.append(answer)
        if not answer.tool_calls:
            break
        history.extend(run_calls(answer))
    assert answer.text == "The tool returned: It is sunny in San Francisco, CA."
    assert len(emu.requests) == 2
    tool_message = sent(emu)["input"]["messages"][-1]
    assert tool_message["role"] == "tool"
    assert tool_message["tool_call_id"] == history[1].tool_calls[0]["id"]  # type: ignore[attr-defined]


async def test_agent_loop_streams_async(emu: Emu) -> None:
    model = chat(emu).bind_tools([get_weather, add])
    history: list[BaseMessage] = [HumanMessage("Use the add tool: what is 19 + 23?")]
    for _ in range(5):
        answer = add_up([chunk async for chunk in model.astream(history)])
        history.append(answer)
        if not answer.tool_calls:
            break
        history.extend(run_calls(answer))
    assert [call["args"] for call in history[1].tool_calls] == [{"a": 19, "b": 23}]  # type: ignore[attr-defined]
    assert answer.text == "The tool returned: 42"
    assert len(emu.requests) == 2


# -- the client behind the model ----------------------------------------------------


def test_one_pooled_client_per_model_closed_when_the_model_goes(emu: Emu) -> None:
    model = chat(emu)
    for _ in range(3):
        model.invoke("hi")
    assert emu.connections == 1
    assert emu.open_connections == 1
    del model
    gc.collect()
    assert emu.wait_for_open_connections(0, timeout=5)


def test_json_mode_output_is_json(emu: Emu) -> None:
    answer = (
        chat(emu)
        .bind(response_format={"type": "json_object"})
        .invoke("Reply in JSON with a 'greeting' key.")
    )
    assert list(json.loads(answer.text)) == ["greeting"]


def test_a_copy_has_its_own_client_and_outlives_the_original(emu: Emu) -> None:
    original = chat(emu, model="qwen-plus")
    original.invoke("hi")
    copy = original.model_copy(update={"model": "qwen-max"})
    assert copy.client is not original.client
    del original
    gc.collect()
    assert copy.invoke("hi").response_metadata["model_name"] == "qwen-max"


async def test_async_streaming_runs_on_the_callers_loop_without_threads(emu: Emu) -> None:
    emu.enqueue(Reply(text=[f"{i} " for i in range(200)]))
    model = chat(emu)
    before = set(threading.enumerate())
    seen: set[threading.Thread] = set()
    count = 0
    async for _ in model.astream("count"):
        seen |= set(threading.enumerate()) - before
        count += 1
    assert count >= 200
    assert seen == set()  # no executor hop, no loop thread: the caller's loop does it all


def test_sync_streaming_uses_one_loop_thread_for_every_chunk(emu: Emu) -> None:
    emu.enqueue(Reply(text=[f"{i} " for i in range(200)]), Reply(text=["again"]))
    model = chat(emu)
    before = set(threading.enumerate())
    seen: set[threading.Thread] = set()
    for _ in model.stream("count"):
        seen |= set(threading.enumerate()) - before
    for _ in model.stream("again"):
        seen |= set(threading.enumerate()) - before
    assert len(seen) == 1  # the client's event-loop thread, shared by all its sync calls


def test_cached_input_tokens_become_cache_read(emu: Emu) -> None:
    frame = {
        "output": {
            "choices": [
                {"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
            ]
        },
        "usage": {
            "input_tokens": 10,
            "output_tokens": 1,
            "total_tokens": 11,
            "prompt_tokens_details": {"cached_tokens": 4},
        },
        "request_id": "rid-c",
    }
    body = f"id:1\nevent:result\n:HTTP_STATUS/200\ndata:{json.dumps(frame)}\n\n".encode()
    emu.enqueue(Reply(raw_body=body, content_type="text/event-stream;charset=UTF-8"))
    answer = chat(emu).invoke("hi")
    assert answer.usage_metadata == {
        "input_tokens": 10,
        "output_tokens": 1,
        "total_tokens": 11,
        "input_token_details": {"cache_read": 4},
    }


@pytest.mark.parametrize(
    "fields", [{"timeout": -1}, {"timeout": float("nan")}, {"max_retries": -1}]
)
def test_bad_settings_are_refused_at_construction(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # pydantic's ValidationError is a ValueError
        ChatTongyi(api_key="k", **fields)


def test_a_bad_region_is_a_value_error_at_the_first_call() -> None:
    model = ChatTongyi(api_key="k", api_region="mars")
    with pytest.raises(ValueError, match="unknown api_region 'mars'"):
        model.invoke("hi")
