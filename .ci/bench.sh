#!/usr/bin/env bash
# Benchmark smoke run: every scenario in quick mode, no thresholds (timings on a
# shared 2-core CI machine say nothing; the full run lives in benchmarks/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${BENCH_VENV:-.venv-bench}"
if ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --disable-pip-version-check -q -e ".[bench]"
env -u DASHSCOPE_API_KEY "$venv/bin/python" -m benchmarks --quick --no-plot
