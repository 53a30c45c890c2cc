"""The CLI: streams to stdout, uses the emulator without a key, fails in one line."""

from __future__ import annotations

import os
import subprocess
import sys

from aiotongyi.testing import DashScopeEmulator, http_error

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
