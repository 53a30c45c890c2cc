"""tool(func) and one round of tool calls, against the emulator, from async and sync code."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
from typing import Annotated, Any, Literal

import pytest

import aiotongyi
from aiotongyi import (
    ModelOutput,
    TongyiLLMClient,
    ToolCall,
    run_tool_calls,
    sync_run_tool_calls,
    tool,
)
from aiotongyi.testing import DashScopeEmulator, Reply, ToolCallScript


def get_weather(city: str, unit: Literal["c", "f"] = "c") -> dict[str, object]:
    """Current weather in a city.

    :param city: the city's name,
        in English.
    :param unit: degrees Celsius or Fahrenheit.
    """
    return {"city": city, "temperature": 24 if unit == "c" else 75, "unit": unit}


async def local_time(zone: Annotated[str, "an IANA time zone"], hour24: bool = True) -> str:
    """The local time somewhere.

    Args:
        zone: ignored, the description comes from Annotated.
        hour24: a 24-hour clock
            rather than AM/PM.
    """
    await asyncio.sleep(0.01)
    return f"12:00 in {zone}"


def calls(*scripts: tuple[str, str]) -> ModelOutput:
    return ModelOutput(
        tool_calls=tuple(
            ToolCall(index=i, id=f"call_{i}", name=name, arguments=arguments)
            for i, (name, arguments) in enumerate(scripts)
        ),
        finish_reason="tool_calls",
    )


def test_definition_from_signature_and_docstring() -> None:
    assert dict(tool(get_weather)) == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "the city's name, in English."},
                    "unit": {
                        "enum": ["c", "f"],
                        "description": "degrees Celsius or Fahrenheit.",
                    },
                },
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
    parameters = tool(local_time)["function"]["parameters"]
    assert parameters["properties"] == {
        "zone": {"type": "string", "description": "an IANA time zone"},
        "hour24": {"type": "boolean", "description": "a 24-hour clock rather than AM/PM."},
    }
    assert tool(local_time)["function"]["description"] == "The local time somewhere."


def test_decorator_forms_keep_the_function_callable() -> None:
    @tool
    def add(a: int, b: int) -> int:
        return a + b

    @tool(name="mul", description="Multiply.")
    def multiply(a: int, b: int) -> int:
        return a * b

    assert add(2, 3) == 5
    assert multiply(2, 3) == 6
    assert multiply["function"]["name"] == "mul"
    assert multiply["function"]["description"] == "Multiply."
    assert isinstance(add, aiotongyi.Tool)
    assert json.loads(json.dumps([add, multiply]))[1]["function"]["name"] == "mul"


def test_functions_it_cannot_describe_are_refused() -> None:
    def positional(a: int, /) -> None: ...

    def star(*args: int) -> None: ...

    def odd(a: complex) -> None: ...

    for func in (positional, star, odd):
        with pytest.raises(ValueError, match=func.__name__):
            tool(func)
    with pytest.raises(ValueError, match="lambda"):
        tool(lambda x: x)


def test_pydantic_model_tool() -> None:
    pydantic = pytest.importorskip("pydantic")

    class SearchQuery(pydantic.BaseModel):
        """Search the web."""

        query: str
        limit: int = 5

    definition = tool(SearchQuery)
    assert definition["function"]["name"] == "search_query"
    assert definition["function"]["description"] == "Search the web."
    assert definition["function"]["parameters"]["required"] == ["query"]
    call = ToolCall(index=0, id="c", name="search_query", arguments='{"query": "qwen"}')
    assert definition.parse(call) == SearchQuery(query="qwen", limit=5)
    with pytest.raises(ValueError, match="no function"):
        sync_run_tool_calls(calls(("search_query", "{}")), [definition])


async def test_a_round_against_the_emulator(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(
        Reply(
            tool_calls=[
                ToolCallScript("get_weather", ['{"city": ', '"Hangzhou"}'], id="call_a"),
                ToolCallScript("local_time", '{"zone": "Asia/Shanghai"}', id="call_b"),
            ],
            finish_reason="tool_calls",
        ),
        Reply(text=["Sunny, 24°C, at noon."]),
    )
    tools = [tool(get_weather), tool(local_time)]
    messages: list[dict[str, object]] = [{"role": "user", "content": "Weather and time?"}]
    out = await client.generate(messages, tools=tools)
    while out.finish_reason == "tool_calls":
        messages.append(out.to_message())
        messages += await run_tool_calls(out, tools)
        out = await client.generate(messages, tools=tools)
    assert out.text == "Sunny, 24°C, at noon."
    second = dashscope_emulator.requests[1].json
    assert second["parameters"]["tools"] == json.loads(json.dumps(tools))
    assert second["input"]["messages"][2:] == [
        {
            "role": "tool",
            "content": '{"city": "Hangzhou", "temperature": 24, "unit": "c"}',
            "tool_call_id": "call_a",
            "name": "get_weather",
        },
        {
            "role": "tool",
            "content": "12:00 in Asia/Shanghai",
            "tool_call_id": "call_b",
            "name": "local_time",
        },
    ]


def test_a_round_in_sync_code(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(
        Reply(
            tool_calls=[
                ToolCallScript("get_weather", '{"city": "Beijing", "unit": "f"}'),
                ToolCallScript("local_time", '{"zone": "UTC"}'),
            ],
            finish_reason="tool_calls",
        ),
        Reply(text=["done"]),
    )
    messages: list[dict[str, object]] = [{"role": "user", "content": "hi"}]
    out = sync_client.sync_generate(messages, tools=[tool(get_weather), tool(local_time)])
    results = sync_run_tool_calls(out, [get_weather, local_time])  # plain functions work too
    assert [json.loads(r["content"])["temperature"] for r in results[:1]] == [75]
    assert results[1]["content"] == "12:00 in UTC"
    messages += [out.to_message(), *results]
    assert sync_client.sync_generate(messages).text == "done"


async def test_async_tools_run_concurrently() -> None:
    async def slow(n: int) -> int:
        await asyncio.sleep(0.3)
        return n

    started = time.perf_counter()
    results = await run_tool_calls(calls(*[("slow", f'{{"n": {i}}}') for i in range(5)]), [slow])
    elapsed = time.perf_counter() - started
    assert [r["content"] for r in results] == ["0", "1", "2", "3", "4"]
    assert elapsed < 0.3 * 5 / 2  # together, not one after another


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ('{"city": ', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ("{}", "city: missing"),
        ('{"city": "X", "country": "Y"}', "country: unexpected argument"),
        ('{"city": 42}', "city: expected a string, got the number 42"),
        ('{"city": "X", "unit": "k"}', "unit: expected one of 'c', 'f', got 'k'"),
    ],
)
def test_arguments_that_do_not_fit_become_a_tool_message(arguments: str, problem: str) -> None:
    (message,) = sync_run_tool_calls(calls(("get_weather", arguments)), [get_weather])
    assert message["role"] == "tool"
    assert message["tool_call_id"] == "call_0"
    content = message["content"]
    assert isinstance(content, str)
    assert content.startswith("error: ")
    assert problem in content


async def test_unknown_tools_get_a_message_listing_the_known_ones() -> None:
    (message,) = await run_tool_calls(calls(("nope", "{}")), {"weather": get_weather})
    assert message["content"] == "error: there is no tool named 'nope' (tools: weather)"


@dataclasses.dataclass
class Point:
    x: int
    y: int


@dataclasses.dataclass
class Item:
    sku: str
    qty: int = 1


def test_results_are_sent_as_json() -> None:
    def where() -> Point:
        return Point(1, 2)

    def nothing() -> None:
        return None

    results = sync_run_tool_calls(calls(("where", ""), ("nothing", "{}")), [where, nothing])
    assert [r["content"] for r in results] == ['{"x": 1, "y": 2}', "null"]


def test_a_tool_that_raises_ends_the_round() -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        sync_run_tool_calls(calls(("broken", "{}")), [broken])


async def test_sync_round_with_async_tools_works_inside_a_running_loop() -> None:
    caller = threading.get_ident()
    ran_on: list[int] = []

    async def where_am_i() -> str:
        ran_on.append(threading.get_ident())
        return "here"

    (message,) = sync_run_tool_calls(calls(("where_am_i", "{}")), [where_am_i])
    assert message["content"] == "here"
    assert ran_on != [caller]


def test_nested_types_in_arguments() -> None:
    def order(items: list[Item], note: str | None = None) -> int:
        return sum(item.qty for item in items)

    definition = tool(order)
    items_schema: Any = definition["function"]["parameters"]["properties"]["items"]
    assert items_schema["items"]["required"] == ["sku"]
    out = calls(("order", '{"items": [{"sku": "a"}, {"sku": "b", "qty": 3}]}'))
    assert sync_run_tool_calls(out, [definition])[0]["content"] == "4"


async def test_a_failing_tool_cancels_the_rest_of_the_round() -> None:
    finished: list[str] = []

    async def slow() -> str:
        await asyncio.sleep(5)
        finished.append("slow")
        return "late"

    async def failing() -> str:
        await asyncio.sleep(0.01)
        raise LookupError("no such row")

    def sync_failing() -> str:
        raise KeyError("sync")

    started = time.perf_counter()
    with pytest.raises(LookupError):
        await run_tool_calls(calls(("slow", "{}"), ("failing", "{}")), [slow, failing])
    assert time.perf_counter() - started < 2
    await asyncio.sleep(0)
    assert finished == []
    # A sync tool failing after an async one was called leaves no coroutine un-awaited
    # (that would be a RuntimeWarning, an error under this suite's filterwarnings).
    with pytest.raises(KeyError):
        await run_tool_calls(calls(("slow", "{}"), ("sync_failing", "{}")), [slow, sync_failing])
