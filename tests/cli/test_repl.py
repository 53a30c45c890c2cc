"""The interactive chat's loop, driven line by line (no terminal needed)."""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiotongyi import TongyiLLMClient
from aiotongyi._repl import Repl
from aiotongyi.testing import DashScopeEmulator, Reply, ToolCallScript


def options(**overrides: object) -> argparse.Namespace:
    values: dict[str, object] = {
        "model": None,
        "system": None,
        "temperature": None,
        "max_tokens": None,
        "thinking": None,
        "verbose": False,
    }
    values.update(overrides)
    return argparse.Namespace(**values)


class Script:
    """Feeds lines to the REPL as ``input()`` would; EOF (Ctrl-D) after the last one."""

    def __init__(self, *lines: str | type[BaseException]) -> None:
        self.lines: Iterator[str | type[BaseException]] = iter(lines)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        line = next(self.lines, EOFError)
        if isinstance(line, type):
            raise line
        return line


@pytest.fixture
def client(dashscope_emulator: DashScopeEmulator) -> Iterator[TongyiLLMClient]:
    with TongyiLLMClient(
        api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url
    ) as c:
        yield c


def run(
    client: TongyiLLMClient, *lines: str | type[BaseException], **overrides: object
) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = Repl(client, options(**overrides), read=Script(*lines), out=out, err=err).run()
    return status, out.getvalue(), err.getvalue()


def sent(emulator: DashScopeEmulator, turn: int) -> list[dict[str, object]]:
    messages: list[dict[str, object]] = emulator.requests[turn].json["input"]["messages"]
    return messages


def test_turns_carry_the_history(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    status, out, _ = run(client, "first", "second")
    assert status == 0
    assert out == "Hello! You said: first\nHello! You said: second\n\n"
    assert sent(dashscope_emulator, 1) == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "Hello! You said: first"},
        {"role": "user", "content": "second"},
    ]


def test_tool_calls_stay_in_the_history(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(
        Reply(
            tool_calls=[ToolCallScript("lookup", '{"q": "x"}', id="call_7")],
            finish_reason="tool_calls",
        )
    )
    _, _, err = run(client, "look it up", "and then?")
    assert '[tool call lookup({"q": "x"})]' in err
    assistant = sent(dashscope_emulator, 1)[1]
    assert assistant["tool_calls"] == [
        {
            "index": 0,
            "id": "call_7",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"q": "x"}'},
        }
    ]


def test_commands(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, tmp_path: Path
) -> None:
    saved = tmp_path / "chat.json"
    status, _, err = run(
        client,
        "one",
        "/reset",
        "/system be brief",
        "/model qwen-max",
        "two",
        f"/save {saved}",
        "/bogus",
        "/exit",
        "never sent",
    )
    assert status == 0
    assert len(dashscope_emulator.requests) == 2
    assert dashscope_emulator.requests[1].json["model"] == "qwen-max"
    assert sent(dashscope_emulator, 1) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "two"},
    ]
    assert json.loads(saved.read_text(encoding="utf-8")) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "Hello! You said: two"},
    ]
    assert "unknown command /bogus" in err


def test_thinking_is_shown_apart_and_usage_with_verbose(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(thinking=["hmm ", "yes"], text=["42"], usage=(5, 9)))
    _, out, err = run(client, "q", thinking=True, verbose=True)
    assert out == "hmm yes\n42\n\n"
    assert "usage={'prompt_tokens': 5, 'completion_tokens': 9, 'total_tokens': 14}" in err
    assert dashscope_emulator.requests[0].json["parameters"]["enable_thinking"] is True


class CancelOnAnswer(io.StringIO):
    """A terminal where the user presses Ctrl-C as soon as the answer starts."""

    def write(self, text: str) -> int:
        if text.startswith("Slow"):
            raise KeyboardInterrupt
        return super().write(text)


def test_ctrl_c_cancels_the_answer_and_closes_its_stream(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["Slow", " answer"] * 50, frame_delay=0.2))
    closed_before_next_prompt: list[bool] = []
    lines = iter(["tell me", "again"])

    def read(prompt: str) -> str:
        if not closed_before_next_prompt and dashscope_emulator.requests:
            # A streaming response cut mid-way cannot go back to the pool: it is closed.
            closed_before_next_prompt.append(dashscope_emulator.wait_for_open_connections(0))
        line = next(lines, None)
        if line is None:
            raise EOFError
        return line

    out, err = CancelOnAnswer(), io.StringIO()
    status = Repl(client, options(), read=read, out=out, err=err).run()
    assert status == 0
    assert closed_before_next_prompt == [True]
    assert "[answer cancelled]" in err.getvalue()
    # The cancelled turn is not in the history.
    assert sent(dashscope_emulator, 1) == [{"role": "user", "content": "again"}]


def test_ctrl_c_at_the_prompt_keeps_going_and_errors_do_not_end_the_chat(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    from aiotongyi.testing import http_error

    dashscope_emulator.enqueue(http_error(400, "InvalidParameter", "nope"))
    status, _, err = run(client, KeyboardInterrupt, "fails", "works")
    assert status == 0
    assert "aiotongyi: error: BadRequestError: 400 InvalidParameter: nope" in err
    assert sent(dashscope_emulator, 1) == [{"role": "user", "content": "works"}]
