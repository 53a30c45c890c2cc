"""The in-process rate limiter: waits for capacity, never sends past the budget, adapts to 429s."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiotongyi import CallInfo, Hooks, RateLimiter, RateLimitError
from aiotongyi._ratelimit import admit
from aiotongyi.testing import DashScopeEmulator, Reply, http_error

from ..conftest import make_client


class SendTimes(Hooks):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_request(self, call: CallInfo, attempt: int) -> None:
        self.times.append(time.monotonic())


def most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max(sum(1 for t in times if start <= t < start + window) for start in times)


async def test_requests_per_window_are_held_and_the_rest_wait(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    limiter = RateLimiter(requests_per_minute=3, window=0.4, slots=4)
    sent = SendTimes()
    dashscope_emulator.enqueue(*[Reply(text="ok") for _ in range(7)])
    async with make_client(dashscope_emulator, rate_limit=limiter, hooks=sent) as client:
        started = time.monotonic()
        outputs = await asyncio.gather(*(client.generate("hi") for _ in range(7)))
        elapsed = time.monotonic() - started
    assert [o.text for o in outputs] == ["ok"] * 7
    assert len(dashscope_emulator.requests) == 7
    assert most_in_any_window(sent.times, 0.4) <= 3
    assert elapsed >= 0.8  # 7 requests at 3 per window need two more windows


async def test_tokens_are_reserved_from_the_estimate_and_corrected_from_usage(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    # Each call reserves ~1000 tokens (max_tokens) but uses 20: after the first
    # settles, the second fits at once instead of waiting for the window.
    limiter = RateLimiter(tokens_per_minute=1500, window=30, slots=10, max_wait=5)
    dashscope_emulator.enqueue(*[Reply(text="ok", usage=(10, 10)) for _ in range(3)])
    async with make_client(dashscope_emulator, rate_limit=limiter) as client:
        started = time.monotonic()
        for _ in range(3):
            await client.generate("hi", max_tokens=1000)
        assert time.monotonic() - started < 2
        # an estimate over the whole budget is admitted into an empty window only,
        # and waiting for one is bounded by max_wait
        too_big = RateLimiter(tokens_per_minute=1500, window=30, max_wait=0.2)
        client2 = make_client(dashscope_emulator, rate_limit=too_big)
        dashscope_emulator.enqueue(Reply(text="ok", usage=(10, 10)))
        await client2.generate("hi", max_tokens=2000)
        with pytest.raises(RateLimitError) as caught:
            await client2.generate("hi", max_tokens=2000)
        await client2.aclose()
    assert caught.value.code == "ClientRateLimit"
    assert caught.value.status_code == 429
    assert len(dashscope_emulator.requests) == 4  # the refused call sent nothing


async def test_the_wait_is_bounded_by_the_total_timeout(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    limiter = RateLimiter(requests_per_minute=1, window=60, max_wait=30)
    dashscope_emulator.enqueue(Reply(text="ok"))
    async with make_client(dashscope_emulator, rate_limit=limiter) as client:
        await client.generate("hi")
        started = time.monotonic()
        with pytest.raises(RateLimitError, match="no capacity"):
            await client.generate("hi", timeout=0.5)
        assert time.monotonic() - started < 0.4  # refused at once: the wait cannot fit


async def test_a_limiter_is_shared_by_clients_and_per_model(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    limiter = RateLimiter(
        requests_per_minute=2, models={"qwen-max": (None, None)}, window=60, max_wait=0.1
    )
    dashscope_emulator.enqueue(*[Reply(text="ok") for _ in range(6)])
    async with (
        make_client(dashscope_emulator, rate_limit=limiter) as one,
        make_client(dashscope_emulator, rate_limit=limiter) as two,
    ):
        await one.generate("hi")
        await two.generate("hi")
        with pytest.raises(RateLimitError):
            await one.generate("hi")
        for _ in range(3):  # another model's budget (here: unlimited)
            await two.generate("hi", model="qwen-max")
    assert len(dashscope_emulator.requests) == 5


async def test_a_429_from_the_service_pauses_and_shrinks_the_budget(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    limiter = RateLimiter(requests_per_minute=10, window=1.0, slots=10, max_wait=5)
    sent = SendTimes()
    dashscope_emulator.enqueue(
        http_error(429, "Throttling.RateQuota", retry_after=0.3),
        *[Reply(text="ok") for _ in range(12)],
    )
    async with make_client(dashscope_emulator, rate_limit=limiter, hooks=sent) as client:
        await client.generate("hi")  # 429, then the retry waits out the pause
        assert sent.times[1] - sent.times[0] >= 0.29
        sent.times.clear()
        await asyncio.gather(*(client.generate("hi") for _ in range(11)))
    # the budget shrank to 70 %: at most 7 (of 10) of them in any one window
    assert most_in_any_window(sent.times, 1.0) <= 7


async def test_throttled_without_retry_after_pauses_one_sub_window() -> None:
    limiter = RateLimiter(requests_per_minute=100, window=1.0, slots=5)
    limiter.throttled("m", None)
    started = time.monotonic()
    reservation = await limiter.acquire("m", 10)
    assert time.monotonic() - started >= 0.15
    reservation.settle(5)
    reservation.settle(7)  # idempotent


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        RateLimiter(requests_per_minute=0)
    with pytest.raises(ValueError, match="integers"):
        RateLimiter(models={"m": (1.5, None)})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="slots"):
        RateLimiter(10, slots=0)


def test_rate_limit_must_be_a_limiter(dashscope_emulator: DashScopeEmulator) -> None:
    with pytest.raises(ValueError, match="rate_limit"):
        make_client(dashscope_emulator, rate_limit={"rpm": 1})


counts = st.lists(st.tuples(st.integers(0, 50), st.integers(0, 5000)), max_size=21)
limit = st.none() | st.integers(1, 200)


@given(counts, limit, limit, st.integers(0, 6000))
def test_admit_returns_the_fewest_sub_windows_to_expire(
    window: list[tuple[int, int]],
    requests_limit: int | None,
    tokens_limit: int | None,
    tokens: int,
) -> None:
    def fits(rest: list[tuple[int, int]]) -> bool:
        need = tokens if tokens_limit is None else min(tokens, tokens_limit)
        return (requests_limit is None or sum(r for r, _ in rest) + 1 <= requests_limit) and (
            tokens_limit is None or sum(t for _, t in rest) + need <= tokens_limit
        )

    expired = admit(window, requests_limit, tokens_limit, tokens)
    assert 0 <= expired <= len(window)
    if expired < len(window) or fits([]):
        assert fits(window[expired:])
    assert not any(fits(window[k:]) for k in range(expired))


async def test_a_shrunk_budget_still_admits_one_request_per_window() -> None:
    limiter = RateLimiter(requests_per_minute=1, window=0.5, slots=5, max_wait=0.4)
    limiter.throttled("m", None)  # 1 x 70 % is less than one request
    await limiter.acquire("m", 1)
    with pytest.raises(RateLimitError):
        await limiter.acquire("m", 1)


def test_the_redis_backend_without_redis_py_names_the_extra() -> None:
    code = """
import sys
sys.modules["redis"] = None  # as if aiotongyi[redis] were not installed
from aiotongyi import RedisRateLimitBackend
try:
    RedisRateLimitBackend("redis://localhost")
except ImportError as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "aiotongyi[redis]" in out.stdout
