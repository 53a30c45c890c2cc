"""Soak: 100 concurrent streams for a time budget, with random faults at a set rate.

Run it with ``pytest -m soak tests/reliability/test_soak.py`` (``.ci/soak.sh``);
``AIOTONGYI_SOAK_SECONDS`` sets the budget (default 60), ``AIOTONGYI_SOAK_FAULT_RATE``
the share of streams that get a fault (default 0.3). Every stream must end
with its full text or with the documented error and the right ``partial``;
at the end fds, threads and tasks are back to baseline and RSS is within
20 MB of the baseline taken after warm-up. The figures are printed.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest

from aiotongyi import (
    APIConnectionError,
    APITimeoutError,
    ModelOutput,
    ProtocolError,
    RateLimitError,
    StreamInterruptedError,
    Timeout,
    TongyiError,
    TongyiLLMClient,
)
from aiotongyi.testing import DashScopeEmulator, ErrorEvent, Reply, http_error

from . import helpers
from .helpers import TEXT, fd_count, frames_of, rss_bytes

pytestmark = pytest.mark.soak

SECONDS = float(os.environ.get("AIOTONGYI_SOAK_SECONDS", "60"))
FAULT_RATE = float(os.environ.get("AIOTONGYI_SOAK_FAULT_RATE", "0.3"))
CONCURRENCY = 100
SYNC_WORKERS = 10  # of the 100: threads on the sync bridge, the rest are asyncio tasks
WARM_UP = min(5.0, max(1.0, SECONDS / 10))
RSS_SLACK = 20 * 1000 * 1000
READ = 2.0  # generous: 100 streams share 2 cores with the emulator

# fault -> (error class, frames the partial covers, or None for a success after a retry)
FAULTS: dict[str, tuple[type[TongyiError] | None, int]] = {
    "drop1": (StreamInterruptedError, 1),
    "drop3": (StreamInterruptedError, 3),
    "mid_char": (StreamInterruptedError, 1),
    "event2": (RateLimitError, 2),
    "malformed2": (ProtocolError, 2),
    "stall1": (APITimeoutError, 1),
    "reset_then_ok": (None, 0),
    "http503_then_ok": (None, 0),
    "drop0_then_ok": (None, 0),
}
# Drops reset the TCP connection: aiohttp discards bytes it had received but not
# yet handed over, so the caller may have seen fewer frames (never more).
RESETS = {"drop1", "drop3", "mid_char"}


def texts_for(n: int) -> list[str]:
    return [*TEXT, f"#{n}"]


class Router:
    """Answers each request by the fault named in its prompt (``soak|n|fault``).

    The emulator calls its ``default_reply(body)`` when its queue is empty, so routing by
    prompt keeps each concurrent stream's script deterministic.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: Counter[str] = Counter()
        self.requests = 0

    def __call__(self, payload: dict[str, Any]) -> Reply:
        user_text = payload["input"]["messages"][-1]["content"]
        _, number, fault = user_text.split("|")
        n = int(number)
        with self._lock:
            self._attempts[user_text] += 1
            attempt = self._attempts[user_text]
            self.requests += 1
        text = texts_for(n)
        rid = f"rid-{n}"
        if fault == "drop1":
            return Reply(text=text, drop_after_frames=1, request_id=rid)
        if fault == "drop3":
            return Reply(text=text, drop_after_frames=3, request_id=rid)
        if fault == "mid_char":
            return Reply(text=text, drop_after_bytes=MID_CHAR, request_id=rid)
        if fault == "event2":
            event = ErrorEvent("Throttling.RateQuota", "busy", 429, after_frames=2)
            return Reply(text=text, error_event=event, request_id=rid)
        if fault == "malformed2":
            return Reply(text=text, malformed_frame_at=2, request_id=rid)
        if fault == "stall1":
            return Reply(text=text, stall_after_frames=1, stall_seconds=READ + 1, request_id=rid)
        if attempt == 1 and fault == "reset_then_ok":
            return Reply(reset_before_status=True)
        if attempt == 1 and fault == "http503_then_ok":
            return http_error(503, body="html", retry_after=0)
        if attempt == 1 and fault == "drop0_then_ok":
            return Reply(text=text, drop_after_frames=0, request_id=rid)
        return Reply(text=text, request_id=rid)

    def forget(self, user_text: str) -> None:
        with self._lock:
            self._attempts.pop(user_text, None)


