"""Shared machinery of the reliability suite: API modes, a case runner and leak probes."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiotongyi import ModelOutput, RetryPolicy, Timeout, TongyiError, TongyiLLMClient
from aiotongyi.testing import DashScopeEmulator, Reply
from aiotongyi.testing._render import Exchange, render

# -- API modes -------------------------------------------------------------------

ASYNC_MODES = ("stream_with", "stream_bare", "generate")
SYNC_MODES = ("sync_stream", "sync_generate")
MODES = ASYNC_MODES + SYNC_MODES
STREAM_MODES = ("stream_with", "stream_bare", "sync_stream")

PROMPT = "x"  # one input token: frame sizes below depend on it
TEXT = ("春眠", "不觉晓，", "处处闻", "啼鸟。")  # multi-byte on purpose
FULL = "".join(TEXT)
REQUEST_ID = "rid-reliability"

#: The suite's retry policy (set by the autouse ``retry_delays`` fixture).
RETRY_POLICY: RetryPolicy | None = None


def reply(**kwargs: Any) -> Reply:
    """The standard four-frame answer with a fixed request id, plus faults."""
    kwargs.setdefault("text", list(TEXT))
    kwargs.setdefault("request_id", REQUEST_ID)
    return Reply(**kwargs)


def frames_of(script: Reply) -> list[bytes]:
    """The exact body frames the emulator writes for ``script`` (for byte offsets)."""
    exchange = Exchange(stream=True, incremental=True, multimodal=False, input_tokens=len(PROMPT))
    return render(script, exchange).frames


def prefix(k: int) -> str | None:
    """The text of the first ``k`` frames (``None`` for none)."""
    return "".join(TEXT[:k]) or None


async def run_async_mode(mode: str, client: TongyiLLMClient, seen: list[ModelOutput]) -> None:
    """One call in an async mode; every output the caller receives lands in ``seen``."""
    if mode == "stream_with":
        async with client.generate_stream(PROMPT) as stream:
            async for output in stream:
                seen.append(output)
    elif mode == "stream_bare":
        async for output in client.generate_stream(PROMPT):
            seen.append(output)
    elif mode == "generate":
        seen.append(await client.generate(PROMPT))
    else:  # pragma: no cover - a typo in a parametrisation
        raise AssertionError(mode)


def run_sync_mode(mode: str, client: TongyiLLMClient, seen: list[ModelOutput]) -> None:
    """One call in a sync mode."""
    if mode == "sync_stream":
        with closing(client.sync_generate_stream(PROMPT)) as outputs:  # type: ignore[type-var]
            seen.extend(outputs)  # extend appends one by one: a failure keeps what came
    elif mode == "sync_generate":
        seen.append(client.sync_generate(PROMPT))
    else:  # pragma: no cover
        raise AssertionError(mode)


# -- leak probes -----------------------------------------------------------------


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def rss_bytes() -> int:
    return _status_field("VmRSS")


def peak_rss_bytes() -> int:
    return _status_field("VmHWM")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is refused."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def _status_field(name: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {name} in /proc/self/status")


def wait_until(predicate: Callable[[], bool], within: float = 2.0) -> bool:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() >= deadline:
            return predicate()
        time.sleep(0.005)
    return True


async def await_until(predicate: Callable[[], bool], within: float = 2.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() >= deadline:
            return predicate()
        await asyncio.sleep(0.005)
    return True


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Baseline:
    """Threads and fds before a case; :meth:`check` waits for both to come back."""

    emulator: DashScopeEmulator
    fds: int = field(default_factory=fd_count)
    threads: set[int] = field(default_factory=lambda: {t.ident or 0 for t in threading.enumerate()})

    def check(self, within: float = 2.0) -> None:
        assert self.emulator.wait_for_open_connections(0, within), (
            f"{self.emulator.open_connections} connection(s) left open on the emulator"
        )
        assert wait_until(lambda: fd_count() <= self.fds, within), (
            f"fd leak: {fd_count()} open, {self.fds} before"
        )
        assert wait_until(
            lambda: {t.ident or 0 for t in threading.enumerate()} <= self.threads, within
        ), "thread leak: " + ", ".join(
            t.name for t in threading.enumerate() if (t.ident or 0) not in self.threads
        )


@contextmanager
def no_resource_warnings_or_loop_errors() -> Iterator[None]:
    """Fail on ResourceWarnings raised by collection and on asyncio's error reports.

    ``-W error`` already fails a test on warnings raised in its own frames; an
    object finalised later (``Unclosed client session``, ``Task was destroyed
    but it is pending``) reports through ``__del__`` or the ``asyncio`` logger,
    so collect here, inside the case, where it can be pinned on the case.
    """
    handler = _Collect()
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield
            # Young generations only: a full collection per case costs more than
            # the case; -W error still catches anything older, just less precisely.
            gc.collect(1)
    finally:
        asyncio_logger.removeHandler(handler)
    resource = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not resource, [str(w.message) for w in resource]
    errors = [r.getMessage() for r in handler.records if r.levelno >= logging.WARNING]
    assert not errors, errors


# -- the case runner -------------------------------------------------------------


@dataclass
class Outcome:
    """What one call did, as the caller saw it."""

    seen: list[ModelOutput]
    error: BaseException | None
    requests: int  # chat requests the emulator received
    open_after_call: int  # emulator connections open after the call, before closing the client


def run_case(
    mode: str,
    emulator: DashScopeEmulator,
    replies: list[Reply],
    *,
    pooled: bool | None = None,
    **client_kwargs: Any,
) -> Outcome:
    """Run one call in ``mode`` against queued ``replies`` and check it leaked nothing.

    ``pooled``: whether the connection must stay open in the pool after the
    call (default: exactly when the call succeeded).
    """
    client_kwargs.setdefault("api_key", emulator.api_key)
    client_kwargs.setdefault("base_url", emulator.base_url)
    client_kwargs.setdefault("timeout", Timeout(connect=1, read=1))
    client_kwargs.setdefault("max_retries", 2)
    client_kwargs.setdefault("retry_policy", RETRY_POLICY)
    baseline = Baseline(emulator)
    emulator.enqueue(*replies)
    seen: list[ModelOutput] = []
    error: BaseException | None = None
    open_after = -1
    client = TongyiLLMClient(**client_kwargs)

    def settled() -> bool:
        # A failed call may pool a connection whose response ended cleanly, so
        # only a success (or ``pooled``) pins the count; the client's side must
        # hold nothing either way.
        keep = (error is None) if pooled is None else pooled
        opened = emulator.open_connections
        if keep:
            return opened == 1
        return opened <= 1

    with no_resource_warnings_or_loop_errors():
        if mode in ASYNC_MODES:

            async def main() -> None:
                nonlocal error, open_after
                try:
                    try:
                        await run_async_mode(mode, client, seen)
                    except TongyiError as exc:
                        error = exc
                    await await_until(settled, 1.0)
                    open_after = emulator.open_connections
                finally:
                    await client.aclose()
                others = asyncio.all_tasks() - {asyncio.current_task()}
                assert not others, f"tasks left running: {others}"

            asyncio.run(main())
        else:
            try:
                try:
                    run_sync_mode(mode, client, seen)
                except TongyiError as exc:
                    error = exc
                wait_until(settled, 1.0)
                open_after = emulator.open_connections
            finally:
                client.close()
    baseline.check()
    return Outcome(seen, error, len(emulator.requests), open_after)


def check_outcome(
    mode: str,
    outcome: Outcome,
    *,
    error: type[BaseException] | None,
    partial: str | None,
    requests: int | None,
    text: str = FULL,
) -> None:
    """The shared assertions of a matrix case.

    :param error: the exact exception class, or ``None`` for a clean end with ``text``.
    :param partial: ``partial.text`` the error must carry (``None``: no partial).
    :param requests: how many requests the emulator must have seen (``None``: skip).
    """
    if requests is not None:
        assert outcome.requests == requests, f"{outcome.requests} requests, wanted {requests}"
    if error is None:
        assert outcome.error is None, f"unexpected {outcome.error!r}"
        final = outcome.seen[-1]
        assert final.text == text
        assert final.finish_reason == "stop"
        if mode in STREAM_MODES:
            assert "".join(o.delta for o in outcome.seen) == text
        assert outcome.open_after_call == 1, "a complete call returns its connection to the pool"
        return
    assert outcome.error is not None, f"no error; outputs: {[o.text for o in outcome.seen]}"
    assert type(outcome.error) is error, f"{outcome.error!r} is not a {error.__name__}"
    assert isinstance(outcome.error, TongyiError)
    got = outcome.error.partial
    if mode in STREAM_MODES:
        # partial is exactly what the caller received: the last output, no more, no less
        assert got == (outcome.seen[-1] if outcome.seen else None)
    else:
        assert not outcome.seen
    assert (None if got is None else got.text) == partial
    assert outcome.open_after_call <= 1


def run_async(coro_factory: Callable[[], Awaitable[None]]) -> None:
    """``asyncio.run`` a case body and fail on tasks it leaves behind."""

    async def main() -> None:
        await coro_factory()
        others = asyncio.all_tasks() - {asyncio.current_task()}
        assert not others, f"tasks left running: {others}"

    asyncio.run(main())
