"""The emulator's answers when nothing is scripted: they follow the request.

Checked through the public client where it sees the effect (text, thinking,
finish reason, usage, tool calls) and from the wire where it does not
(cumulative frames); the token rule and schema values also as properties.
"""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiotongyi import TongyiLLMClient
from aiotongyi.testing import DashScopeEmulator, Reply, count_tokens

Emu = DashScopeEmulator
TEXT_PATH = "/services/aigc/text-generation/generation"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather at a location.",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["location"],
        },
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two integers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


@pytest.fixture
def client(dashscope_emulator: Emu) -> Any:
    with TongyiLLMClient(
        base_url=dashscope_emulator.base_url, api_key=dashscope_emulator.api_key
    ) as client:
        yield client


def tokens(text: str) -> int:
    """The documented rule: ASCII word runs, or any other non-space character."""
    count, in_word = 0, False
    for char in text:
        word_char = char.isascii() and (char.isalnum() or char == "_")
        if word_char and in_word:
            continue
        in_word = word_char
        if not char.isspace():
            count += 1
    return count


# -- text ---------------------------------------------------------------------------


def test_plain_prompt_echoes_and_arithmetic_is_answered(client: TongyiLLMClient) -> None:
    assert client.sync_generate("ping").text == "Hello! You said: ping"
    assert client.sync_generate("What is 3^3?").text == "3^3 = 27."
    assert client.sync_generate("What is 1 + 2").text == "1 + 2 = 3."
    assert client.sync_generate("Compute (2 + 3) * 4 please").text == "(2 + 3) * 4 = 20."


def test_usage_counts_the_text_by_the_token_rule(client: TongyiLLMClient) -> None:
    output = client.sync_generate("Say something about 春天, please.")
    assert output.usage is not None
    assert output.usage.completion_tokens == tokens(output.text)
    assert output.usage.prompt_tokens == tokens("Say something about 春天, please.")
    assert output.usage.total_tokens == output.usage.prompt_tokens + output.usage.completion_tokens


@pytest.mark.parametrize("limit", [1, 2, 5])
def test_max_tokens_cuts_the_answer(client: TongyiLLMClient, limit: int) -> None:
    output = client.sync_generate("tell me everything you know", max_tokens=limit)
    assert output.finish_reason == "length"
    assert tokens(output.text) == limit
    assert "Hello! You said: tell me everything you know".startswith(output.text)
    assert output.usage is not None and output.usage.completion_tokens == limit


def test_max_tokens_above_the_answer_changes_nothing(client: TongyiLLMClient) -> None:
    output = client.sync_generate("hi", max_tokens=100)
    assert (output.text, output.finish_reason) == ("Hello! You said: hi", "stop")


def test_stop_ends_before_the_sequence(client: TongyiLLMClient) -> None:
    output = client.sync_generate("hi there", stop=["said", "Hello"])
    assert (output.text, output.finish_reason) == ("", "stop")
    output = client.sync_generate("hi there", stop="said")
    assert output.text == "Hello! You "


def test_thinking_comes_first_and_is_counted(client: TongyiLLMClient) -> None:
    outputs = list(client.sync_generate_stream("What is 6 * 7?", enable_thinking=True))
    final = outputs[-1]
    assert final.thinking.startswith('The user wrote "What is 6 * 7?"')
    assert final.text == "6 * 7 = 42."
    first_text = next(i for i, o in enumerate(outputs) if o.delta)
    assert all(o.thinking_delta == "" for o in outputs[first_text:])
    assert final.usage is not None
    assert final.usage.reasoning_tokens == tokens(final.thinking)
    assert final.usage.completion_tokens == tokens(final.thinking) + tokens(final.text)


def test_thinking_budget_cuts_the_reasoning(client: TongyiLLMClient) -> None:
    final = client.sync_generate("hi", enable_thinking=True, thinking_budget=3)
    assert tokens(final.thinking) == 3
    assert final.text == "Hello! You said: hi"


def test_seed_makes_text_reproducible_and_different(client: TongyiLLMClient) -> None:
    first = client.sync_generate("hi", seed=1).text
    assert client.sync_generate("hi", seed=1).text == first
    assert client.sync_generate("hi", seed=2).text != first
    assert first.startswith("Hello! You said: hi (")


def test_n_gives_n_choices(client: TongyiLLMClient) -> None:
    outputs = list(client.sync_generate_stream("hi", n=3))
    finals = {o.index: o for o in outputs if o.finish_reason is not None}
    assert sorted(finals) == [0, 1, 2]
    assert {o.text for o in finals.values()} == {"Hello! You said: hi"}


async def test_incremental_output_false_sends_cumulative_frames(dashscope_emulator: Emu) -> None:
    body = {
        "model": "qwen-plus",
        "input": {"messages": [{"role": "user", "content": "one two three four five"}]},
        "parameters": {"incremental_output": False, "result_format": "message"},
    }
    headers = {"Authorization": "Bearer k", "X-DashScope-SSE": "enable"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(dashscope_emulator.base_url + TEXT_PATH, json=body, headers=headers) as r,
    ):
        raw = (await r.read()).decode()
    contents = [
        json.loads(line[5:])["output"]["choices"][0]["message"]["content"]
        for line in raw.splitlines()
        if line.startswith("data:")
    ]
    assert len(contents) >= 3
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(contents))
    assert contents[-1] == "Hello! You said: one two three four five"


