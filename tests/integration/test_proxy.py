"""Proxies: explicit proxy=, or the usual environment variables (resolved once)."""

from __future__ import annotations

import pytest

from aiotongyi import TongyiLLMClient
from aiotongyi._config import proxy_from_environment
from aiotongyi.testing import DashScopeEmulator

UNREACHABLE = "http://dashscope.invalid/api/v1"  # only the proxy can answer for it


@pytest.fixture(autouse=True)
def _clean_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


async def test_explicit_proxy_carries_the_request(dashscope_emulator: DashScopeEmulator) -> None:
    proxy = dashscope_emulator.base_url.removesuffix("/api/v1")
    async with TongyiLLMClient(
        api_key=dashscope_emulator.api_key, base_url=UNREACHABLE, proxy=proxy, max_retries=0
    ) as client:
        assert (await client.generate("via proxy")).finish_reason == "stop"
    assert dashscope_emulator.requests[0].path.endswith("/text-generation/generation")


async def test_proxy_from_the_environment(
    dashscope_emulator: DashScopeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", dashscope_emulator.base_url.removesuffix("/api/v1"))
    async with TongyiLLMClient(
        api_key=dashscope_emulator.api_key, base_url=UNREACHABLE, max_retries=0
    ) as client:
        assert (await client.generate("via env proxy")).finish_reason == "stop"
    assert len(dashscope_emulator.requests) == 1


def test_no_proxy_and_scheme_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert proxy_from_environment("https://dashscope.aliyuncs.com/api/v1") == (
        "http://proxy.example:3128"
    )
    assert proxy_from_environment("http://127.0.0.1:8080/api/v1") is None
    monkeypatch.setenv("NO_PROXY", ".aliyuncs.com")
    assert proxy_from_environment("https://dashscope.aliyuncs.com/api/v1") is None


def test_explicit_proxy_beats_the_environment(
    monkeypatch: pytest.MonkeyPatch, dashscope_emulator: DashScopeEmulator
) -> None:
    # The environment names a proxy nobody listens on; the explicit one is the
    # emulator, which answers a proxied (absolute-form) request like any other.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    emulator_root = dashscope_emulator.base_url.removesuffix("/api/v1")
    with TongyiLLMClient(
        api_key="k", base_url="http://dashscope.invalid/api/v1", proxy=emulator_root
    ) as client:
        assert client.sync_generate("hi").finish_reason == "stop"
    assert dashscope_emulator.requests[-1].headers["host"] == "dashscope.invalid"
