"""Every script in examples/ runs against the emulator and prints what it promises.

Each example runs as ``python examples/NAME.py`` in a subprocess without
``DASHSCOPE_API_KEY``, so it starts the bundled emulator itself (the
fallback path a new user sees). A few also run against this test's emulator
(the key and base URL given through the environment, as with the real
service) so the requests they send can be checked.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from aiotongyi.testing import DashScopeEmulator, Reply, ToolCallScript

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FALLBACK_NOTICE = (
    "aiotongyi: DASHSCOPE_API_KEY is not set; using the bundled emulator at http://127.0.0.1:"
)

# What each script must print on stdout when run against the emulator's fallback.
EXPECTED: dict[str, list[str]] = {
    "async_chat.py": ["Hello! You said: 写一首关于春天的短诗", "[finish_reason=stop usage=Usage("],
    "sync_chat.py": [
        "Hello! You said: 用一句话介绍杭州\n",
        "final: 'Hello! You said: Say hello in one word.' (stop)",
    ],
    "multi_turn.py": [
        "user: What is my name, and where do I live?\n"
        "assistant: Hello! You said: What is my name, and where do I live?\n",
        "[7 messages,",
    ],
    "tool_calling.py": [
        'tool call: get_weather({"city": "Hangzhou"}) -> '
        "{'city': 'Hangzhou', 'condition': 'sunny', 'temperature_c': 24}",
        "answer: It is sunny and 24 °C in Hangzhou.",
    ],
    "thinking.py": [
        "--- thinking ---\n17 × 24 = 17 × 20 + 17 × 4 = 340 + 68 = 408.\n--- answer ---\n"
        "17 × 24 = 408\n",
        "for reasoning]",
    ],
    "vision.py": ["A small red square crossed by a white diagonal line.\n"],
    "structured_output.py": [
        "Hangzhou (Zhejiang): 12.5 million people\n"
        "known for: West Lake, Longjing tea; climate: subtropical\n",
        "did not fit: province: missing\n",
        "did not fit: population_millions: expected a number, got the string 'many'\n",
        'raw text: {"name": "Hangzhou", "population_millions": "many"}\n',
    ],
    "tool_functions.py": [
        'tool get_weather: {"city": "Hangzhou", "condition": "sunny", "temperature": 24, '
        '"unit": "celsius"}\n'
        "tool local_time: 14:05 in Hangzhou\n"
        "answer: It is 14:05 in Hangzhou, sunny and 24 °C.\n"
    ],
    "semantic_search.py": [
        "question: Which green tea grows near West Lake?\n",
        "reranked:\n  0.390  Longjing green tea is grown in the hills around West Lake",
        "embedding tokens,",
    ],
    "concurrent_requests.py": [
        "Beijing: Hello! You said: In one sentence: why visit Beijing?\n",
        "Changsha: Hello! You said: In one sentence: why visit Changsha?\n",
        "[20 prompts, 8 at a time,",
    ],
}
# Scripts checked by their own tests below, or elsewhere.
SPECIAL = {
    "aiohttp_sse_relay.py": "a server: see the relay tests below",
    "dbgpt_provider.py": "needs DB-GPT: run by .ci/dbgpt.sh",
    "langchain_agent.py": "needs langchain-core: its own test below (and .ci/langchain.sh)",
}


def example_env(**extra: str) -> dict[str, str]:
    """The caller's environment without a DashScope key or endpoint, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    env["PYTHONIOENCODING"] = "utf-8"
    env.update(extra)
    return env


def emulator_env(emulator: DashScopeEmulator) -> dict[str, str]:
    """Point a script at ``emulator`` the way a user points it at DashScope."""
    return example_env(
        DASHSCOPE_API_KEY=emulator.api_key, DASHSCOPE_HTTP_BASE_URL=emulator.base_url
    )


def run_example(
    name: str, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "error", str(EXAMPLES / name), *args],
        env=dict(env) if env is not None else example_env(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
    )


@pytest.fixture(scope="module")
def fallback_runs() -> dict[str, subprocess.CompletedProcess[str]]:
    """All simple examples, run at once (each is mostly interpreter start-up)."""
    with ThreadPoolExecutor(max_workers=len(EXPECTED)) as pool:
        futures = {name: pool.submit(run_example, name) for name in EXPECTED}
        return {name: future.result() for name, future in futures.items()}


def test_every_example_is_checked() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert scripts == set(EXPECTED) | set(SPECIAL)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_against_the_emulator(
    name: str, fallback_runs: dict[str, subprocess.CompletedProcess[str]]
) -> None:
    result = fallback_runs[name]
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(FALLBACK_NOTICE), result.stderr
    assert "Traceback" not in result.stderr
    for expected in EXPECTED[name]:
        assert expected in result.stdout


