#!/usr/bin/env bash
# LangChain integration job: aiotongyi[langchain] with langchain-tests 1.1.x (LangChain's
# standard suites, run against the bundled emulator), in a venv of its own. Idempotent;
# run from anywhere:
#   bash .ci/langchain.sh
# LANGCHAIN_VENV (default .venv-langchain in the repo) and PYTHON (default python3)
# override the defaults.
set -euo pipefail

cd "$(dirname "$0")/.."
venv="${LANGCHAIN_VENV:-.venv-langchain}"

# Reuse a healthy venv; rebuild one that is broken.
if ! "$venv/bin/python" -c 'import sys' 2>/dev/null; then
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python"

"$py" -m pip install --disable-pip-version-check -q \
    -e ".[langchain]" \
    "langchain-tests>=1.1,<1.2" \
    "pytest>=8" "pytest-asyncio>=0.23" "hypothesis>=6.100" "mypy>=1.10"

"$py" - <<'PY'
import importlib.metadata as md
import sys

versions = {name: md.version(name) for name in ("langchain-core", "langchain-tests", "aiohttp")}
print("langchain job:", ", ".join(f"{k} {v}" for k, v in versions.items()), f"(Python {sys.version.split()[0]})")
if not versions["langchain-core"].startswith("1."):
    sys.exit(f"langchain job: expected langchain-core 1.x, got {versions['langchain-core']}")
if not versions["langchain-tests"].startswith("1.1."):
    sys.exit(f"langchain job: expected langchain-tests 1.1.x, got {versions['langchain-tests']}")
PY

# Never call the real service from CI, and never skip the LangChain tests here.
export AIOTONGYI_REQUIRE_LANGCHAIN=1
env -u DASHSCOPE_API_KEY "$py" -m pytest -p no:cacheprovider -rs \
    tests/integrations/test_langchain.py tests/integrations/test_langchain_standard.py
# docs/langchain.md's code and the example run only where langchain-core is installed
env -u DASHSCOPE_API_KEY "$py" -m pytest -p no:cacheprovider tests/test_docs.py -k langchain
env -u DASHSCOPE_API_KEY "$py" -m pytest -p no:cacheprovider tests/test_examples.py -k langchain
# The integration type-checks against the real langchain-core, not only against Any.
"$py" -m mypy --strict aiotongyi/integrations/langchain.py
echo "langchain job: OK"
