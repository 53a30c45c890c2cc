#!/usr/bin/env bash
# The oldest supported aiohttp (DB-GPT pins 3.8.4) and anyio, on Python 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-oldest
python3.11 -m venv "$venv"
"$venv/bin/pip" install -q -e ".[dev]" "aiohttp==3.8.4" "anyio==4.0.0"
"$venv/bin/python" -c "import aiohttp, anyio; print('aiohttp', aiohttp.__version__)"
"$venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit tests/integration tests/testing
