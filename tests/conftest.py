"""Shared test helpers: a client factory bound to the emulator."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from aiotongyi import Timeout, TongyiLLMClient
from aiotongyi.testing import DashScopeEmulator


@pytest.fixture(autouse=True)
def _no_ambient_dashscope_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's real key or endpoint must never leak into a test."""
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    monkeypatch.delenv("DASHSCOPE_HTTP_BASE_URL", raising=False)


def make_client(emulator: DashScopeEmulator, **kwargs: Any) -> TongyiLLMClient:
    kwargs.setdefault("api_key", emulator.api_key)
    kwargs.setdefault("base_url", emulator.base_url)
    kwargs.setdefault("timeout", Timeout(connect=2, read=5))
    return TongyiLLMClient(**kwargs)


@pytest.fixture
async def client(dashscope_emulator: DashScopeEmulator) -> AsyncIterator[TongyiLLMClient]:
    async with make_client(dashscope_emulator) as c:
        yield c


@pytest.fixture
def sync_client(dashscope_emulator: DashScopeEmulator) -> Iterator[TongyiLLMClient]:
    with make_client(dashscope_emulator) as c:
        yield c


async def eventually(predicate: Callable[[], bool], within: float = 2.0) -> bool:
    """Poll ``predicate`` without blocking the running loop (sockets close on its next turn)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True