def test_concurrent_example_keeps_to_its_limit(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(*(Reply(text=["ok ", "then"], frame_delay=0.02) for _ in range(20)))
    result = run_example(
        "concurrent_requests.py", "--limit", "3", env=emulator_env(dashscope_emulator)
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok then\n") == 20
    assert "20/20 (0 failed)" in result.stderr
    assert len(dashscope_emulator.requests) == 20
    assert 1 <= dashscope_emulator.connections <= 3  # the semaphore bounds the pool


def test_tool_calling_example_sends_the_round_trip(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(
        Reply(tool_calls=[ToolCallScript("get_weather", ['{"city":', ' "Xi\'an"}'], id="call_7")]),
        Reply(text=["Sunny in Xi'an."]),
    )
    result = run_example("tool_calling.py", env=emulator_env(dashscope_emulator))
    assert result.returncode == 0, result.stderr
    assert "answer: Sunny in Xi'an." in result.stdout
    first, second = (request.json for request in dashscope_emulator.requests)
    assert isinstance(first, dict) and isinstance(second, dict)
    assert second["parameters"]["tools"] == first["parameters"]["tools"]
    user, assistant, tool = second["input"]["messages"]
    assert user["role"] == "user"
    assert assistant["tool_calls"] == [
        {
            "index": 0,
            "id": "call_7",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Xi\'an"}'},
        }
    ]
    assert tool["role"] == "tool" and tool["tool_call_id"] == "call_7"
    assert json.loads(tool["content"])["city"] == "Xi'an"


@pytest.mark.skipif(
    importlib.util.find_spec("langchain_core") is None
    and not os.environ.get("AIOTONGYI_REQUIRE_LANGCHAIN"),
    reason="needs langchain-core (pip install 'aiotongyi[langchain]'; CI: .ci/langchain.sh)",
)
def test_langchain_agent_example_runs_its_loops() -> None:
    result = run_example("langchain_agent.py")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(FALLBACK_NOTICE), result.stderr
    assert result.stdout == (
        'tool call: get_weather({"city": "Hangzhou"})\n'
        'answer: The tool returned: {"city": "Hangzhou", "condition": "sunny", '
        '"temperature_c": 24}\n'
        'tool call: add({"a": 19, "b": 23})\n'
        "answer: The tool returned: 42\n"
        "structured: CityFact(city='Suzhou', fact='A fact about Suzhou')\n"
    )


# -- the SSE relay -------------------------------------------------------------------


@asynccontextmanager
async def relay_process(
    *args: str, env: Mapping[str, str]
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """Start the relay on a free port; yield it and its URL; kill it if it outlives the test."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-W", "error", str(EXAMPLES / "aiohttp_sse_relay.py"), "--port", "0", *args,
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        match = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert match, line
        yield process, match.group(0)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def read_events(
    response: aiohttp.ClientResponse, limit: int | None = None
) -> list[tuple[str, object]]:
    """(event, parsed data) pairs from an SSE body, up to ``limit`` events."""
    events: list[tuple[str, object]] = []
    event = "message"
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            events.append((event, json.loads(line[len("data: ") :])))
            event = "message"
            if limit is not None and len(events) >= limit:
                break
    return events


async def finish(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_relay_streams_the_answer_as_sse() -> None:
    async with relay_process("--once", env=example_env()) as (process, url):
        async with aiohttp.ClientSession() as session:
            async with session.get(url) as page:
                html = await page.text()
            assert page.content_type == "text/html"
            assert 'new EventSource("/stream?prompt="' in html
            async with session.get(url + "stream", params={"prompt": "春天"}) as response:
                assert response.content_type == "text/event-stream"
                events = await read_events(response)
        code, out, err = await finish(process)
    assert code == 0, err
    assert err.startswith(FALLBACK_NOTICE)
    *messages, last = events
    answer = "".join(data["delta"] for _, data in messages if isinstance(data, dict))
    assert answer == "(春天)\n春眠不觉晓，处处闻啼鸟。夜来风雨声，花落知多少。"
    assert last == ("done", {"finish_reason": "stop"})
    assert "relay '春天': completed, 29 characters" in out


async def test_relay_closes_the_upstream_when_the_browser_leaves(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    # 100 frames, 0.1 s apart: ten seconds unless the relay lets go early.
    dashscope_emulator.enqueue(Reply(text=["tick "] * 100, frame_delay=0.1))
    env = emulator_env(dashscope_emulator)
    async with relay_process("--exit-after", "2", env=env) as (process, url):
        assert process.stdout is not None
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "stream", params={"prompt": "long"}) as response:
                first = await read_events(response, limit=2)
            # Leaving the block closed the browser's side mid-stream.
            assert first == [("message", {"delta": "tick ", "thinking": ""})] * 2
            line = (await asyncio.wait_for(process.stdout.readline(), 5)).decode()
            assert line == "relay 'long': browser disconnected, upstream stream closed\n"
            closed = await asyncio.to_thread(dashscope_emulator.wait_for_open_connections, 0)
            assert closed and process.returncode is None
            async with session.get(url + "stream", params={"prompt": "bye"}) as response:
                events = await read_events(response)
        code, _, err = await finish(process)
    assert code == 0, err
    assert events[-1] == ("done", {"finish_reason": "stop"})
    assert len(dashscope_emulator.requests) == 2  # the cut stream was not retried
