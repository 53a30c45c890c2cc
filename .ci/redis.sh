#!/usr/bin/env bash
# Redis job: the rate limiter's Redis backend against a real redis-server
# (Debian package), started here on a random free port without persistence
# and stopped on exit whatever happens. Run from anywhere: bash .ci/redis.sh
set -euo pipefail

cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y redis-server >/dev/null 2>&1 ||
            { apt-get update >/dev/null && apt-get install -y redis-server >/dev/null; }
    else
        sudo apt-get install -y redis-server >/dev/null
    fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e ".[dev,redis,otel]"

port="$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
    >/dev/null 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

for _ in $(seq 100); do
    redis-cli -p "$port" ping >/dev/null 2>&1 && break
    sleep 0.1
done
redis-cli -p "$port" ping >/dev/null

AIOTONGYI_TEST_REDIS_URL="redis://127.0.0.1:$port/0" .venv/bin/python -m pytest -q tests/redis
AIOTONGYI_TEST_REDIS_URL="redis://127.0.0.1:$port/0" .venv/bin/python -m benchmarks.quota_sim --quick
