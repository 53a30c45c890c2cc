"""Per-call options and ``with_options`` siblings, on every call form."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from aiotongyi import ServerError, TongyiLLMClient
from aiotongyi.testing import DashScopeEmulator, Reply, http_error

from ..conftest import make_client

OPTIONS: dict[str, Any] = {
    "api_key": "sk-per-call",
    "headers": {"X-Trace": "t-1", "User-Agent": "mine/1.0"},
    "workspace": "ws-per-call",
}


def _forms(client: TongyiLLMClient) -> dict[str, Callable[..., Any]]:
    async def stream(**options: Any) -> str:
        async with client.generate_stream("hi", **options) as s:
            return (await s.final()).text

    async def generate(**options: Any) -> str:
        return (await client.generate("hi", **options)).text

    def sync_stream(**options: Any) -> str:
        return list(client.sync_generate_stream("hi", **options))[-1].text

    def sync_generate(**options: Any) -> str:
        return client.sync_generate("hi", **options).text

    return {
        "stream": lambda **o: asyncio.run(stream(**o)),
        "generate": lambda **o: asyncio.run(generate(**o)),
        "sync_stream": sync_stream,
        "sync_generate": sync_generate,
    }


FORMS = ["stream", "generate", "sync_stream", "sync_generate"]


@pytest.mark.parametrize("form", FORMS)
def test_per_call_options_reach_the_wire(dashscope_emulator: DashScopeEmulator, form: str) -> None:
    with make_client(
        dashscope_emulator, headers={"X-Client": "c", "X-Trace": "client"}, workspace="ws-client"
    ) as client:
        _forms(client)[form](**OPTIONS)
        sent = dashscope_emulator.requests[-1].headers
        assert sent["authorization"] == "Bearer sk-per-call"
        assert sent["x-trace"] == "t-1"  # a per-call value wins for the same name
        assert sent["x-client"] == "c"  # the client's other headers stay
        assert sent["user-agent"] == "mine/1.0"
        assert sent["x-dashscope-workspace"] == "ws-per-call"
        _forms(client)[form]()  # the next call is back to the client's settings
        sent = dashscope_emulator.requests[-1].headers
        assert sent["authorization"] == f"Bearer {dashscope_emulator.api_key}"
        assert sent["x-trace"] == "client"
        assert sent["x-dashscope-workspace"] == "ws-client"


@pytest.mark.parametrize("form", FORMS)
def test_per_call_max_retries(dashscope_emulator: DashScopeEmulator, form: str) -> None:
    dashscope_emulator.enqueue(*(http_error(503, retry_after=0.01) for _ in range(3)))
    with make_client(dashscope_emulator, max_retries=5) as client:
        with pytest.raises(ServerError):
            _forms(client)[form](max_retries=0)
    assert len(dashscope_emulator.requests) == 1


@pytest.mark.parametrize("form", FORMS)
def test_a_sibling_shares_the_parents_connections(
    dashscope_emulator: DashScopeEmulator, form: str
) -> None:
    parent = make_client(dashscope_emulator)
    sibling = parent.with_options(api_key="sk-sibling", headers={"X-Sibling": "1"}, max_retries=0)
    assert sibling.max_retries == 0 and parent.max_retries == 2
    assert "sk-sibling" not in repr(sibling)
    if form.startswith("sync"):
        _forms(parent)[form]()
        _forms(sibling)[form]()
        assert dashscope_emulator.connections == 1  # one pool on the one loop thread
    sent = [r.headers for r in dashscope_emulator.requests]
    if sent:
        assert sent[-1]["authorization"] == "Bearer sk-sibling"
        assert sent[-1]["x-sibling"] == "1"
        assert "x-sibling" not in sent[0]
    parent.close()
    assert sibling.is_closed
    with pytest.raises(RuntimeError, match="closed"):
        sibling.sync_generate("x")
    assert dashscope_emulator.wait_for_open_connections(0)


async def test_a_sibling_on_one_loop_uses_the_same_pool(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    async with make_client(dashscope_emulator) as parent:
        sibling = parent.with_options(timeout=30)
        await parent.generate("a")
        await sibling.generate("b")
        assert dashscope_emulator.connections == 1
        assert sibling.timeout.total == 30 and parent.timeout.total is None


def test_bad_per_call_options_are_refused_before_sending(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    with make_client(dashscope_emulator) as client:
        with pytest.raises(ValueError, match="header"):
            client.sync_generate("x", headers={"Bad Name": "v"})
        with pytest.raises(ValueError, match="control"):
            client.sync_generate("x", api_key="sk\nx")
        with pytest.raises(ValueError, match="max_retries"):
            client.sync_generate("x", max_retries=-1)
        with pytest.raises(ValueError, match=r"Content-Length|transport"):
            client.with_options(headers={"Content-Length": "5"})
    assert dashscope_emulator.requests == []


def test_a_sibling_keeps_working_when_only_the_sibling_is_dropped(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    dashscope_emulator.enqueue(Reply(text=["one"]), Reply(text=["two"]))
    with make_client(dashscope_emulator) as parent:
        assert parent.with_options(max_retries=1).sync_generate("x").text == "one"
        assert parent.sync_generate("y").text == "two"


def test_a_sibling_can_observe_what_its_parent_does_not(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    from aiotongyi import CallInfo, Hooks

    seen: list[str] = []

    class Names(Hooks):
        def on_end(self, call: CallInfo) -> None:
            seen.append(call.model)

    with make_client(dashscope_emulator) as parent:
        parent.with_options(hooks=Names()).sync_generate("x", model="qwen-max")
        parent.sync_generate("y")
        with pytest.raises(ValueError, match="shares its parent"):
            parent.with_options(max_connections=5)
    assert seen == ["qwen-max"]
