#!/usr/bin/env bash
# "First ten minutes" job: what a new user does, from the built wheel (not an
# editable install) in a fresh venv, with no key and no network beyond the
# package index:
#   1. the README's first command (no key -> the bundled emulator),
#   2. the README's pytest snippet, pasted into an empty project,
#   3. the interactive chat for two turns in a real terminal (tmux),
#   4. one example per feature (streaming, thinking, tools, structured output).
# Idempotent; run from anywhere: bash .ci/firstrun.sh   (PYTHON overrides python3)
set -euo pipefail

cd "$(dirname "$0")/.."
repo="$(pwd)"
work="$(mktemp -d)"
socket="$work/tmux.sock"  # a private tmux server, gone with the work directory
cleanup() {
    tmux -S "$socket" kill-server 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
unset DASHSCOPE_API_KEY DASHSCOPE_HTTP_BASE_URL DASHSCOPE_REGION DASHSCOPE_WORKSPACE
fail() { echo "firstrun: FAILED: $*" >&2; exit 1; }

echo "== build the wheel"
"${PYTHON:-python3}" -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install --disable-pip-version-check -q --upgrade pip
"$py" -m pip wheel --disable-pip-version-check -q --no-deps -w "$work/dist" "$repo"
wheel="$(ls "$work"/dist/aiotongyi-*.whl)"
"$py" -m pip install --disable-pip-version-check -q "$wheel"
cd "$work"  # nothing from the source tree on sys.path from here on
"$py" -c 'import aiotongyi, sys; assert "site-packages" in aiotongyi.__file__, aiotongyi.__file__'

echo "== the README's first command"
first="$(grep -m1 -o '\.venv/bin/aiotongyi chat .*' "$repo/README.md")"
first="${first/.venv\/bin\//$work/venv/bin/}"
eval "$first" >"$work/answer.txt" 2>"$work/notice.txt" || fail "the README's first command"
grep -q "你好，用一句话介绍你自己" "$work/answer.txt" || fail "no answer: $(cat "$work/answer.txt")"
grep -q "DASHSCOPE_API_KEY is not set; using the bundled emulator at http://127.0.0.1:" \
    "$work/notice.txt" || fail "no emulator notice: $(cat "$work/notice.txt")"
cat "$work/answer.txt"

echo "== the README's pytest snippet in an empty project"
mkdir "$work/project"
"$py" - "$repo/README.md" "$work/project/test_bot.py" <<'PY'
import re, sys
readme = open(sys.argv[1], encoding="utf-8").read()
section = readme.split("### Testing your code", 1)[1]
block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
open(sys.argv[2], "w", encoding="utf-8").write(block)
PY
"$py" -m pip install --disable-pip-version-check -q pytest pytest-asyncio
(cd "$work/project" && "$work/venv/bin/pytest" -q -p no:cacheprovider test_bot.py) ||
    fail "the README's pytest snippet"

echo "== the interactive chat, two turns in tmux"
if ! command -v tmux >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q tmux >/dev/null ||
            { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q tmux >/dev/null; }
    fi
fi
command -v tmux >/dev/null || fail "tmux is missing and could not be installed"
screen() { tmux -S "$socket" capture-pane -p -t chat; }
wait_for() {  # wait_for TEXT: poll the screen for up to 20 s
    for _ in $(seq 200); do
        if screen | grep -qF -- "$1"; then return 0; fi
        sleep 0.1
    done
    screen >&2
    fail "the terminal never showed: $1"
}
tmux -S "$socket" new-session -d -s chat -x 120 -y 30 "$work/venv/bin/aiotongyi chat --verbose"
wait_for "/help lists the commands"
tmux -S "$socket" send-keys -t chat -l "first turn"
tmux -S "$socket" send-keys -t chat Enter
wait_for "Hello! You said: first turn"
tmux -S "$socket" send-keys -t chat -l "second turn"
tmux -S "$socket" send-keys -t chat Enter
wait_for "Hello! You said: second turn"
tmux -S "$socket" send-keys -t chat -l "/save $work/chat.json"
tmux -S "$socket" send-keys -t chat Enter
wait_for "saved 4 messages"
screen | sed "/^$/d"
tmux -S "$socket" send-keys -t chat C-d
for _ in $(seq 50); do
    tmux -S "$socket" has-session -t chat 2>/dev/null || break
    sleep 0.1
done
tmux -S "$socket" has-session -t chat 2>/dev/null && fail "Ctrl-D did not end the chat"
"$py" -c "import json,sys; m=json.load(open(sys.argv[1])); assert [x['role'] for x in m]==['user','assistant']*2, m" \
    "$work/chat.json" || fail "the saved history"

echo "== one example per feature"
cp -r "$repo/examples" "$work/examples"
for example in async_chat thinking tool_functions structured_output; do
    echo "-- examples/$example.py"
    "$py" -W error "$work/examples/$example.py" || fail "examples/$example.py"
done
echo "firstrun job: OK"
