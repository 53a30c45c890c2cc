#!/usr/bin/env bash
# DB-GPT integration job: aiotongyi[dbgpt] against the newest DB-GPT 0.8.x, on
# the aiohttp it pins (3.8.4), in a venv of its own. Idempotent; run from anywhere:
#   bash .ci/dbgpt.sh
# DBGPT_VENV (default .venv-dbgpt in the repo) and PYTHON (default python3.11,
# else python3 if it is 3.10/3.11) override the defaults.
set -euo pipefail

cd "$(dirname "$0")/.."
venv="${DBGPT_VENV:-.venv-dbgpt}"

pick_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3.10 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 10), (3, 11)))'; then
            echo "$candidate"
            return 0
        fi
    done
    echo "dbgpt job: needs Python 3.10 or 3.11 (aiohttp 3.8.4 has no wheels for 3.12+)" >&2
    return 1
}

# Reuse a healthy venv; rebuild one that is broken or on the wrong Python.
if ! "$venv/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 10), (3, 11)))' 2>/dev/null; then
    rm -rf "$venv"
    "$(pick_python)" -m venv "$venv"
fi
py="$venv/bin/python"

# The extra brings DB-GPT; the second spec pins the job to the newest 0.8.x
# with the parts of DB-GPT the tests drive (worker, config loader, starlette).
"$py" -m pip install --disable-pip-version-check -q \
    -e ".[dbgpt]" \
    "dbgpt[client,simple-framework]>=0.8,<0.9" \
    "pytest>=8" "pytest-asyncio>=0.23" "hypothesis>=6.100"

"$py" - <<'PY'
import importlib.metadata as md
import sys

versions = {name: md.version(name) for name in ("dbgpt", "aiohttp", "anyio", "starlette")}
print("dbgpt job:", ", ".join(f"{k} {v}" for k, v in versions.items()), f"(Python {sys.version.split()[0]})")
if versions["aiohttp"] != "3.8.4":
    sys.exit(f"dbgpt job: expected aiohttp 3.8.4 (DB-GPT's pin), got {versions['aiohttp']}")
if not versions["dbgpt"].startswith("0.8."):
    sys.exit(f"dbgpt job: expected DB-GPT 0.8.x, got {versions['dbgpt']}")
PY

# Never call the real service from CI, and never skip the DB-GPT tests here.
# DB-GPT prints "Setting random seed to 42" on import when CI is set, which
# would pollute the stdout the subprocess tests compare: unset it for them.
export AIOTONGYI_REQUIRE_DBGPT=1
env -u DASHSCOPE_API_KEY -u CI "$py" -m pytest tests/integrations/test_dbgpt.py tests/integrations/test_dbgpt_embeddings.py -p no:cacheprovider
# docs/dbgpt.md's code runs only where DB-GPT is installed
env -u DASHSCOPE_API_KEY -u CI "$py" -m pytest tests/test_docs.py -k dbgpt -p no:cacheprovider
env -u DASHSCOPE_API_KEY "$py" examples/dbgpt_provider.py
echo "dbgpt job: OK"
