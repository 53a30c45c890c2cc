"""Cleanup: every way of leaving a stream closes its HTTP response."""

from __future__ import annotations

import asyncio

import pytest

from aiotongyi import APIConnectionError, StreamInterruptedError, TongyiLLMClient
from aiotongyi.testing import DashScopeEmulator, Reply

from ..conftest import eventually, make_client

SLOW = {"text": [f"t{i} " for i in range(200)], "frame_delay": 0.01}


async def closed_on_server(emulator: DashScopeEmulator) -> bool:
    return await eventually(lambda: emulator.open_connections == 0, within=1.0)


async def test_break_inside_async_with_closes_the_connection(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(**SLOW))
    async with client.generate_stream("x") as stream:
        async for _ in stream:
            break
    assert await closed_on_server(dashscope_emulator)


async def test_exception_in_the_loop_body_closes_the_connection(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(**SLOW))
    with pytest.raises(ZeroDivisionError):
        async with client.generate_stream("x") as stream:
            async for _ in stream:
                1 / 0  # noqa: B018
    assert await closed_on_server(dashscope_emulator)


async def test_bare_iteration_closes_as_soon_as_the_stream_is_dropped(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(**SLOW))
    async for _ in client.generate_stream("x"):
        break
    # no gc.collect(): the Stream is freed by refcount and the loop runs the
    # generator's finaliser on its next turn
    assert await closed_on_server(dashscope_emulator)


async def test_explicit_aclose_closes_the_connection(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(**SLOW))
    stream = client.generate_stream("x")
    await stream.__anext__()
    await stream.aclose()
    await stream.aclose()
    assert await closed_on_server(dashscope_emulator)
    with pytest.raises(RuntimeError, match="ended"):
        await stream.__anext__()


async def test_cancelling_the_consumer_closes_the_connection(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(**SLOW))
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in client.generate_stream("x"):
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await closed_on_server(dashscope_emulator)


async def test_wait_for_timeout_closes_the_connection(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(**SLOW))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(client.generate("x"), 0.2)
    assert await closed_on_server(dashscope_emulator)


async def test_complete_stream_returns_its_connection_to_the_pool(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    await client.generate("x")
    await client.generate("y")
    assert dashscope_emulator.connections == 1
    assert dashscope_emulator.open_connections == 1


async def test_closing_the_client_interrupts_running_streams(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    client = make_client(dashscope_emulator)
    dashscope_emulator.enqueue(Reply(**SLOW), Reply(first_byte_delay=3))
    got_content = asyncio.Event()

    async def with_content() -> None:
        async for _ in client.generate_stream("x"):
            got_content.set()

    async def before_content() -> None:
        await client.generate("y")

    tasks = [asyncio.create_task(with_content())]
    await got_content.wait()  # the first request has taken the first reply
    tasks.append(asyncio.create_task(before_content()))
    assert await eventually(lambda: len(dashscope_emulator.requests) == 2)
    await client.aclose()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], StreamInterruptedError)
    assert results[0].partial is not None
    assert type(results[1]) is APIConnectionError
    assert "closed" in str(results[1])
    assert await closed_on_server(dashscope_emulator)


async def test_many_concurrent_streams_use_one_connection_each(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(*[Reply(text=["a", "b"], frame_delay=0.05)] * 20)
    outputs = await asyncio.gather(*(client.generate("x") for _ in range(20)))
    assert {o.text for o in outputs} == {"ab"}
    assert dashscope_emulator.connections == 20
