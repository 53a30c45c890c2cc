"""``aiotongyi embed`` and ``aiotongyi rerank``: output, JSON, stdin, emulator fallback, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from aiotongyi.testing import DashScopeEmulator, http_error

SECRET = "sk-cli-embed-secret"


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DASHSCOPE_")}
    base.update(env or {})
    return subprocess.run(
        [sys.executable, "-W", "error", "-m", "aiotongyi", *args],
        capture_output=True,
        text=True,
        env=base,
        input=stdin,
        timeout=60,
        check=False,
    )


def service(emu: DashScopeEmulator) -> dict[str, str]:
    return {"DASHSCOPE_API_KEY": SECRET, "DASHSCOPE_HTTP_BASE_URL": emu.base_url}


def test_embed_prints_dimensions_and_first_values_with_the_emulator() -> None:
    result = run_cli("embed", "hello world", "你好")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("0\tdim=1024\t[") and lines[0].endswith("...]\thello world")
    assert lines[1].endswith("\t你好")
    assert "emulator" in result.stderr and "DASHSCOPE_API_KEY" in result.stderr


def test_embed_json_from_stdin_with_options(dashscope_emulator: DashScopeEmulator) -> None:
    result = run_cli(
        "embed", "--json", "--dimension", "64", "--text-type", "query", "--output-type",
        "dense&sparse", env=service(dashscope_emulator), stdin="first line\n\nsecond line\n",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [len(v) for v in document["vectors"]] == [64, 64]
    assert {s["token"] for s in document["sparse"][0]} == {"first", "line"}
    [request] = dashscope_emulator.requests
    assert request.json["input"]["texts"] == ["first line", "second line"]
    assert request.json["parameters"] == {
        "dimension": 64,
        "text_type": "query",
        "output_type": "dense&sparse",
    }
    assert request.headers["authorization"] == f"Bearer {SECRET}"


def test_rerank_prints_best_first(dashscope_emulator: DashScopeEmulator) -> None:
    result = run_cli(
        "rerank", "green tea", "coffee beans", "green tea leaves", "black tea", "--top-n", "2",
        env=service(dashscope_emulator),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    ranks = [line.split("\t") for line in result.stdout.splitlines()]
    assert [(r[0], r[2], r[3]) for r in ranks] == [
        ("1", "[1]", "green tea leaves"),
        ("2", "[2]", "black tea"),
    ]
    assert dashscope_emulator.requests[0].json["parameters"] == {"top_n": 2}


def test_rerank_json(dashscope_emulator: DashScopeEmulator) -> None:
    result = run_cli(
        "rerank", "tea", "--json", env=service(dashscope_emulator), stdin="tea\nrice\n"
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [(r["index"], r["document"]) for r in document["results"]] == [(0, "tea"), (1, "rice")]
    assert document["model"] == "gte-rerank-v2"


def test_errors_are_one_line(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(http_error(400, "InvalidParameter", "bad text"))
    result = run_cli("embed", "x", env=service(dashscope_emulator))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "BadRequestError" in line and "bad text" in line
    assert "Traceback" not in result.stderr and SECRET not in result.stderr
    bad = run_cli("embed", "x", "--dimension", "7", env=service(dashscope_emulator))
    assert bad.returncode == 1 and "dimension 7 is not offered" in bad.stderr
    empty = run_cli("embed", env=service(dashscope_emulator), stdin="")
    assert empty.returncode == 2
