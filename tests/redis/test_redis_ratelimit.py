"""The Redis backend: one budget for several processes, against a real redis-server."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time

import pytest
import redis

from aiotongyi import RateLimiter, RateLimitError, RedisRateLimitBackend
from aiotongyi.testing import DashScopeEmulator, Reply, http_error

from ..conftest import make_client

WORKER = """
import asyncio, json, sys, time
from aiotongyi import RateLimiter, RedisRateLimitBackend

url, start, n, requests, tokens, window = sys.argv[1:7]
async def main():
    backend = RedisRateLimitBackend(url)
    limiter = RateLimiter(
        None if requests == "-" else int(requests), None if tokens == "-" else int(tokens),
        backend=backend, window=float(window), slots=10, max_wait=30,
    )
    await asyncio.sleep(max(float(start) - time.time(), 0))
    async def one():
        reservation = await limiter.acquire("qwen-plus", 100)
        admitted = time.time()
        reservation.settle(100)
        return admitted
    times = await asyncio.gather(*(one() for _ in range(int(n))))
    await asyncio.sleep(0.05)  # let the settle updates land
    await backend.aclose()
    print(json.dumps(times))
asyncio.run(main())
"""


def run_workers(url: str, processes: int, per_process: int, *limits: str) -> list[float]:
    start = time.time() + 1.0
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, str(start), str(per_process), *limits],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    times: list[float] = []
    for worker in workers:
        out, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0
        times += json.loads(out)
    return sorted(times)


def most_in_any_window(times: list[float], window: float) -> int:
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


def test_processes_share_one_request_budget(redis_url: str, redis_db: redis.Redis) -> None:
    times = run_workers(redis_url, 3, 10, "8", "-", "0.5")
    assert len(times) == 30
    # 8 per window across all three processes (50 ms of slack for when each process reads its clock)
    assert most_in_any_window(times, 0.45) <= 8
    assert times[-1] - times[0] >= 1.0  # 30 requests at 8 per half second need > 3 windows


def test_processes_share_one_token_budget(redis_url: str, redis_db: redis.Redis) -> None:
    times = run_workers(redis_url, 2, 8, "-", "500", "0.5")  # 100 tokens each: 5 per window
    assert len(times) == 16
    assert most_in_any_window(times, 0.45) <= 5


async def test_a_429_seen_by_one_process_slows_every_process(
    redis_url: str, redis_db: redis.Redis
) -> None:
    one = RateLimiter(100, window=1.0, backend=RedisRateLimitBackend(redis_url))
    other_backend = RedisRateLimitBackend(redis_url)
    other = RateLimiter(100, window=1.0, backend=other_backend)
    await one.acquire("qwen-plus", 10)
    one.throttled("qwen-plus", 0.3)
    await asyncio.sleep(0.05)  # the throttle update is sent in the background
    started = time.monotonic()
    await other.acquire("qwen-plus", 10)
    assert time.monotonic() - started >= 0.2
    state = redis_db.hgetall("aiotongyi:ratelimit:{default:qwen-plus}:state")
    assert float(state[b"factor"]) == pytest.approx(0.7)
    assert 0 < redis_db.pttl("aiotongyi:ratelimit:{default:qwen-plus}:state") <= 12_000
    assert 0 < redis_db.pttl("aiotongyi:ratelimit:{default:qwen-plus}:counts") <= 2_000
    await one.backend.aclose()  # type: ignore[attr-defined]
    await other_backend.aclose()


async def test_usage_corrects_the_shared_reservation(redis_url: str, redis_db: redis.Redis) -> None:
    backend = RedisRateLimitBackend(redis_url)
    limiter = RateLimiter(tokens_per_minute=1000, window=30, backend=backend, max_wait=0.2)
    first = await limiter.acquire("m", 900)
    with pytest.raises(RateLimitError):
        await limiter.acquire("m", 900)
    first.settle(50)
    await asyncio.sleep(0.05)
    await limiter.acquire("m", 900)  # fits now: 50 + 900 <= 1000
    await backend.aclose()


async def test_the_client_uses_the_redis_budget_async_and_sync(
    redis_url: str, redis_db: redis.Redis, dashscope_emulator: DashScopeEmulator
) -> None:
    backend = RedisRateLimitBackend(redis_url)
    limiter = RateLimiter(2, window=60, backend=backend, max_wait=0.2)
    dashscope_emulator.enqueue(Reply(text="a", usage=(3, 1)), Reply(text="b", usage=(3, 1)))
    async with make_client(dashscope_emulator, rate_limit=limiter) as client:
        assert (await client.generate("hi")).text == "a"
        # the sync API runs on the client's loop thread: the backend opens a client there
        sync = await asyncio.to_thread(client.sync_generate, "hi")
        assert sync.text == "b"
        with pytest.raises(RateLimitError):
            await client.generate("hi")
    assert len(dashscope_emulator.requests) == 2
    await backend.aclose()


async def test_a_429_through_the_client_shrinks_the_shared_budget(
    redis_url: str, redis_db: redis.Redis, dashscope_emulator: DashScopeEmulator
) -> None:
    backend = RedisRateLimitBackend(redis_url)
    limiter = RateLimiter(50, window=10, backend=backend)
    dashscope_emulator.enqueue(
        http_error(429, "Throttling.RateQuota", retry_after=0.2), Reply(text="ok")
    )
    async with make_client(dashscope_emulator, rate_limit=limiter) as client:
        assert (await client.generate("hi")).text == "ok"
    state = redis_db.hgetall("aiotongyi:ratelimit:{default:qwen-turbo}:state")
    assert float(state[b"factor"]) == pytest.approx(0.7)
    await backend.aclose()


async def test_an_unreachable_redis_lets_calls_through_with_a_warning(
    dashscope_emulator: DashScopeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    backend = RedisRateLimitBackend("redis://127.0.0.1:1/0")
    limiter = RateLimiter(1, window=60, backend=backend)
    dashscope_emulator.enqueue(Reply(text="a"), Reply(text="b"))
    with caplog.at_level(logging.WARNING, logger="aiotongyi"):
        async with make_client(dashscope_emulator, rate_limit=limiter) as client:
            await client.generate("hi")
            await client.generate("hi")
    assert "Redis rate limiter is unreachable" in caplog.text
    await backend.aclose()


def test_the_backend_needs_a_url_or_a_client() -> None:
    with pytest.raises(ValueError, match="either"):
        RedisRateLimitBackend()


async def test_a_shrunk_shared_budget_still_admits_one_request(
    redis_url: str, redis_db: redis.Redis
) -> None:
    backend = RedisRateLimitBackend(redis_url)
    limiter = RateLimiter(1, window=0.5, slots=5, backend=backend, max_wait=0.4)
    limiter.throttled("m", None)
    await asyncio.sleep(0.05)
    await limiter.acquire("m", 1)
    with pytest.raises(RateLimitError):
        await limiter.acquire("m", 1)
    await backend.aclose()
