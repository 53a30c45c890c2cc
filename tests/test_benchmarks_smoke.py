"""Smoke tests of benchmarks/: one tiny scenario per adapter, the report, the CLI."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is a folder of the checkout, not installed
    sys.path.insert(0, str(ROOT))

from benchmarks import _report  # noqa: E402
from benchmarks._scenarios import QUICK  # noqa: E402
from benchmarks._server import ServerThread  # noqa: E402
from benchmarks._worker import measure  # noqa: E402

HAS_AIOTONGYI = importlib.util.find_spec("aiotongyi") is not None
CLIENTS = [
    "raw-aiohttp",
    pytest.param(
        "aiotongyi", marks=pytest.mark.skipif(not HAS_AIOTONGYI, reason="aiotongyi not importable")
    ),
]


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerThread]:
    # measure() points the dashscope environment at the fake; keep that out of other tests
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-fake")
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", "http://127.0.0.1:9/api/v1")
    with ServerThread() as running:
        yield running


@pytest.mark.parametrize("client", CLIENTS)
def test_one_stream_is_measured_and_checked(server: ServerThread, client: str) -> None:
    scenario = dataclasses.replace(QUICK["S1"], frames=30)
    config = {"client": client, "scenario": dataclasses.asdict(scenario), "server": server.url}
    result = measure(config)
    assert result["ok"], result["errors"]
    assert result["frames_total"] == 30
    assert result["cpu_us_per_frame"] > 0
    assert result["rss_growth_mb"] >= 0


@pytest.mark.parametrize("client", CLIENTS)
def test_cumulative_frames_check_the_last_text(server: ServerThread, client: str) -> None:
    scenario = dataclasses.replace(QUICK["S4"], frames=12)
    config = {"client": client, "scenario": dataclasses.asdict(scenario), "server": server.url}
    result = measure(config)
    assert result["ok"], result["errors"]
    assert result["frames_total"] == 12


def test_report_divides_by_the_baseline_of_the_same_run() -> None:
    spec = dataclasses.asdict(QUICK["S1"])
    rows = [
        {"client": "raw-aiohttp", "scenario": "S1", "ok": True, "cpu_us_per_frame": 20.0},
        {"client": "aiotongyi", "scenario": "S1", "ok": True, "cpu_us_per_frame": 10.0},
        {"client": "aiotongyi", "scenario": "S1", "ok": True, "cpu_us_per_frame": 14.0},
    ]
    for row in rows:
        row |= {"wall_s": 0.1, "fps": 1.0}
    text = _report.render({"meta": {"scenarios": {"S1": spec}}, "results": rows})
    line = next(x for x in text.splitlines() if x.startswith("| aiotongyi |"))
    assert "| 2 |" in line
    assert "12.0 [10.0–14.0]" in line
    assert "| 0.60 |" in line  # median 12 over the baseline's 20
    assert "| S1 | CPU/frame ×raw (stretch 0.8) | 0.60 | 1 | yes |" in text


def test_command_line_writes_json_and_markdown(tmp_path: Path) -> None:
    # the adapters are covered in-process above; this is the orchestration around them
    command = [sys.executable, "-m", "benchmarks", "--quick", "--scenarios", "S1,S4"]
    command += ["--clients", "raw-aiohttp", "--set", "S1.frames=20", "--set", "S4.frames=5"]
    command += ["--out", str(tmp_path), "--no-plot", "--no-pin"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    (data_file,) = tmp_path.glob("*.json")
    results = json.loads(data_file.read_text())["results"]
    assert [(r["scenario"], r["frames_total"]) for r in results] == [("S1", 20), ("S4", 5)]
    assert all(r["srv_connections"] == 1 for r in results)  # warm-up and measurement
    markdown = next(tmp_path.glob("*.md")).read_text()
    assert "### S1" in markdown
    assert "### S4" in markdown


def test_s8_memory_measures_every_reader_against_the_answer_keeping_floor() -> None:
    command = [sys.executable, "-m", "benchmarks.s8_memory", "--streams", "20"]
    command += ["--frames", "10", "--repeat", "1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("20 streams x 10 frames")
    assert [line.split()[0] for line in lines[1:]] == [
        "raw-aiohttp-any",
        "raw-aiohttp-any+answer",
        "aiotongyi",
    ]
    assert "x1.00 of raw+answer" in lines[2]
