"""Memory bounds (50 MiB frame, endless line) and leak checks over many failing calls."""

from __future__ import annotations

import asyncio
import random
import socket
import threading

import aiohttp
import pytest

from aiotongyi import ProtocolError, Timeout, TongyiError, TongyiLLMClient
from aiotongyi._sse import MAX_EVENT_BYTES
from aiotongyi.testing import DashScopeEmulator, ErrorEvent, Reply, http_error

from . import helpers
from .helpers import (
    MODES,
    Baseline,
    check_outcome,
    fd_count,
    no_resource_warnings_or_loop_errors,
    peak_rss_bytes,
    prefix,
    reply,
    reset_peak_rss,
    rss_bytes,
    run_async,
    run_case,
)

MiB = 1024 * 1024
BIG = 50 * MiB
CALLS = 120


@pytest.mark.parametrize("mode", ["stream_with", "sync_generate"])
def test_a_50_mib_frame_decodes(mode: str, dashscope_emulator: DashScopeEmulator) -> None:
    text = "龙" * (BIG // 3)  # 50 MiB of UTF-8 in one data: line
    outcome = run_case(
        mode,
        dashscope_emulator,
        [Reply(text=[text], request_id="rid-big")],
        timeout=Timeout(connect=1, read=10),
    )
    check_outcome(mode, outcome, error=None, partial=None, requests=1, text=text)


@pytest.mark.parametrize("mode", MODES)
def test_an_endless_line_stops_at_the_event_cap(
    mode: str, dashscope_emulator: DashScopeEmulator
) -> None:
    """No frame boundary ever: ProtocolError at 64 MiB, and memory stays bounded."""
    can_reset = reset_peak_rss()
    before = rss_bytes()
    outcome = run_case(
        mode,
        dashscope_emulator,
        [Reply(endless=True)],
        timeout=Timeout(connect=1, read=10),
    )
    check_outcome(mode, outcome, error=ProtocolError, partial=None, requests=1)
    assert str(MAX_EVENT_BYTES) in str(outcome.error)
    grown = (peak_rss_bytes() if can_reset else rss_bytes()) - before
    # The cap itself is 64 MiB; the emulator shares this process and adds its
    # own write buffers, so the bound is the 100 MB.
    assert grown < 100 * 1000 * 1000, f"RSS grew by {grown / MiB:.1f} MiB"


def _random_fault(rng: random.Random) -> tuple[Reply, type[BaseException] | None, str | None]:
    kind = rng.randrange(6)
    if kind == 0:
        return reply(drop_after_frames=2), TongyiError, prefix(2)
    if kind == 1:
        return http_error(400, body=rng.choice(["json", "html", "empty"])), TongyiError, None
    if kind == 2:
        event = ErrorEvent("Throttling.RateQuota", "busy", 429, after_frames=1)
        return reply(error_event=event), TongyiError, prefix(1)
    if kind == 3:
        return reply(malformed_frame_at=3), ProtocolError, prefix(3)
    if kind == 4:
        return reply(stall_after_frames=1, stall_seconds=0.3), TongyiError, prefix(1)
    return reply(), None, None


def test_one_client_through_many_failures_leaks_nothing(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    """Many calls (most of them failing) on one client: fds and pool back to baseline."""
    rng = random.Random(7)
    baseline = Baseline(dashscope_emulator)
    client = TongyiLLMClient(
        api_key=dashscope_emulator.api_key,
        base_url=dashscope_emulator.base_url,
        timeout=Timeout(connect=1, read=0.1),
        max_retries=0,
        # One connection: a call that kept its connection checked out would
        # make every later call wait for it and time out.
        max_connections=1,
        retry_policy=helpers.RETRY_POLICY,
    )
    outcomes: dict[str, int] = {}

    async def main() -> None:
        for _ in range(CALLS):
            script, error, partial = _random_fault(rng)
            dashscope_emulator.enqueue(script)
            last = None
            try:
                async with client.generate_stream("x") as stream:
                    async for output in stream:
                        last = output
            except TongyiError as exc:
                assert error is not None and isinstance(exc, error), repr(exc)
                assert exc.partial == last
                assert (None if last is None else last.text) == partial
                outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
            else:
                assert error is None
                outcomes["ok"] = outcomes.get("ok", 0) + 1
        assert dashscope_emulator.open_connections <= 1
        await client.aclose()

    with no_resource_warnings_or_loop_errors():
        run_async(main)
    baseline.check()
    assert sum(outcomes.values()) == CALLS and len(outcomes) >= 4, outcomes


# -- the probes themselves must be able to fail ---------------------------------------


def test_the_probes_catch_an_unclosed_session() -> None:
    async def leak() -> None:
        session = aiohttp.ClientSession()
        assert not session.closed  # dropped unclosed on purpose

    with pytest.raises(AssertionError, match="Unclosed"):
        with no_resource_warnings_or_loop_errors():
            asyncio.run(leak())


def test_the_probes_catch_a_leaked_task() -> None:
    async def leak() -> None:
        asyncio.get_running_loop().create_task(asyncio.sleep(10))

    with pytest.raises(AssertionError, match="tasks left running"):
        run_async(leak)


def test_the_probes_catch_leaked_fds_and_threads(dashscope_emulator: DashScopeEmulator) -> None:
    baseline = Baseline(dashscope_emulator)
    sock = socket.socket()
    try:
        with pytest.raises(AssertionError, match="fd leak"):
            baseline.check(within=0.1)
    finally:
        sock.close()
    assert fd_count() <= baseline.fds
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="leaked-on-purpose")
    thread.start()
    try:
        with pytest.raises(AssertionError, match="leaked-on-purpose"):
            baseline.check(within=0.1)
    finally:
        stop.set()
        thread.join()
