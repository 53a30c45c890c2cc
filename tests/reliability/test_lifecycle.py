"""The lifecycle promises of issue 14: close, exit, garbage collection, in any order.

Part one reproduces the six failures the issue saw, each asserting the
documented outcome.  Part two is the lifecycle matrix: {async, sync, sync in a
caller's executor} x {who ends it} x {where the call waits}; every cell ends
within a second with the documented typed error (``APIConnectionError``
before content, ``StreamInterruptedError`` after) or a clean end, and leaves
no thread, task, fd, open connection or warning behind.

Time is controlled through the documented seam, a :class:`RetryPolicy`
subclass (real waits, but a signal when one begins); phases come from the
emulator's fault injection.  Only observable behaviour is asserted.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from typing import Any

import pytest

from aiotongyi import (
    APIConnectionError,
    Hooks,
    ModelOutput,
    RateLimiter,
    RetryPolicy,
    StreamInterruptedError,
    Timeout,
    TongyiError,
    TongyiLLMClient,
)
from aiotongyi.testing import DashScopeEmulator, Reply, http_error

from .helpers import (
    PROMPT,
    Baseline,
    await_until,
    no_resource_warnings_or_loop_errors,
    run_async,
    wait_until,
)

LOOP_THREAD = "aiotongyi-loop"
#: How soon a call must end once it is ended (seconds).
WITHIN = 1.0


class SignalPolicy(RetryPolicy):
    """The default policy, real waits included; ``in_backoff`` is set when a wait begins."""

    def __init__(self) -> None:
        super().__init__()
        self.in_backoff = threading.Event()

    def delay(self, attempt: int, headers: Mapping[str, str] | None, jitter: float) -> float:
        self.in_backoff.set()
        return super().delay(attempt, headers, jitter)


def loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == LOOP_THREAD]


def make_client(emulator: DashScopeEmulator, **kwargs: Any) -> TongyiLLMClient:
    kwargs.setdefault("api_key", emulator.api_key)
    kwargs.setdefault("base_url", emulator.base_url)
    kwargs.setdefault("timeout", Timeout(connect=5, read=10))
    return TongyiLLMClient(**kwargs)


def long_reply(frames: int = 200, frame_delay: float = 0.02) -> Reply:
    """An answer far longer than any cell, one short frame at a time."""
    return Reply(text=[f"t{i} " for i in range(frames)], frame_delay=frame_delay)


@contextmanager
def clean_case(emulator: DashScopeEmulator) -> Iterator[None]:
    """No ResourceWarning, asyncio error log, thread, fd or connection outlives the case."""
    baseline = Baseline(emulator)
    with no_resource_warnings_or_loop_errors():
        yield
    baseline.check()


def in_thread(target: Callable[[], object]) -> tuple[threading.Thread, list[BaseException | None]]:
    """Run ``target`` in a thread; its exception (or ``None``) lands in the list."""
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            result.append(exc)
        else:
            result.append(None)

    thread = threading.Thread(target=run, name="caller")
    thread.start()
    return thread, result


def run_script(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-W", "error", "-c", textwrap.dedent(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# -- part one: the six failures the issue saw ---------------------------------------


def test_aclose_during_a_retry_backoff_raises_api_connection_error_at_once(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    dashscope_emulator.enqueue(http_error(503, retry_after=3), Reply(text=["late"]))
    policy = SignalPolicy()
    with clean_case(dashscope_emulator):

        async def main() -> None:
            client = make_client(dashscope_emulator, retry_policy=policy)
            task = asyncio.create_task(client.generate(PROMPT))
            assert await await_until(policy.in_backoff.is_set)
            started = time.monotonic()
            await client.aclose()
            (error,) = await asyncio.gather(task, return_exceptions=True)
            assert time.monotonic() - started < WITHIN
            assert type(error) is APIConnectionError, repr(error)
            assert "closed" in str(error)

        run_async(main)
    assert len(dashscope_emulator.requests) == 1  # the retry was never sent


def test_close_from_another_thread_during_a_sync_backoff_raises_a_typed_error(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    dashscope_emulator.enqueue(http_error(503, retry_after=3), Reply(text=["late"]))
    policy = SignalPolicy()
    with clean_case(dashscope_emulator):
        client = make_client(dashscope_emulator, retry_policy=policy)
        thread, result = in_thread(lambda: client.sync_generate(PROMPT))
        assert policy.in_backoff.wait(5)
        started = time.monotonic()
        client.close()
        thread.join(5)
        assert time.monotonic() - started < WITHIN
        assert type(result[0]) is APIConnectionError, repr(result[0])
    assert len(dashscope_emulator.requests) == 1


@pytest.mark.parametrize("closer", ["same thread", "other thread"])
def test_close_while_a_sync_reader_lags_gives_the_buffered_items_then_a_typed_error(
    dashscope_emulator: DashScopeEmulator, closer: str
) -> None:
    dashscope_emulator.enqueue(long_reply(frame_delay=0.005))
    with clean_case(dashscope_emulator):
        client = make_client(dashscope_emulator)
        seen: list[ModelOutput] = []
        with closing(client.sync_generate_stream(PROMPT)) as outputs:  # type: ignore[type-var]
            seen.append(next(outputs))
            time.sleep(0.4)  # the pump reads ahead, then waits for room
            if closer == "same thread":
                client.close()
            else:
                thread, _ = in_thread(client.close)
                thread.join(5)
            started = time.monotonic()
            with pytest.raises(StreamInterruptedError) as info:
                seen.extend(outputs)  # one by one: a failure keeps what came
            assert time.monotonic() - started < WITHIN
        assert len(seen) > 2, "the items read ahead are delivered before the error"
        assert info.value.partial == seen[-1]
        assert len(seen) < 200


EXIT_DURING_SYNC_GENERATE = """
import sys, threading, time
from aiotongyi import TongyiLLMClient
client = TongyiLLMClient(api_key="k", base_url=sys.argv[1])
threading.Thread(target=client.sync_generate, args=("x",), daemon=True).start()
time.sleep(float(sys.argv[2]))
print("exiting", flush=True)
"""


def test_exit_while_a_daemon_thread_is_blocked_in_sync_generate_prints_nothing(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    runs = 10
    dashscope_emulator.enqueue(*[Reply(text=["late"], first_byte_delay=3) for _ in range(runs)])
    # Started together (2 cores), each exiting at a slightly different moment.
    processes = [
        run_script(EXIT_DURING_SYNC_GENERATE, dashscope_emulator.base_url, f"{0.3 + 0.05 * i}")
        for i in range(runs)
    ]
    for process in processes:
        stdout, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert stdout == "exiting\n"
        assert stderr == ""


class CollectOnRequest(Hooks):
    """Runs the cycle collector on the client's own loop thread when armed."""

    def __init__(self) -> None:
        self.armed = False
        self.collected_on: str | None = None

    def on_request(self, call: object, attempt: int) -> None:
        if self.armed:
            self.armed = False
            self.collected_on = threading.current_thread().name
            gc.collect()


