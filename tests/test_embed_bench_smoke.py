"""Smoke test of benchmarks/embed_bench.py: a tiny run, aiotongyi and one SDK baseline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_embedding_benchmark_runs(tmp_path: Path) -> None:
    out = tmp_path / "embed.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "benchmarks.embed_bench", "--texts", "30", "--delay-ms", "1",
            "--repeat", "1", "--clients", "aiotongyi,aiotongyi-sync,sdk-legacy-sync",
            "--json", str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| aiotongyi | " in result.stdout
    assert "| sdk-legacy-sync | " in result.stdout
    assert "target >= 5x faster than the best baseline" in result.stdout
    report = json.loads(out.read_text())
    assert report["errors"] == {}
    assert len(report["samples"]["aiotongyi"]) == 1
