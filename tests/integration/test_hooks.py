"""Request hooks: what each call form and lifecycle path tells them, and what it costs."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import sys
import threading
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any

import pytest

from aiotongyi import (
    BadRequestError,
    CallInfo,
    Hooks,
    ModelOutput,
    TongyiError,
    TongyiLLMClient,
)
from aiotongyi.testing import DashScopeEmulator, Reply, http_error

from ..conftest import eventually, make_client

SLOW = {"text": [f"t{i} " for i in range(200)], "frame_delay": 0.01}
HOOKS_FILE = Hooks.on_end.__code__.co_filename
tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="none")


class Recorder(Hooks):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.ends: list[CallInfo] = []
        self.threads: set[str] = set()

    def on_request(self, call: CallInfo, attempt: int) -> None:
        self.threads.add(threading.current_thread().name)
        self.events.append(("request", attempt, call.context.run(tenant.get)))

    def on_response(self, call: CallInfo, status: int, request_id: str | None) -> None:
        self.events.append(("response", status, request_id))

    def on_retry(self, call: CallInfo, delay: float, error: TongyiError) -> None:
        self.events.append(("retry", round(delay, 3), type(error).__name__))

    def on_first_content(self, call: CallInfo, output: ModelOutput) -> None:
        self.events.append(("first", output.text))

    def on_end(self, call: CallInfo) -> None:
        self.ends.append(call)
        self.events.append(
            (
                "end",
                None if call.output is None else call.output.text,
                type(call.error).__name__ if call.error else None,
                call.closed_early,
                call.cancelled,
            )
        )


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


async def test_a_call_tells_every_step_in_order(
    dashscope_emulator: DashScopeEmulator, recorder: Recorder
) -> None:
    dashscope_emulator.enqueue(Reply(text=["你好", "世界"], request_id="rid-1", usage=(5, 2)))
    tenant.set("acme")
    async with make_client(dashscope_emulator, hooks=recorder) as client:
        output = await client.generate("hi")
    assert output.text == "你好世界"
    assert recorder.events == [
        ("request", 0, "acme"),
        ("response", 200, "rid-1"),
        ("first", "你好"),
        ("end", "你好世界", None, False, False),
    ]
    call = recorder.ends[0]
    assert call.model == "qwen-turbo"
    assert call.operation == "chat"
    assert call.request_id == "rid-1"
    assert call.messages == [{"role": "user", "content": "hi"}]


async def test_retries_are_told_with_their_delay_and_error(
    dashscope_emulator: DashScopeEmulator, recorder: Recorder
) -> None:
    dashscope_emulator.enqueue(
        http_error(503, retry_after=1, request_id="bad"), Reply(text="ok", request_id="good")
    )
    async with make_client(dashscope_emulator, hooks=[recorder]) as client:
        await client.generate("hi")
    assert recorder.events == [
        ("request", 0, "none"),
        ("response", 503, "bad"),
        ("retry", 1.0, "ServerError"),
        ("request", 1, "none"),
        ("response", 200, "good"),
        ("first", "ok"),
        ("end", "ok", None, False, False),
    ]


async def test_a_failed_call_ends_once_with_its_error(
    dashscope_emulator: DashScopeEmulator, recorder: Recorder
) -> None:
    dashscope_emulator.enqueue(http_error(400, "InvalidParameter"))
    async with make_client(dashscope_emulator, hooks=recorder) as client:
        with pytest.raises(BadRequestError):
            await client.generate("hi")
    assert recorder.events[-1] == ("end", None, "BadRequestError", False, False)
    assert [e[0] for e in recorder.events].count("end") == 1


async def test_early_close_is_not_an_error(
    dashscope_emulator: DashScopeEmulator, recorder: Recorder
) -> None:
    dashscope_emulator.enqueue(Reply(**SLOW))
    async with make_client(dashscope_emulator, hooks=recorder) as client:
        async with client.generate_stream("x") as stream:
            async for _ in stream:
                break
        await stream.aclose()
    assert recorder.events[-1] == ("end", "t0 ", None, True, False)
    assert len(recorder.ends) == 1


async def test_reading_to_the_end_then_closing_is_not_an_early_close(
    dashscope_emulator: DashScopeEmulator, recorder: Recorder
) -> None:
    dashscope_emulator.enqueue(Reply(text=["a", "b"]))
    async with make_client(dashscope_emulator, hooks=recorder) as client:
        async with client.generate_stream("x") as stream:
            async for output in stream:
                if output.finish_reason == "stop":
                    break
    assert recorder.events[-1] == ("end", "ab", None, False, False)


async def test_cancellation_ends_the_call_as_cancelled(
    dashscope_emulator: DashScopeEmulator, recorder: Recorder
) -> None:
    dashscope_emulator.enqueue(Reply(**SLOW))
    async with make_client(dashscope_emulator, hooks=recorder) as client:
        started = asyncio.Event()

        async def consume() -> None:
            async with client.generate_stream("x") as stream:
                async for _ in stream:
                    started.set()

        task = asyncio.create_task(consume())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert recorder.events[-1][0] == "end"
    assert recorder.events[-1][3:] == (False, True)
    assert len(recorder.ends) == 1


async def test_a_dropped_unclosed_stream_ends_when_collected(
    dashscope_emulator: DashScopeEmulator, recorder: Recorder
) -> None:
    dashscope_emulator.enqueue(Reply(**SLOW))
    async with make_client(dashscope_emulator, hooks=recorder) as client:
        async for _ in client.generate_stream("x"):
            break
        gc.collect()
        assert await eventually(lambda: len(recorder.ends) == 1)
    assert recorder.events[-1][3] is True  # closed early


async def test_a_failing_hook_is_logged_and_the_call_goes_on(
    dashscope_emulator: DashScopeEmulator, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Hooks):
        def on_request(self, call: CallInfo, attempt: int) -> None:
            raise RuntimeError("boom")

        def on_first_content(self, call: CallInfo, output: ModelOutput) -> None:
            raise KeyError("boom")

        def on_end(self, call: CallInfo) -> None:
            raise ValueError("boom")

    dashscope_emulator.enqueue(Reply(text="fine"))
    with caplog.at_level(logging.ERROR, logger="aiotongyi"):
        async with make_client(dashscope_emulator, hooks=[Broken(), recorder]) as client:
            output = await client.generate("hi")
    assert output.text == "fine"
    assert recorder.events[-1] == ("end", "fine", None, False, False)
    failed = [r.getMessage() for r in caplog.records]
    assert failed == [
        "aiotongyi hook Broken.on_request failed",
        "aiotongyi hook Broken.on_first_content failed",
        "aiotongyi hook Broken.on_end failed",
    ]


def test_sync_calls_run_hooks_on_the_loop_with_the_callers_context(
    dashscope_emulator: DashScopeEmulator, recorder: Recorder
) -> None:
    dashscope_emulator.enqueue(Reply(text=["a", "b"]), Reply(**SLOW))
    with make_client(dashscope_emulator, hooks=recorder) as client:
        tenant.set("sync-caller")
        assert client.sync_generate("hi").text == "ab"
        for _ in client.sync_generate_stream("x"):
            break
    assert recorder.events[0] == ("request", 0, "sync-caller")
    assert recorder.threads == {"aiotongyi-loop"}
    ends = [e for e in recorder.events if e[0] == "end"]
    assert ends[0] == ("end", "ab", None, False, False)
    assert len(ends) == 2  # the broken-off stream ended too (closed or cancelled, not an error)
    assert ends[1][2] is None and (ends[1][3] or ends[1][4])


def test_hooks_are_checked_at_construction(dashscope_emulator: DashScopeEmulator) -> None:
    with pytest.raises(ValueError, match="hooks must be"):
        make_client(dashscope_emulator, hooks=[object()])


# -- cost: nothing per frame --------------------------------------------------------------


def _hook_calls(client: TongyiLLMClient, frames: int, emulator: DashScopeEmulator) -> int:
    """Calls into aiotongyi._hooks (the pass-through generator aside) during one stream."""
    emulator.enqueue(Reply(text=["x"] * frames))
    calls = 0

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal calls
        code = frame.f_code
        if event == "call" and code.co_filename == HOOKS_FILE and code.co_name != "watch":
            calls += 1

    async def run() -> None:
        sys.setprofile(profile)
        try:
            async with client.generate_stream("x") as stream:
                async for _ in stream:
                    pass
        finally:
            sys.setprofile(None)

    asyncio.run(run())
    return calls


@pytest.fixture
def plain_and_hooked(
    dashscope_emulator: DashScopeEmulator, recorder: Recorder
) -> Iterator[Sequence[TongyiLLMClient]]:
    plain = make_client(dashscope_emulator)
    hooked = make_client(dashscope_emulator, hooks=recorder)
    yield plain, hooked
    plain.close()
    hooked.close()


def test_without_hooks_no_hook_code_runs_and_with_them_none_runs_per_frame(
    dashscope_emulator: DashScopeEmulator, plain_and_hooked: Sequence[TongyiLLMClient]
) -> None:
    plain, hooked = plain_and_hooked
    assert _hook_calls(plain, 5, dashscope_emulator) == 0
    assert _hook_calls(plain, 300, dashscope_emulator) == 0
    few = _hook_calls(hooked, 5, dashscope_emulator)
    many = _hook_calls(hooked, 300, dashscope_emulator)
    assert few > 0
    assert many == few  # per call, never per frame


async def test_an_on_chunk_hook_sees_every_output_and_may_fail_alone(
    dashscope_emulator: DashScopeEmulator, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    class Chunks(Hooks):
        def __init__(self) -> None:
            self.outputs: list[str] = []

        def on_chunk(self, call: CallInfo, outputs: Sequence[ModelOutput]) -> None:
            self.outputs += [o.delta for o in outputs]

    class BrokenChunks(Hooks):
        def on_chunk(self, call: CallInfo, outputs: Sequence[ModelOutput]) -> None:
            raise RuntimeError("boom")

    chunks = Chunks()
    dashscope_emulator.enqueue(Reply(text=["a", "b", "c"], frame_delay=0.01))
    with caplog.at_level(logging.ERROR, logger="aiotongyi"):
        async with make_client(
            dashscope_emulator, hooks=[BrokenChunks(), chunks, recorder]
        ) as client:
            assert (await client.generate("hi")).text == "abc"
    assert "".join(chunks.outputs) == "abc"
    assert recorder.events[-1] == ("end", "abc", None, False, False)
    assert all("on_chunk failed" in r.getMessage() for r in caplog.records)
    assert caplog.records
