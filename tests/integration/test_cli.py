"""The CLI: streams to stdout, uses the emulator without a key, fails in one line."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from aiotongyi._cli import EMULATOR_NOTICE
from aiotongyi.testing import DashScopeEmulator, Reply, http_error

SECRET = "sk-cli-secret-99"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "aiotongyi", *args],
        capture_output=True,
        text=True,
        env=base,
        timeout=60,
        check=False,
    )


def test_without_a_key_it_uses_the_emulator_and_says_so() -> None:
    result = run_cli("chat", "你好", "--verbose")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello! You said: 你好\n"
    assert "emulator" in result.stderr
    assert "DASHSCOPE_API_KEY" in result.stderr
    assert "finish_reason=stop" in result.stderr
    assert "request_id=" in result.stderr


def test_with_a_key_it_calls_the_configured_service(dashscope_emulator: DashScopeEmulator) -> None:
    env = {"DASHSCOPE_API_KEY": SECRET, "DASHSCOPE_HTTP_BASE_URL": dashscope_emulator.base_url}
    result = run_cli(
        "chat", "hi", "--model", "qwen-max", "--temperature", "0", "--system", "be brief", env=env
    )
    assert result.returncode == 0, result.stderr
    assert "emulator" not in result.stderr
    (request,) = dashscope_emulator.requests
    assert request.json["model"] == "qwen-max"
    assert request.json["parameters"]["temperature"] == 0
    assert request.json["input"]["messages"][0] == {"role": "system", "content": "be brief"}
    assert request.headers["authorization"] == f"Bearer {SECRET}"


def test_api_errors_exit_nonzero_with_one_line(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(http_error(401, "InvalidApiKey", "Invalid API-key provided."))
    env = {"DASHSCOPE_API_KEY": SECRET, "DASHSCOPE_HTTP_BASE_URL": dashscope_emulator.base_url}
    result = run_cli("chat", "hi", env=env)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "AuthenticationError" in lines[0]
    assert "InvalidApiKey" in lines[0]
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_thinking_flag_is_sent() -> None:
    result = run_cli("chat", "hi", "--emulator", "--thinking")
    assert result.returncode == 0, result.stderr


def test_prompt_from_stdin() -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    result = subprocess.run(
        [sys.executable, "-m", "aiotongyi", "chat"],
        input="from stdin",
        capture_output=True,
        text=True,
        env=base,
        timeout=60,
        check=False,
    )
    assert result.stdout == "Hello! You said: from stdin\n"


def test_bad_region_is_a_usage_error() -> None:
    result = run_cli("chat", "hi", "--region", "mars-1", env={"DASHSCOPE_API_KEY": "k"})
    assert result.returncode == 2
    assert "mars-1" in result.stderr
    assert "Traceback" not in result.stderr


# -- issue 15 (items 14-17): Unix manners --------------------------------------------


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    env.update(extra)
    return env


def test_a_closed_pipe_ends_quietly_with_status_141() -> None:
    # The default reply echoes the prompt: far more than a pipe buffer holds.
    python = shlex.quote(sys.executable)
    command = f"{python} -c 'print(\"x\" * 1_000_000)' | {python} -m aiotongyi chat | head -c 20"
    result = subprocess.run(
        ["bash", "-c", f"{command}; echo status=${{PIPESTATUS[1]}} >&2"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
        check=False,
    )
    assert result.stdout == "Hello! You said: xxx"
    assert "Traceback" not in result.stderr
    assert "BrokenPipe" not in result.stderr
    assert result.stderr.rstrip().endswith("status=141")


def test_ctrl_c_while_reading_the_prompt_exits_130_without_a_traceback() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "aiotongyi", "chat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    time.sleep(1.0)  # let it import and block in the read of stdin
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert "KeyboardInterrupt" not in stderr


def test_ctrl_c_while_streaming_closes_the_stream_and_exits_130(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    dashscope_emulator.enqueue(Reply(text=["first"] + [" more"] * 200, frame_delay=0.05))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiotongyi",
            "chat",
            "hi",
            "--base-url",
            dashscope_emulator.base_url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(),
    )
    assert process.stdout is not None
    assert process.stdout.read(5) == "first"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "Traceback" not in stderr
    assert stdout.endswith("\n")  # the half-written answer line is ended
    assert dashscope_emulator.wait_for_open_connections(0, timeout=5)


def test_without_a_key_an_explicit_base_url_is_used(dashscope_emulator: DashScopeEmulator) -> None:
    result = run_cli("chat", "hi", "--base-url", dashscope_emulator.base_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello! You said: hi\n"
    assert len(dashscope_emulator.requests) == 1  # that server, not a second emulator
    assert "emulator" not in result.stderr


def test_without_a_key_an_unknown_region_is_an_error() -> None:
    result = run_cli("chat", "hi", "--region", "mars")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "mars" in result.stderr
    assert "emulator" not in result.stderr


def test_without_a_key_a_real_region_is_refused_in_one_line() -> None:
    result = run_cli("chat", "hi", "--region", "cn-beijing")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "DASHSCOPE_API_KEY" in result.stderr


def test_empty_prompts_are_refused_in_one_line() -> None:
    for args, stdin in ((["chat", ""], None), (["chat"], "  \n\n")):
        result = subprocess.run(
            [sys.executable, "-m", "aiotongyi", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=cli_env(),
            timeout=60,
            check=False,
        )
        assert result.returncode == 2, args
        assert result.stderr == "aiotongyi: the prompt is empty\n"
        assert result.stdout == ""


def test_stdin_prompt_loses_its_trailing_newline(dashscope_emulator: DashScopeEmulator) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aiotongyi", "chat", "--base-url", dashscope_emulator.base_url],
        input="line one\nline two\n",
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    (request,) = dashscope_emulator.requests
    assert request.json["input"]["messages"][-1]["content"] == "line one\nline two"


def test_errors_have_no_blank_line_before_them(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(http_error(400, "InvalidParameter", "bad"))
    result = run_cli("chat", "hi", "--base-url", dashscope_emulator.base_url)
    assert result.returncode == 1
    assert result.stderr.startswith("aiotongyi: error: BadRequestError")
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""


def test_an_error_after_some_text_ends_the_answer_line(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    dashscope_emulator.enqueue(Reply(text=["partial"], drop_after_frames=1))
    result = run_cli("chat", "hi", "--base-url", dashscope_emulator.base_url)
    assert result.returncode == 1
    assert result.stdout == "partial\n"
    assert result.stderr.startswith("aiotongyi: error: StreamInterruptedError")


def test_thinking_is_set_apart_from_the_answer(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(Reply(thinking=["let me ", "think"], text=["42"]))
    result = run_cli("chat", "hi", "--thinking", "--base-url", dashscope_emulator.base_url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "42\n"
    assert result.stderr == "let me think\n"  # not a terminal: no colour codes
    assert dashscope_emulator.requests[0].json["parameters"]["enable_thinking"] is True


def test_an_ascii_terminal_gets_replacement_characters() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aiotongyi", "chat", "你好"],
        capture_output=True,
        env=cli_env(PYTHONIOENCODING="ascii"),
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"Hello! You said: ??\n"
    assert b"Traceback" not in result.stderr


def test_one_wording_for_the_emulator_notice() -> None:
    result = run_cli("chat", "hi")
    (line,) = result.stderr.splitlines()
    url = line.split(" at ")[1].split(" ")[0]
    assert line == "aiotongyi: " + EMULATOR_NOTICE.format(
        reason="DASHSCOPE_API_KEY is not set", url=url
    )
    root = Path(__file__).resolve().parents[2]
    for example in ("examples/_emulator_fallback.py", "examples/dbgpt_provider.py"):
        source = (root / example).read_text(encoding="utf-8")
        assert "using the bundled emulator at" in source, example
        assert "(not a real model)" in source, example