_FRAMES = frames_of(Reply(text=texts_for(0), request_id="rid-0"))
MID_CHAR = len(_FRAMES[0]) + _FRAMES[1].index(TEXT[1][0].encode()) + 1


@dataclass
class Tally:
    completed: int = 0
    short_partials: int = 0  # a reset ate frames the caller had not read yet (allowed)
    errors: Counter[str] | None = None
    problems: list[str] | None = None

    def __post_init__(self) -> None:
        self.errors = Counter()
        self.problems = []
        self._lock = threading.Lock()

    def record(
        self,
        n: int,
        fault: str,
        seen: list[ModelOutput],
        error: BaseException | None,
        streamed: bool,
    ) -> None:
        with self._lock:
            self._record(n, fault, seen, error, streamed)

    def _record(
        self,
        n: int,
        fault: str,
        seen: list[ModelOutput],
        error: BaseException | None,
        streamed: bool,
    ) -> None:
        assert self.errors is not None and self.problems is not None
        full = "".join(texts_for(n))
        expected, frames = FAULTS.get(fault, (None, 0))
        if error is None:
            final = seen[-1] if seen else None
            if expected is not None or final is None or final.text != full:
                self.problems.append(
                    f"{n}/{fault}: ended without error, text={final and final.text!r}"
                )
            else:
                self.completed += 1
            return
        self.errors[type(error).__name__] += 1
        if not isinstance(error, TongyiError):
            self.problems.append(f"{n}/{fault}: undocumented {error!r}")
            return
        partial = error.partial
        if streamed and partial != (seen[-1] if seen else None):
            self.problems.append(f"{n}/{fault}: partial is not the last output seen")
        want = "".join(texts_for(n)[:frames])
        got = None if partial is None else partial.text
        if type(error) is expected and got == want:
            return
        if fault in RESETS and expected is not None:
            # fewer frames reached the caller: a frame-aligned shorter partial, or
            # none at all (then it is a pre-content failure, retried and reported
            # as APIConnectionError)
            aligned = {"".join(texts_for(n)[:k]) for k in range(1, frames)}
            if (type(error) is StreamInterruptedError and got in aligned) or (
                type(error) is APIConnectionError and got is None
            ):
                self.short_partials += 1
                return
        self.problems.append(
            f"{n}/{fault}: {type(error).__name__} partial={got!r}, wanted "
            f"{getattr(expected, '__name__', None)} partial={want!r}"
        )


