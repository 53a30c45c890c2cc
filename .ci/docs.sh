#!/usr/bin/env bash
# Docs job: `mkdocs build --strict` with the docs extra in a venv of its own,
# then the relay example in a real headless browser (Debian's chromium, driven
# by selenium). Idempotent; run from anywhere:
#   bash .ci/docs.sh
# DOCS_VENV (default .venv-docs in the repo) and PYTHON (default python3)
# override the defaults. The browser test is skipped, with the reason, only
# where chromium cannot be installed.
set -euo pipefail

cd "$(dirname "$0")/.."
venv="${DOCS_VENV:-.venv-docs}"
py="$venv/bin/python"

if ! "$py" -c 'import sys' 2>/dev/null; then
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv"
fi
"$py" -m pip install --disable-pip-version-check -q -e ".[dev,docs,browser]"
if ! "$py" -c 'import mkdocs, material, mkdocstrings_handlers.python, selenium' 2>/dev/null; then
    echo "docs job: the docs/browser extras did not install mkdocs-material, mkdocstrings[python]" >&2
    echo "docs job: and selenium; check [project.optional-dependencies] in pyproject.toml" >&2
    exit 1
fi

echo "== mkdocs build --strict"
site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
NO_MKDOCS_2_WARNING=1 "$venv/bin/mkdocs" build --strict --site-dir "$site"

echo "== relay example in headless chromium"
# Debian's chromium and its driver (no browser downloads: they cannot reach this
# network), and a CJK font so the screenshot shows the Chinese text.
skip_reason=""
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null ||
    ! fc-list 2>/dev/null | grep -qi "wqy\|noto.*cjk"; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        export DEBIAN_FRONTEND=noninteractive
        if ! { apt-get update -q >/dev/null &&
            apt-get install -y -q chromium chromium-driver fonts-wqy-microhei >/dev/null; }; then
            skip_reason="apt-get could not install chromium chromium-driver"
        fi
    else
        skip_reason="chromium is missing and apt-get cannot run here (not root or not Debian)"
    fi
fi
if [ -n "$skip_reason" ] && ! command -v chromedriver >/dev/null; then
    echo "docs job: SKIPPING the browser test: $skip_reason"
else
    screenshot="${TMPDIR:-/tmp}/aiotongyi-browser/relay.png"
    env -u DASHSCOPE_API_KEY -u DASHSCOPE_HTTP_BASE_URL AIOTONGYI_SCREENSHOT="$screenshot" \
        "$py" -m pytest tests/browser -m browser -p no:cacheprovider -q -rs
    if [ -f "$screenshot" ]; then
        echo "docs job: relay screenshot at $screenshot"
    fi
fi
echo "docs job: OK"