def test_scripted_replies_take_precedence(dashscope_emulator: Emu, client: TongyiLLMClient) -> None:
    dashscope_emulator.enqueue(Reply(text=["scripted"]))
    output = client.sync_generate("hi", max_tokens=1, tools=[ADD], enable_thinking=True)
    assert (output.text, output.thinking, output.tool_calls) == ("scripted", "", ())
    assert client.sync_generate("hi").text == "Hello! You said: hi"


# -- tools --------------------------------------------------------------------------


def test_a_prompt_about_a_tool_gets_a_call_that_fits_its_schema(client: TongyiLLMClient) -> None:
    output = client.sync_generate(
        "What is the weather in San Francisco, CA for the next 3 days, in fahrenheit?",
        tools=[ADD, WEATHER],
    )
    assert output.finish_reason == "tool_calls"
    [call] = output.tool_calls
    assert call.name == "get_weather"
    assert call.id.startswith("call_")
    assert json.loads(call.arguments) == {
        "location": "San Francisco, CA",
        "unit": "fahrenheit",
        "days": 3,
    }


def test_numbers_and_quoted_names_fill_the_arguments(client: TongyiLLMClient) -> None:
    [call] = client.sync_generate("Use the add tool on 19 and 23", tools=[ADD]).tool_calls
    assert json.loads(call.arguments) == {"a": 19, "b": 23}
    customer = {
        "type": "function",
        "function": {
            "name": "create_customer",
            "parameters": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "notes": {"type": "string"}},
            },
        },
    }
    [call] = client.sync_generate(
        "Create a customer named '你好啊集团' (Hello Group)", tools=[customer]
    ).tool_calls
    assert json.loads(call.arguments) == {"name": "你好啊集团", "notes": "Hello Group"}


def test_unrelated_prompt_with_auto_choice_gets_text(client: TongyiLLMClient) -> None:
    output = client.sync_generate("Hello!", tools=[ADD, WEATHER])
    assert (output.tool_calls, output.text) == ((), "Hello! You said: Hello!")


def test_tool_choice_forces_or_forbids_a_call(client: TongyiLLMClient) -> None:
    forced = {"type": "function", "function": {"name": "add"}}
    [call] = client.sync_generate("Hello!", tools=[WEATHER, ADD], tool_choice=forced).tool_calls
    assert call.name == "add"
    assert json.loads(call.arguments) == {"a": 0, "b": 0}
    output = client.sync_generate("weather in Paris?", tools=[WEATHER], tool_choice="none")
    assert output.tool_calls == ()
    [call] = client.sync_generate(
        "Hello!", tools=[WEATHER, ADD], extra_body={"tool_choice": "required"}
    ).tool_calls
    assert call.name == "get_weather"


def test_tool_results_get_a_final_answer_quoting_them(client: TongyiLLMClient) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
    history = [
        {"role": "user", "content": "Use the add tool on 1 and 2"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "3", "tool_call_id": "c1"},
    ]
    output = client.sync_generate(history, tools=[ADD])
    assert (output.text, output.finish_reason, output.tool_calls) == (
        "The tool returned: 3",
        "stop",
        (),
    )


# -- JSON ---------------------------------------------------------------------------


def test_json_object_uses_the_keys_the_prompt_names(client: TongyiLLMClient) -> None:
    answer = client.sync_generate(
        "Tell me a joke about cats. Return JSON with 'setup' and 'punchline' keys.",
        response_format={"type": "json_object"},
    ).parse_json()
    assert answer == {"setup": "A setup about cats", "punchline": "A punchline about cats"}
    assert client.sync_generate("hi in json", response_format={"type": "json_object"}).parse_json()


def test_json_schema_answers_fit_pydantic_models(client: TongyiLLMClient) -> None:
    pydantic = pytest.importorskip("pydantic")
    from enum import Enum
    from typing import Literal, Optional

    class Color(str, Enum):
        red = "red"
        blue = "blue"

    class Item(pydantic.BaseModel):
        name: str = pydantic.Field(min_length=3, max_length=40)
        price: float = pydantic.Field(gt=10, le=20)
        tags: list[str] = pydantic.Field(min_length=2)

    class Order(pydantic.BaseModel):
        id: int = pydantic.Field(ge=100, lt=1000)
        color: Color
        kind: Literal["retail"]
        items: list[Item]
        note: Optional[str] = None  # noqa: UP045 - the anyOf-with-null shape
        urgent: bool
        meta: dict[str, int]

    schema = {"name": "Order", "schema": Order.model_json_schema()}
    text = client.sync_generate(
        "Make an order of 3 blue things in json",
        response_format={"type": "json_schema", "json_schema": schema},
    ).text
    order = Order.model_validate_json(text)
    assert order.color is Color.blue
    assert (
        text
        == client.sync_generate(
            "Make an order of 3 blue things in json",
            response_format={"type": "json_schema", "json_schema": schema},
        ).text
    )