def test_a_generator_dropped_in_a_cycle_and_collected_on_the_loop_thread_is_closed(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    dashscope_emulator.enqueue(long_reply(), Reply(text=["trigger"]))
    hooks = CollectOnRequest()
    with clean_case(dashscope_emulator):
        client = make_client(dashscope_emulator, hooks=hooks)
        gc.disable()  # the collection must happen where the hook runs it
        try:
            outputs = client.sync_generate_stream(PROMPT)
            next(outputs)
            cycle: dict[str, object] = {"outputs": outputs}
            cycle["self"] = cycle
            del outputs, cycle
            hooks.armed = True
            client.sync_generate(PROMPT)  # its request runs the collector on the loop thread
        finally:
            gc.enable()
        assert hooks.collected_on == LOOP_THREAD
        # Only the trigger call's pooled connection stays: the dropped stream's is closed.
        assert dashscope_emulator.wait_for_open_connections(1, WITHIN)
        served = dashscope_emulator.requests
        client.close()
    assert len(served) == 2


def test_dropped_clients_stop_their_threads_with_one_resource_warning_each(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    dashscope_emulator.enqueue(*[Reply(text=["ok"]) for _ in range(3)])
    before = len(loop_threads())
    with clean_case(dashscope_emulator):
        used = [make_client(dashscope_emulator) for _ in range(3)]
        for client in used:
            assert client.sync_generate(PROMPT).text == "ok"
        unused = [make_client(dashscope_emulator) for _ in range(2)]  # they hold nothing
        assert len(loop_threads()) == before + 3
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            del used, unused, client
            gc.collect()
        messages = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert len(messages) == 3, messages
        assert all(m.startswith("unclosed client TongyiLLMClient(") for m in messages)
        assert all("api_key='k" not in m and dashscope_emulator.api_key not in m for m in messages)
        assert wait_until(lambda: len(loop_threads()) == before, WITHIN)


DROPPED_CLIENTS_AT_EXIT = """
import asyncio, gc, sys
from aiotongyi import TongyiLLMClient
url = sys.argv[1]
for _ in range(3):  # throwaway sync clients, never closed
    TongyiLLMClient(api_key="k", base_url=url).sync_generate("x")
gc.collect()
async def main():
    kept = [TongyiLLMClient(api_key="k", base_url=url) for _ in range(20)]
    await asyncio.gather(*(c.generate("x") for c in kept))
    for _ in range(3):  # dropped while their loop still runs
        await TongyiLLMClient(api_key="k", base_url=url).generate("x")
    gc.collect()
    return kept
kept = asyncio.run(main())
kept += [TongyiLLMClient(api_key="k", base_url=url) for _ in range(3)]
for client in kept[-3:]:
    client.sync_generate("x")
print("done", flush=True)
# no close(): exit must release everything silently
"""


def test_clients_dropped_or_left_unclosed_leave_no_output_at_exit(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    # Python's default filters: ResourceWarning is ignored, as for unclosed files.
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(DROPPED_CLIENTS_AT_EXIT),
            dashscope_emulator.base_url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert stdout == "done\n"
    assert stderr == ""
    assert len(dashscope_emulator.requests) == 29


# -- part two: the lifecycle matrix -------------------------------------------------
#
# api:    "async" (a Stream on the caller's loop), "sync" (a sync generator on the
#         client's loop thread), "executor" (the same, the loop in a caller's executor).
# ender:  "same_task" (the caller itself, between two reads), "other_task" (an
#         asyncio task: aclose() on the caller's loop, or on another thread's loop for
#         the sync APIs), "other_thread" (close()), "exit" (in a subprocess, below),
#         "gc_client" (the last reference to the client dropped and collected),
#         "gc_stream" (the stream or generator dropped).
# phase:  where the call waits when it is ended: "before_send" (in the rate
#         limiter), "headers", "backoff" (a 503 with Retry-After), "midstream" (the
#         server stalls after one frame), "lagging" (the server streams, the caller
#         holds an output and reads on later).

APIS = ("async", "sync", "executor")
ENDERS = ("same_task", "other_task", "other_thread", "gc_client", "gc_stream")
PHASES = ("before_send", "headers", "backoff", "midstream", "lagging")
BEFORE_CONTENT = ("before_send", "headers", "backoff")
#: An async caller that waits inside the call cannot act, nor drop what it awaits.
IMPOSSIBLE = {
    ("async", "same_task", "headers"),
    ("async", "same_task", "backoff"),
    ("async", "gc_stream", "headers"),
    ("async", "gc_stream", "backoff"),
}
CELLS = [
    pytest.param(api, ender, phase, id=f"{api}-{ender}-{phase}")
    for api in APIS
    for ender in ENDERS
    for phase in PHASES
    if (api, ender, phase) not in IMPOSSIBLE
]
TEXT = ("春眠", "不觉晓，", "处处闻", "啼鸟。")
LAG = 0.3  # how long a lagging caller holds an output before the cell is ended


class Phase:
    """The script that puts a call in ``phase``, and how to tell it got there.

    ``wait`` is how long the call would wait there on its own: long when the
    cell ends it, short when the call must run to its end (the client dropped).
    """

    def __init__(self, name: str, emulator: DashScopeEmulator, *, wait: float, frames: int) -> None:
        self.name = name
        self.emulator = emulator
        self.policy = SignalPolicy()
        self.text = "".join(TEXT)
        self.warm_up = name == "before_send"
        #: Connections the client may keep pooled: the warm-up's, the 503's.
        self.pooled = int(name in ("before_send", "backoff"))
        self._since: float | None = None
        self.client_kwargs: dict[str, Any] = {"retry_policy": self.policy}
        replies: list[Reply] = []
        if name == "before_send":  # one request per window: the second waits in the limiter
            self.client_kwargs["rate_limit"] = RateLimiter(requests_per_minute=1, window=wait)
            replies = [Reply(text=["warm"]), Reply(text=list(TEXT))]
        elif name == "headers":
            replies = [Reply(text=list(TEXT), first_byte_delay=wait)]
        elif name == "backoff":
            replies = [http_error(503, retry_after=wait), Reply(text=list(TEXT))]
        elif name == "midstream":
            replies = [Reply(text=list(TEXT), stall_after_frames=1, stall_seconds=wait)]
        else:
            deltas = [f"t{i} " for i in range(frames)]
            self.text = "".join(deltas)
            replies = [Reply(text=deltas, frame_delay=0.01)]
        emulator.enqueue(*replies)

    def reached(self, seen: list[ModelOutput]) -> bool:
        """Whether the call now waits in this phase (polled)."""
        requests = len(self.emulator.requests) - self.warm_up
        if self.name == "before_send":
            return requests == 0 and self._polled_for(0.1)  # nothing shows the limiter's wait
        if self.name == "headers":
            return requests == 1 and self._polled_for(0.05)
        if self.name == "backoff":
            return self.policy.in_backoff.is_set()
        return len(seen) >= 1

    def _polled_for(self, seconds: float) -> bool:
        """True once ``seconds`` have passed since the first poll that got here."""
        now = time.monotonic()
        if self._since is None:
            self._since = now
        return now - self._since >= seconds


class Verdict:
    """What the caller got, and when."""

    def __init__(self) -> None:
        self.seen: list[ModelOutput] = []
        self.error: BaseException | None = None
        self.ended_at: float | None = None
        self.acted_at: float | None = None
        self.dropped = False

    def act(self) -> None:
        self.acted_at = time.monotonic()

    def end(self, error: BaseException | None = None) -> None:
        self.error = error
        self.ended_at = time.monotonic()


def check_verdict(verdict: Verdict, ender: str, phase: Phase) -> None:
    assert verdict.acted_at is not None, "the cell never reached its phase"
    assert not isinstance(verdict.error, asyncio.CancelledError), "a CancelledError escaped"
    if ender == "gc_stream":  # the caller walked away: nobody is told anything
        assert verdict.error is None, repr(verdict.error)
        return
    assert verdict.ended_at is not None, "the caller never got an outcome"
    if ender == "gc_client":  # the running call keeps its client alive: a clean end
        assert verdict.error is None, repr(verdict.error)
        assert verdict.seen[-1].text == phase.text
        assert verdict.seen[-1].finish_reason == "stop"
        return
    took = verdict.ended_at - verdict.acted_at
    assert took < WITHIN, f"ended {took:.2f} s after the close"
    error = verdict.error
    if phase.name in BEFORE_CONTENT:
        assert type(error) is APIConnectionError, repr(error)
        assert error.partial is None
        assert not verdict.seen
    else:
        assert type(error) is StreamInterruptedError, repr(error)
        assert isinstance(error, TongyiError)
        assert error.partial == verdict.seen[-1]
        if phase.name == "lagging":
            assert len(verdict.seen) < len(phase.text.split())


def wait_reached(phase: Phase, verdict: Verdict, within: float = 5.0) -> None:
    assert wait_until(lambda: phase.reached(verdict.seen), within), f"never reached {phase.name}"


# -- async cells


async def async_cell(
    ender: str, phase: Phase, holder: list[TongyiLLMClient], verdict: Verdict
) -> None:
    if phase.warm_up:
        await holder[0].generate(PROMPT)
    stream: Any = holder[0].generate_stream(PROMPT)

    async def consume(source: Any) -> None:
        try:
            async with source:
                async for output in source:
                    verdict.seen.append(output)
                    if phase.name == "lagging" and len(verdict.seen) == 1:
                        await asyncio.sleep(LAG * 2)
        except BaseException as exc:
            verdict.end(exc)
            if not isinstance(exc, TongyiError):
                raise
        else:
            verdict.end()

    async def reached() -> None:
        assert await await_until(lambda: phase.reached(verdict.seen), 5.0)
        if phase.name == "lagging":
            await asyncio.sleep(LAG)

    if ender == "same_task":
        if phase.name != "before_send":
            verdict.seen.append(await stream.__anext__())
            if phase.name == "lagging":
                await asyncio.sleep(LAG)
        verdict.act()
        await holder[0].aclose()
        await consume(stream)
        return
    if ender == "gc_stream":
        if phase.name != "before_send":
            verdict.seen.append(await stream.__anext__())
            await reached()
        verdict.act()
        del stream  # no aclose(): the generator's finaliser closes the response
        verdict.dropped = True
        return
    task = asyncio.create_task(consume(stream))
    del stream
    await reached()
    verdict.act()
    if ender == "other_task":
        await asyncio.create_task(holder[0].aclose())
    elif ender == "other_thread":
        await asyncio.to_thread(holder[0].close)
    else:  # gc_client
        holder.clear()
        gc.collect()
    await task


# -- sync cells


def sync_cell(ender: str, phase: Phase, holder: list[TongyiLLMClient], verdict: Verdict) -> None:
    if phase.warm_up:
        holder[0].sync_generate(PROMPT)
    outputs: Any = holder[0].sync_generate_stream(PROMPT)

    def consume(source: Any) -> None:
        try:
            with closing(source):
                for output in source:
                    verdict.seen.append(output)
                    if phase.name == "lagging" and len(verdict.seen) == 1:
                        time.sleep(LAG * 2)
        except BaseException as exc:
            verdict.end(exc)
            if not isinstance(exc, TongyiError):
                raise
        else:
            verdict.end()

    def reached() -> None:
        wait_reached(phase, verdict)
        if phase.name == "lagging":
            time.sleep(LAG)

    if ender in ("same_task", "gc_stream"):
        # The pump starts at once: the call runs while this thread holds the generator.
        if phase.name in ("midstream", "lagging"):
            verdict.seen.append(next(outputs))
        reached()
        verdict.act()
        if ender == "gc_stream":
            del outputs  # no close(): dropping the generator closes the response
            verdict.dropped = True
            return
        holder[0].close()
        consume(outputs)
        return
    thread, _ = in_thread(functools.partial(consume, outputs))
    del outputs
    reached()
    verdict.act()
    if ender == "other_task":
        asyncio.run(holder[0].aclose())
    elif ender == "other_thread":
        closer, _ = in_thread(holder[0].close)
        closer.join(5)
    else:  # gc_client
        holder.clear()
        gc.collect()
    thread.join(10)
    assert not thread.is_alive()


@pytest.mark.parametrize(("api", "ender", "phase_name"), CELLS)
def test_lifecycle(
    api: str, ender: str, phase_name: str, dashscope_emulator: DashScopeEmulator
) -> None:
    if ender == "gc_client":  # the call runs to its end: short waits
        wait, frames = 0.4, 40
    elif ender == "gc_stream" and phase_name == "backoff":  # to see the retry never comes
        wait, frames = 0.4, 200
    else:  # far longer than a cell (a rate-limit window may be, the others not: see Phase)
        wait, frames = 30.0 if phase_name == "before_send" else 3.0, 200
    phase = Phase(phase_name, dashscope_emulator, wait=wait, frames=frames)
    verdict = Verdict()
    executor = ThreadPoolExecutor(1) if api == "executor" else None
    with clean_case(dashscope_emulator):
        holder = [make_client(dashscope_emulator, executor=executor, **phase.client_kwargs)]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if api == "async":

                async def main() -> None:
                    await async_cell(ender, phase, holder, verdict)
                    if verdict.dropped:
                        gc.collect()
                        assert await await_until(
                            lambda: dashscope_emulator.open_connections <= phase.pooled,
                            WITHIN,
                        ), "the dropped stream's response stays open"
                    if holder:
                        await holder[0].aclose()
                    else:
                        gc.collect()
                    # What the close started on this loop ends on it.
                    assert await await_until(lambda: len(asyncio.all_tasks()) == 1, WITHIN), (
                        asyncio.all_tasks()
                    )

                run_async(main)
            else:
                sync_cell(ender, phase, holder, verdict)
                if verdict.dropped:
                    gc.collect()
                    assert wait_until(
                        lambda: dashscope_emulator.open_connections <= phase.pooled, WITHIN
                    ), "the dropped generator's response stays open"
                    if phase.name == "backoff":
                        time.sleep(0.6)  # past the backoff: no retry may come
                if holder:
                    holder[0].close()
                else:
                    gc.collect()
        if executor is not None:
            executor.shutdown(wait=True)
        resource = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        others = [str(w.message) for w in caught if not issubclass(w.category, ResourceWarning)]
        assert not others, others
        # One warning exactly when the caller dropped a client that held something.
        assert len(resource) == (1 if ender == "gc_client" else 0), resource
        assert wait_until(lambda: not loop_threads(), WITHIN), "a loop thread outlived"
    check_verdict(verdict, ender, phase)
    # Sent once, retried only when the backoff ran out; never sent when ended in the limiter.
    sent = 1 + (phase.name == "backoff")
    if ender != "gc_client":
        sent = 0 if phase.name == "before_send" else 1
    assert len(dashscope_emulator.requests) == phase.warm_up + sent


# -- exit cells: each API with one call in every phase, then the interpreter exits

EXIT_CELLS = """
import asyncio, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from aiotongyi import Hooks, RateLimiter, RetryPolicy, TongyiLLMClient

url, api = sys.argv[1], sys.argv[2]
executor = ThreadPoolExecutor(5) if api == "executor" else None


class Signals(RetryPolicy, Hooks):
    # The documented seams: a retry policy (real waits) and hooks, both signalling.
    def __init__(self):
        super().__init__()
        self.sent = threading.Event()
        self.backoff = threading.Event()
        self.content = threading.Event()

    def delay(self, attempt, headers, jitter):
        self.backoff.set()
        return super().delay(attempt, headers, jitter)

    def on_request(self, call, attempt):
        self.sent.set()


def run(phase):
    signals = Signals()
    kwargs = {}
    if phase == "before_send":
        kwargs["rate_limit"] = RateLimiter(requests_per_minute=1, window=30)
    client = TongyiLLMClient(
        api_key="k", base_url=url, executor=executor, retry_policy=signals, hooks=signals, **kwargs
    )
    if phase == "before_send":
        client.sync_generate("warm")

    def on_output(first):
        if first:
            signals.content.set()
            if phase == "lagging":
                time.sleep(60)

    async def consume():
        async with client.generate_stream("x") as stream:
            first = True
            async for _ in stream:
                on_output(first)
                first = False

    def call():
        if api == "async":
            asyncio.run(consume())
        else:
            first = True
            for _ in client.sync_generate_stream("x"):
                on_output(first)
                first = False

    threading.Thread(target=call, daemon=True).start()
    if phase == "before_send":
        time.sleep(0.2)  # in the limiter: nothing observable before the send
    else:
        reached = {"headers": signals.sent, "backoff": signals.backoff}.get(phase, signals.content)
        assert reached.wait(10), phase
        time.sleep(0.05)
    return client


clients = [run(phase) for phase in ("before_send", "headers", "backoff", "midstream", "lagging")]
print(time.time(), flush=True)
"""


@pytest.mark.parametrize("api", APIS)
def test_lifecycle_exit(api: str) -> None:
    # An emulator of its own: the phases take scripted replies in order.
    with DashScopeEmulator() as emulator:
        emulator.enqueue(
            Reply(text=["warm"]),
            Reply(text=list(TEXT), first_byte_delay=5),
            http_error(503, retry_after=3),
            Reply(text=list(TEXT), stall_after_frames=1, stall_seconds=5),
            long_reply(),
        )
        process = run_script(EXIT_CELLS, emulator.base_url, api)
        stdout, stderr = process.communicate(timeout=60)
        ended = time.time()
        assert process.returncode == 0, stderr
        assert stderr == ""
        took = ended - float(stdout)
        assert took < WITHIN, f"exit took {took:.2f} s"
        assert len(emulator.requests) == 5  # the limited call never went out
        assert emulator.wait_for_open_connections(0)
