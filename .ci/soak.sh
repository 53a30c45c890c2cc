#!/usr/bin/env bash
# Soak job: 100 concurrent streams with random faults for a fixed budget
# (AIOTONGYI_SOAK_SECONDS, default 60), then leak and memory checks; prints
# the figures (streams completed, errors by class, RSS before/after).
#   bash .ci/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."

export CI=true
export AIOTONGYI_SOAK_SECONDS="${AIOTONGYI_SOAK_SECONDS:-60}"
py="${PYTHON:-.venv/bin/python}"
[ -x "$py" ] || py=python3

# -m soak overrides the default "-m 'not soak and not live'" of addopts.
env -u DASHSCOPE_API_KEY -u DASHSCOPE_HTTP_BASE_URL \
    "$py" -m pytest -m soak tests/reliability/test_soak.py -p no:cacheprovider -q
