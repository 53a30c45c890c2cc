"""The sync bridge: one loop thread per client, usable from any thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing

import pytest

from aiotongyi import BadRequestError, RetryPolicy, StreamInterruptedError, TongyiLLMClient
from aiotongyi.testing import DashScopeEmulator, ErrorEvent, Reply, http_error

from ..conftest import make_client

SLOW = {"text": [f"t{i} " for i in range(200)], "frame_delay": 0.01}


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "aiotongyi-loop"]


def test_sync_stream_yields_cumulative_outputs(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["春眠", "不觉晓"]))
    outputs = list(sync_client.sync_generate_stream("x", temperature=0))
    assert [o.text for o in outputs] == ["春眠", "春眠不觉晓", "春眠不觉晓"]
    assert outputs[-1].finish_reason == "stop"
    assert dashscope_emulator.requests[0].json["parameters"]["temperature"] == 0


def test_sync_generate(sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(Reply(text=["a", "b"]))
    assert sync_client.sync_generate("x").text == "ab"


def test_one_loop_thread_per_client_started_lazily(dashscope_emulator: DashScopeEmulator) -> None:
    before = len(loop_threads())
    client = make_client(dashscope_emulator)
    assert len(loop_threads()) == before
    for _ in range(3):
        client.sync_generate("x")
    assert len(loop_threads()) == before + 1
    assert dashscope_emulator.connections == 1
    client.close()
    assert len(loop_threads()) == before


def test_validation_errors_are_raised_at_call_time(sync_client: TongyiLLMClient) -> None:
    with pytest.raises(ValueError, match="temperature"):
        sync_client.sync_generate_stream("x", temperature=5)


def test_errors_cross_the_thread_boundary_with_partial(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(
        Reply(text=["a", "b"], error_event=ErrorEvent("DataInspectionFailed", "x", after_frames=1))
    )
    seen = []
    with pytest.raises(BadRequestError) as info:
        for out in sync_client.sync_generate_stream("x"):
            seen.append(out.text)
    assert seen == ["a"]
    assert info.value.partial is not None
    assert info.value.partial.text == "a"


def test_truncation_raises_in_the_caller(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["a"], finish_reason=None))
    with pytest.raises(StreamInterruptedError):
        sync_client.sync_generate("x")


def test_api_errors_raise_in_the_caller(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(http_error(400, "InvalidParameter", "bad"))
    with pytest.raises(BadRequestError):
        list(sync_client.sync_generate_stream("x"))


def test_closing_the_iterator_closes_the_response_within_a_second(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(**SLOW))
    with closing(sync_client.sync_generate_stream("x")) as outputs:
        next(outputs)
    started = time.monotonic()
    assert dashscope_emulator.wait_for_open_connections(0, timeout=1.0)
    assert time.monotonic() - started < 1.0


def test_breaking_out_and_dropping_the_iterator_closes_the_response(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(**SLOW))
    for _ in sync_client.sync_generate_stream("x"):
        break
    assert dashscope_emulator.wait_for_open_connections(0, timeout=1.0)


def test_keyboard_interrupt_in_the_loop_body_closes_the_response(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(**SLOW))
    with pytest.raises(KeyboardInterrupt):
        for _ in sync_client.sync_generate_stream("x"):
            raise KeyboardInterrupt
    assert dashscope_emulator.wait_for_open_connections(0, timeout=1.0)


def test_next_calls_may_come_from_different_threads(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=[str(i) for i in range(10)]))
    iterator = sync_client.sync_generate_stream("x")
    texts = []
    with ThreadPoolExecutor(4) as pool:
        while True:
            out = pool.submit(next, iterator, None).result()
            if out is None:
                break
            texts.append(out.text)
    assert texts[-1] == "0123456789"


def test_works_from_a_thread_running_its_own_event_loop(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["inside"]))

    async def legacy_code_inside_async_app() -> str:
        return sync_client.sync_generate("x").text

    assert asyncio.run(legacy_code_inside_async_app()) == "inside"


def test_fifty_threads_share_one_client(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    def one(i: int) -> str:
        return "".join(o.delta for o in sync_client.sync_generate_stream(f"n{i}"))

    with ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(one, range(50)))
    assert answers == [f"Hello! You said: n{i}" for i in range(50)]
    assert dashscope_emulator.connections <= 50


def test_caller_executor_hosts_the_loop_until_close(dashscope_emulator: DashScopeEmulator) -> None:
    with ThreadPoolExecutor(2, thread_name_prefix="caller") as executor:
        client = make_client(dashscope_emulator, executor=executor)
        before = {t.name for t in threading.enumerate()}
        client.sync_generate("x")
        started = {t.name for t in threading.enumerate()} - before
        assert len(started) == 1 and next(iter(started)).startswith("caller"), started
        client.close()
        # the worker is free again: both workers take a task at once
        barrier = threading.Barrier(2, timeout=2)
        assert list(executor.map(lambda _: barrier.wait() >= 0, range(2))) == [True, True]


def test_sync_and_async_use_on_one_client(dashscope_emulator: DashScopeEmulator) -> None:
    client = make_client(dashscope_emulator)
    assert client.sync_generate("a").finish_reason == "stop"
    assert asyncio.run(client.generate("b")).finish_reason == "stop"
    assert client.sync_generate("c").finish_reason == "stop"
    client.close()
    assert dashscope_emulator.wait_for_open_connections(0)


def test_calling_the_sync_api_from_the_loop_thread_is_refused(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    class CallsBackIn(RetryPolicy):
        def delay(self, attempt: int, headers: Mapping[str, str] | None, jitter: float) -> float:
            sync_client.sync_generate("inner")  # runs on the client's loop thread
            return 0.0

    dashscope_emulator.enqueue(http_error(503))
    client = sync_client.with_options(retry_policy=CallsBackIn())
    with pytest.raises(RuntimeError, match="loop thread"):
        client.sync_generate("x")