# -- the token rule, as properties --------------------------------------------------


@given(st.text())
def test_token_pieces_hold_one_token_each(text: str) -> None:
    assert count_tokens(text) == tokens(text)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(min_size=1, max_size=200), st.integers(min_value=1, max_value=30))
def test_max_tokens_is_a_bound_for_any_prompt(
    client: TongyiLLMClient, prompt: str, limit: int
) -> None:
    whole = client.sync_generate(prompt, seed=limit)
    cut = client.sync_generate(prompt, seed=limit, max_tokens=limit)
    assert whole.text.startswith(cut.text)
    assert count_tokens(cut.text) == min(limit, count_tokens(whole.text))
    assert (cut.finish_reason == "length") == (count_tokens(whole.text) > limit)
    assert cut.usage is not None and cut.usage.completion_tokens == count_tokens(cut.text)


# -- the command line ---------------------------------------------------------------


def serve(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiotongyi.testing", "serve", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_serve_on_a_busy_port_is_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = serve("--port", str(port))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        f"python -m aiotongyi.testing: cannot listen on 127.0.0.1:{port}"
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_serve_on_an_invalid_port_is_one_line(port: str) -> None:
    result = serve("--port", port)
    assert result.returncode == 1
    assert result.stderr == (
        f"python -m aiotongyi.testing: --port must be an integer from 0 to 65535, not {port!r}\n"
    )


def test_serve_with_a_bad_script_is_one_line(tmp_path: Path) -> None:
    script = tmp_path / "replies.jsonl"
    script.write_text('{"text": "ok"}\n{"txet": "typo"}\n', encoding="utf-8")
    result = serve("--script", str(script))
    assert result.returncode == 1
    assert result.stderr == (
        f"python -m aiotongyi.testing: cannot load --script {script}: "
        "reply 1: unknown field(s): txet\n"
    )


def test_serve_answers_with_the_script_first(tmp_path: Path) -> None:
    script = tmp_path / "replies.json"
    script.write_text(
        json.dumps(
            [
                {"text": ["Hi", " there"], "usage": [3, 2]},
                {"tool_calls": [{"name": "add", "arguments": '{"a": 1}', "id": "c9"}]},
                {"http_error": {"status": 400, "code": "InvalidParameter"}},
            ]
        ),
        encoding="utf-8",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "aiotongyi.testing", "serve", "--script", str(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.rstrip().endswith("(api key: any, 3 scripted replies)")
        with TongyiLLMClient(base_url=line.split()[4], api_key="k", max_retries=0) as client:
            first = client.sync_generate("a")
            assert (first.text, first.usage and first.usage.completion_tokens) == ("Hi there", 2)
            [call] = client.sync_generate("b").tool_calls
            assert (call.id, call.name, call.arguments) == ("c9", "add", '{"a": 1}')
            with pytest.raises(Exception, match="InvalidParameter"):
                client.sync_generate("c")
            assert client.sync_generate("d").text == "Hello! You said: d"
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
SCHEMA_WORDS = st.sampled_from(
    ["type", "properties", "items", "enum", "anyOf", "$ref", "minItems", "minimum", "required"]
)
SCHEMAS = st.recursive(
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["object", "array", "string", "integer", "number", "null"]),
            "minimum": st.integers(-5, 5),
            "exclusiveMaximum": st.integers(-5, 5),
            "minItems": st.integers(0, 10**9),
            "minLength": st.integers(0, 10**9),
            "enum": st.lists(JSON_VALUES, max_size=3),
            "$ref": st.sampled_from(["#", "#/$defs/a", "#/nowhere"]),
        },
    ),
    lambda inner: (
        st.dictionaries(SCHEMA_WORDS, inner, max_size=3)
        | st.fixed_dictionaries(
            {"properties": st.dictionaries(st.text(max_size=4), inner, max_size=3)}
        )
    ),
    max_leaves=10,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    prompt=st.text(max_size=60),
    schema=SCHEMAS | JSON_VALUES,
    extra=st.dictionaries(
        st.sampled_from(["max_tokens", "stop", "seed", "n", "tool_choice", "enable_thinking"]),
        JSON_VALUES,
        max_size=3,
    ),
)
def test_any_request_gets_a_well_formed_answer(
    client: TongyiLLMClient, prompt: str, schema: object, extra: dict[str, object]
) -> None:
    """Whatever the parameters hold, the emulator answers 200 with frames that parse."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    response_format = {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}
    for parameters in (
        {"tools": tools, "tool_choice": "required"},
        {"response_format": response_format},
    ):
        output = client.sync_generate(prompt or "hi", extra_body={**parameters, **extra})
        assert output.finish_reason in ("stop", "length", "tool_calls")
        for call in output.tool_calls:
            assert isinstance(json.loads(call.arguments), dict)
        if "response_format" in parameters and output.finish_reason == "stop" and not extra:
            json.loads(output.text)
