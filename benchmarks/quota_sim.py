"""Quota simulation: many processes share one account's per-model quota.

    python -m benchmarks.quota_sim [--quick] [--processes 8] [--streams 50] ...

The benchmark server (``_server.py``) runs in its own process behind a quota:
past ``--requests`` requests or ``--tokens`` tokens in a fixed window of
``--window`` seconds it answers ``429 Throttling.RateQuota`` (tokens are
counted when a request is admitted: 12 input + frames x chars output).
``--processes`` worker processes each run ``--streams`` concurrent streams in
a loop for ``--duration`` seconds, twice: with the default client (retries,
no limiter) and with a :class:`~aiotongyi.RateLimiter` on a shared Redis
(``RedisRateLimitBackend``) set to the quota.  The server counts, per
window, what it admitted and what it refused; the table shows the 429 rate
and the quota used in the full windows (the first and last are partial).

Redis: ``--redis-url``, else ``AIOTONGYI_TEST_REDIS_URL``, else a
``redis-server`` from the PATH started here on a free port (no persistence).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from ._server import INPUT_TOKENS, FakeDashScope, _listen, resolve_knobs


class QuotaFakeDashScope(FakeDashScope):
    """The benchmark server with a per-window request and token quota."""

    def __init__(self, window: float, requests: int, tokens: int) -> None:
        super().__init__()
        self.window, self.max_requests, self.max_tokens = window, requests, tokens
        self.windows: dict[int, list[int]] = {}  # index -> [admitted, tokens, refused]

    async def native(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        knobs = resolve_knobs(request, body)
        tokens = INPUT_TOKENS + knobs.frames * knobs.chars
        counts = self.windows.setdefault(int(time.time() // self.window), [0, 0, 0])
        if counts[0] + 1 > self.max_requests or counts[1] + tokens > self.max_tokens:
            counts[2] += 1
            return web.json_response(
                {
                    "code": "Throttling.RateQuota",
                    "message": "Requests rate limit exceeded, please try again later.",
                    "request_id": "quota",
                },
                status=429,
            )
        counts[0] += 1
        counts[1] += tokens
        return await super().native(request)

    async def quota(self, request: web.Request) -> web.Response:
        """Per-window counts."""
        return web.json_response({str(k): v for k, v in sorted(self.windows.items())})

    async def quota_reset(self, request: web.Request) -> web.Response:
        """Forget the counts."""
        self.windows.clear()
        return web.json_response({"ok": True})

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_get("/_quota", self.quota)
        app.router.add_post("/_quota/reset", self.quota_reset)
        return app


async def _serve(window: float, requests: int, tokens: int) -> None:
    sock = _listen(0)
    runner = web.AppRunner(
        QuotaFakeDashScope(window, requests, tokens).app(), access_log=None, handle_signals=False
    )
    await runner.setup()
    await web.SockSite(runner, sock).start()
    print(f"READY http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


async def _worker(args: argparse.Namespace) -> dict[str, int]:
    from aiotongyi import RateLimiter, RateLimitError, RedisRateLimitBackend, TongyiLLMClient

    limiter = None
    backend = None
    if args.redis_url:
        backend = RedisRateLimitBackend(args.redis_url, prefix=f"quota-sim:{args.run}:")
        limiter = RateLimiter(
            args.requests, args.tokens, window=args.window, backend=backend, max_wait=120
        )
    base_url = f"{args.url}/_fake/frames={args.frames}&chars={args.chars}/api/v1"
    counts = {"ok": 0, "rate_limited": 0, "other_errors": 0}
    async with TongyiLLMClient(
        api_key="sk-quota-sim", base_url=base_url, rate_limit=limiter, timeout=120
    ) as client:
        # Imported and connected: say so, then wait for the common start time.
        await client.generate("warm up", max_tokens=1)
        print("READY", flush=True)
        start = float(await asyncio.to_thread(sys.stdin.readline))
        deadline = start + args.duration
        await asyncio.sleep(max(start - time.time(), 0))

        async def one() -> None:
            try:
                await client.generate("你好", max_tokens=args.frames * args.chars)
                counts["ok"] += 1
            except RateLimitError:
                counts["rate_limited"] += 1
            except Exception:
                counts["other_errors"] += 1

        async def loop() -> None:
            while time.time() < deadline:
                await one()

        await asyncio.gather(*(loop() for _ in range(args.streams)))
    if backend is not None:
        await backend.aclose()
    return counts


@contextmanager
def _redis(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("needs Redis: --redis-url, AIOTONGYI_TEST_REDIS_URL or redis-server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(10)


def _run(args: argparse.Namespace, url: str, redis_url: str | None, run: str) -> dict[str, Any]:
    import urllib.request

    common = [
        "--url", url, "--duration", str(args.duration),
        "--streams", str(args.streams), "--window", str(args.window),
        "--requests", str(args.requests), "--tokens", str(args.tokens),
        "--frames", str(args.frames), "--chars", str(args.chars), "--run", run,
    ]  # fmt: skip
    if redis_url:
        common += ["--redis-url", redis_url]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "benchmarks.quota_sim", "--worker", *common],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(args.processes)
    ]
    for worker in workers:  # every worker imported, connected and warmed up
        assert worker.stdout is not None
        assert worker.stdout.readline().strip() == "READY"
    urllib.request.urlopen(urllib.request.Request(f"{url}/_quota/reset", method="POST"))
    start = time.time() + 0.5
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write(f"{start}\n")
        worker.stdin.flush()
    totals = {"ok": 0, "rate_limited": 0, "other_errors": 0}
    for worker in workers:
        assert worker.stdout is not None
        out = worker.stdout.read()
        worker.wait(timeout=args.duration + 300)
        for key, value in json.loads(out.strip().splitlines()[-1]).items():
            totals[key] += value
    with urllib.request.urlopen(f"{url}/_quota") as reply:
        windows = json.loads(reply.read())
    first, last = int(start // args.window), int((start + args.duration) // args.window)
    full = [v for k, v in windows.items() if first < int(k) < last]
    admitted = sum(v[0] for v in windows.values())
    refused = sum(v[2] for v in windows.values())
    used = [max(v[0] / args.requests, v[1] / args.tokens) for v in full]
    return {
        "mode": "shared Redis limiter" if redis_url else "no limiter (default retries)",
        "requests": admitted + refused,
        "admitted": admitted,
        "refused_429": refused,
        "rate_429": refused / max(admitted + refused, 1),
        "quota_used": sum(used) / max(len(used), 1),
        "full_windows": len(full),
        "windows": windows,
        "client": totals,
    }


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 s per run (CI smoke)")
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--streams", type=int, default=50, help="concurrent streams per process")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per run")
    parser.add_argument("--window", type=float, default=2.0, help="quota window (s)")
    parser.add_argument("--requests", type=int, default=200, help="requests per window")
    parser.add_argument("--tokens", type=int, default=40_000, help="tokens per window")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--chars", type=int, default=20)
    parser.add_argument("--redis-url", default=os.environ.get("AIOTONGYI_TEST_REDIS_URL"))
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--run", default="0", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.window, args.requests, args.tokens))
        return
    if args.worker:
        print(json.dumps(asyncio.run(_worker(args))), flush=True)
        return
    if args.quick:
        args.duration = 10.0
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.quota_sim", "--serve", "--window", str(args.window),
         "--requests", str(args.requests), "--tokens", str(args.tokens)],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[1]
        with _redis(args.redis_url) as redis_url:
            results = [
                _run(args, url, None, "none"),
                _run(args, url, redis_url, str(int(time.time()))),
            ]
    finally:
        server.terminate()
        server.wait(10)
    print(
        f"\n{args.processes} processes x {args.streams} streams, {args.duration:g} s per run; "
        f"quota {args.requests} requests or {args.tokens} tokens per {args.window:g} s window; "
        f"{INPUT_TOKENS + args.frames * args.chars} tokens per request\n"
    )
    print("| mode | requests sent | admitted | 429s | 429 rate | quota used | client errors |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        client = r["client"]
        print(
            f"| {r['mode']} | {r['requests']} | {r['admitted']} | {r['refused_429']} | "
            f"{r['rate_429']:.2%} | {r['quota_used']:.1%} | "
            f"{client['rate_limited']} rate-limited, {client['other_errors']} other |"
        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"args": vars(args), "results": results}, out, indent=2)


if __name__ == "__main__":
    main()