def test_soak(
    dashscope_emulator: DashScopeEmulator,
    capsys: pytest.CaptureFixture[str],
) -> None:
    router = Router()
    dashscope_emulator.default_reply = router
    rng = random.Random(int(os.environ.get("AIOTONGYI_SOAK_SEED", "20240601")))
    rng_lock = threading.Lock()
    counter = iter(range(10**9))
    tally = Tally()
    gc.collect()
    fds_before, threads_before = fd_count(), threading.active_count()

    def next_job() -> tuple[int, str]:
        with rng_lock:
            n = next(counter)
            fault = rng.choice(list(FAULTS)) if rng.random() < FAULT_RATE else "none"
        return n, fault

    client = TongyiLLMClient(
        api_key=dashscope_emulator.api_key,
        base_url=dashscope_emulator.base_url,
        timeout=Timeout(connect=5, read=READ),
        max_retries=2,
        max_connections=CONCURRENCY + 10,
        retry_policy=helpers.RETRY_POLICY,
    )
    deadline = 0.0
    stop_sync = threading.Event()

    def sync_worker(seed: int) -> None:
        local = random.Random(seed)
        while not stop_sync.is_set() and time.monotonic() < deadline:
            n, fault = next_job()
            prompt = f"soak|{n}|{fault}"
            seen: list[ModelOutput] = []
            error: BaseException | None = None
            streamed = local.random() < 0.5
            try:
                if streamed:
                    seen.extend(client.sync_generate_stream(prompt))  # keeps what came
                else:
                    seen.append(client.sync_generate(prompt))
            except Exception as exc:  # classified by the tally
                error = exc
            router.forget(prompt)
            tally.record(n, fault, seen, error, streamed)

    async def async_worker(seed: int) -> None:
        local = random.Random(seed)
        while asyncio.get_running_loop().time() < loop_deadline:
            n, fault = next_job()
            prompt = f"soak|{n}|{fault}"
            seen: list[ModelOutput] = []
            error: BaseException | None = None
            mode = local.choice(["stream_with", "stream_bare", "generate"])
            try:
                if mode == "stream_with":
                    async with client.generate_stream(prompt) as stream:
                        async for output in stream:
                            seen.append(output)
                elif mode == "stream_bare":
                    async for output in client.generate_stream(prompt):
                        seen.append(output)
                else:
                    seen.append(await client.generate(prompt))
            except Exception as exc:
                error = exc
            router.forget(prompt)
            tally.record(n, fault, seen, error, mode != "generate")

    async def phase(seconds: float) -> None:
        nonlocal deadline, loop_deadline
        deadline = time.monotonic() + seconds
        loop_deadline = asyncio.get_running_loop().time() + seconds
        threads = [
            threading.Thread(target=sync_worker, args=(1000 + i,), name=f"soak-sync-{i}")
            for i in range(SYNC_WORKERS)
        ]
        for thread in threads:
            thread.start()
        trimmer = asyncio.create_task(trim_request_log(seconds))
        await asyncio.gather(*(async_worker(i) for i in range(CONCURRENCY - SYNC_WORKERS)))
        await trimmer
        await asyncio.get_running_loop().run_in_executor(None, _join, threads)

    async def trim_request_log(seconds: float) -> None:
        # The emulator logs every request (body, headers) until reset(); over
        # tens of thousands of streams that log, not the client, would be the
        # RSS growth. Routing needs no queue, so resetting loses nothing.
        end = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < end:
            dashscope_emulator.reset()
            await asyncio.sleep(0.2)
        dashscope_emulator.reset()

    loop_deadline = 0.0
    figures: dict[str, Any] = {}

    async def main() -> None:
        await phase(WARM_UP)
        gc.collect()
        figures["rss_after_warm_up"] = rss_bytes()
        figures["fds_after_warm_up"] = fd_count()
        started = router.requests
        t0 = time.monotonic()
        await phase(SECONDS)
        figures["elapsed"] = time.monotonic() - t0
        figures["requests_in_budget"] = router.requests - started
        gc.collect()
        figures["rss_end"] = rss_bytes()
        figures["fds_end_pooled"] = fd_count()
        await client.aclose()
        others = asyncio.all_tasks() - {asyncio.current_task()}
        figures["tasks_left"] = len(others)

    try:
        asyncio.run(main())
    finally:
        stop_sync.set()
        client.close()
    assert dashscope_emulator.wait_for_open_connections(0, 5)
    deadline_fds = time.monotonic() + 5
    while fd_count() > fds_before and time.monotonic() < deadline_fds:
        time.sleep(0.01)
    figures.update(
        streams_completed=tally.completed,
        short_partials_after_reset=tally.short_partials,
        errors_by_class=dict(tally.errors or {}),
        streams_total=tally.completed + sum((tally.errors or Counter()).values()),
        fds_before=fds_before,
        fds_after=fd_count(),
        threads_before=threads_before,
        threads_after=threading.active_count(),
        rss_growth_mb=round((figures["rss_end"] - figures["rss_after_warm_up"]) / 1e6, 1),
        seconds=SECONDS,
        fault_rate=FAULT_RATE,
        concurrency=CONCURRENCY,
    )
    with capsys.disabled():
        sys.stdout.write("\nsoak figures: " + json.dumps(figures, indent=1) + "\n")
    assert not tally.problems, tally.problems[:20]
    assert figures["tasks_left"] == 0
    assert figures["fds_after"] <= fds_before, figures
    assert figures["threads_after"] <= threads_before, figures
    assert figures["rss_end"] - figures["rss_after_warm_up"] < RSS_SLACK, figures
    assert tally.completed > 0 and sum((tally.errors or Counter()).values()) > 0


def _join(threads: list[threading.Thread]) -> None:
    for thread in threads:
        thread.join()
