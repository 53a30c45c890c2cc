"""Retry-After: a floor between attempts, no retry past the cap, and what a 429 storm
meeting ``Timeout.total`` raises (docs/errors.md)."""

from __future__ import annotations

import time

import pytest

from aiotongyi import RateLimitError, Timeout, TongyiLLMClient
from aiotongyi.testing import DashScopeEmulator, Reply, http_error


async def test_retry_after_zero_is_not_a_busy_loop(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(*[http_error(429, "Throttling", retry_after=0)] * 50)
    async with TongyiLLMClient(
        api_key=dashscope_emulator.api_key,
        base_url=dashscope_emulator.base_url,
        max_retries=1000,
        timeout=Timeout(total=1.2),
    ) as client:
        with pytest.raises(RateLimitError) as caught:  # the storm's error, not a timeout
            await client.generate("hi")
    # Backoff 0.5 s then 1 s: two attempts fit in 1.2 s, never thousands.
    assert len(dashscope_emulator.requests) <= 3
    assert caught.value.code == "Throttling"


async def test_a_retry_after_past_the_cap_is_raised_at_once(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    dashscope_emulator.enqueue(
        http_error(429, "Throttling.RateQuota", retry_after=30), Reply(text="x")
    )
    async with TongyiLLMClient(
        api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url, max_retries=5
    ) as client:
        started = time.monotonic()
        with pytest.raises(RateLimitError) as caught:
            await client.generate("hi")
    assert time.monotonic() - started < 2
    assert len(dashscope_emulator.requests) == 1
    assert caught.value.headers is not None
    assert caught.value.headers["retry-after"] == "30"
