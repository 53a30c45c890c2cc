"""The fault matrix: every API mode x every fault the emulator can inject.

Each case asserts the documented exception class (or a clean end), that
``partial`` is exactly what the caller had received, that retries happened
only where the policy allows (requests counted on the emulator) and never
after content, that the connection was closed (or pooled after success), and
that no task, thread, fd or ResourceWarning outlives the call.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from aiotongyi import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ModelOutput,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
    Timeout,
    TongyiLLMClient,
)
from aiotongyi.testing import DashScopeEmulator, ErrorEvent, Reply, http_error
from aiotongyi.testing._script import dumps

from . import helpers
from .helpers import (
    ASYNC_MODES,
    FULL,
    MODES,
    PROMPT,
    REQUEST_ID,
    STREAM_MODES,
    TEXT,
    Baseline,
    await_until,
    check_outcome,
    frames_of,
    no_resource_warnings_or_loop_errors,
    prefix,
    reply,
    run_async,
    run_async_mode,
    run_case,
    run_sync_mode,
    wait_until,
)

RETRIES = 2  # every case runs with max_retries=2: a retried failure costs 3 requests
ATTEMPTS = RETRIES + 1
STALL = Timeout(connect=1, read=0.2)


@dataclass
class Fault:
    """One injected fault and what every API mode must do about it."""

    id: str
    replies: Callable[[], list[Reply]]
    error: type[BaseException] | None
    partial: str | None = None
    requests: int | None = 1
    client: dict[str, Any] = field(default_factory=dict)
    #: "backoff": exponential backoff (also after Retry-After: 0, which is no advice).
    delays: str | None = None
    text: str = FULL


def times(n: int, make: Callable[[], Reply]) -> Callable[[], list[Reply]]:
    return lambda: [make() for _ in range(n)]


def then_ok(make: Callable[[], Reply]) -> Callable[[], list[Reply]]:
    return lambda: [make(), reply()]


# -- byte offsets inside the standard answer ---------------------------------------

_FRAMES = frames_of(reply())
_F0, _F1 = len(_FRAMES[0]), len(_FRAMES[1])
MID_FRAME_1 = _F0 + _F1 // 2
MID_CHAR_1 = _F0 + _FRAMES[1].index(TEXT[1][0].encode()) + 1  # one byte into "不"
MID_FRAME_0 = _F0 // 2


# -- raw frames for protocol faults -----------------------------------------------


def _frame(data: str, event: str = "result", status: int = 200) -> str:
    return f"id:1\nevent:{event}\n:HTTP_STATUS/{status}\ndata:{data}\n\n"


def _content(text: str, finish: object = "null", **extra: Any) -> dict[str, Any]:
    message = {"content": text, "role": "assistant", **extra.pop("message_extra", {})}
    choice = {"message": message, "finish_reason": finish, **extra.pop("choice_extra", {})}
    frame: dict[str, Any] = {
        "output": {"choices": [choice], **extra.pop("output_extra", {})},
        "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
        "request_id": REQUEST_ID,
    }
    frame.update(extra)
    return frame


def raw_stream(*frames: dict[str, Any] | str) -> Callable[[], list[Reply]]:
    """A 200 SSE body made of these frames (dicts are JSON-encoded)."""
    body = "".join(_frame(f if isinstance(f, str) else dumps(f)) for f in frames)
    return lambda: [Reply(raw_body=body.encode(), request_id=REQUEST_ID)]


def first_then(bad: dict[str, Any] | str) -> Callable[[], list[Reply]]:
    """One good content frame, then ``bad``, then the rest of the answer."""
    return raw_stream(_content(TEXT[0]), bad, _content(TEXT[1], "stop"))


UNKNOWN = {"x_future": {"nested": [1, 2, {"deep": None}]}, "x_flag": True}
UNKNOWN_FIELDS = raw_stream(
    *[
        _content(
            part,
            "stop" if n == len(TEXT) - 1 else "null",
            message_extra={**UNKNOWN, "annotations": []},
            choice_extra={**UNKNOWN, "logprobs": None},
            output_extra=UNKNOWN,
            **UNKNOWN,
        )
        for n, part in enumerate(TEXT)
    ]
)


def _bad(**changes: Any) -> dict[str, Any]:
    frame = _content(TEXT[1])
    choice = frame["output"]["choices"][0]
    for path, value in changes.items():
        if path == "content":
            choice["message"]["content"] = value
        elif path == "message":
            choice["message"] = value
        elif path in ("finish_reason", "index"):
            choice[path] = value
        elif path == "tool_calls":
            choice["message"]["tool_calls"] = value
        elif path == "reasoning":
            choice["message"]["reasoning_content"] = value
        elif path == "choices":
            frame["output"]["choices"] = value
        elif path == "output":
            frame["output"] = value
        elif path == "usage":
            frame["usage"] = value
        elif path == "output_tokens":
            frame["usage"]["output_tokens"] = value
        else:  # pragma: no cover
            raise AssertionError(path)
    return frame


WRONG_TYPES = {
    "content_int": _bad(content=5),
    "content_dict": _bad(content={"text": "x"}),
    "reasoning_list": _bad(reasoning=["x"]),
    "finish_reason_int": _bad(finish_reason=7),
    "index_str": _bad(index="0"),
    "message_list": _bad(message=["x"]),
    "choices_str": _bad(choices="x"),
    "choice_str": _bad(choices=["x"]),
    "output_list": _bad(output=["x"]),
    "usage_str": _bad(usage="lots"),
    "tokens_str": _bad(output_tokens="12"),
    "tool_calls_dict": _bad(tool_calls={"index": 0}),
    "tool_args_int": _bad(tool_calls=[{"index": 0, "function": {"name": "f", "arguments": 1}}]),
    "frame_array": "[1,2,3]",
    "frame_string": '"text"',
    "frame_null": "null",
}


# -- the faults ----------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


TRANSPORT = [
    Fault(
        "refused",
        lambda: [],
        APIConnectionError,
        requests=0,
        client={"base_url": "CLOSED_PORT"},
        delays="backoff",
    ),
    Fault(
        "garbage",
        times(ATTEMPTS, lambda: Reply(garbage=b"SSH-2.0-OpenSSH_9.6\r\n\x00\xff")),
        APIConnectionError,
        requests=ATTEMPTS,
    ),
    Fault(
        "garbage_http_like",
        times(ATTEMPTS, lambda: Reply(garbage=b"HTTP/1.1 2x0 \xff\r\n\r\n")),
        APIConnectionError,
        requests=ATTEMPTS,
    ),
    Fault(
        "reset_before_status",
        times(ATTEMPTS, lambda: reply(reset_before_status=True)),
        APIConnectionError,
        requests=ATTEMPTS,
        delays="backoff",
    ),
    Fault(
        "reset_after_headers",
        times(ATTEMPTS, lambda: reply(drop_after_frames=0)),
        APIConnectionError,
        requests=ATTEMPTS,
    ),
    Fault(
        "drop_mid_first_frame",
        times(ATTEMPTS, lambda: reply(drop_after_bytes=MID_FRAME_0)),
        APIConnectionError,
        requests=ATTEMPTS,
    ),
    Fault("drop_after_1", lambda: [reply(drop_after_frames=1)], StreamInterruptedError, prefix(1)),
    Fault("drop_after_3", lambda: [reply(drop_after_frames=3)], StreamInterruptedError, prefix(3)),
    Fault(
        "drop_mid_frame",
        lambda: [reply(drop_after_bytes=MID_FRAME_1)],
        StreamInterruptedError,
        prefix(1),
    ),
    Fault(
        "drop_mid_char",
        lambda: [reply(drop_after_bytes=MID_CHAR_1)],
        StreamInterruptedError,
        prefix(1),
    ),
    Fault(
        "drop_mid_char_chunked",
        lambda: [reply(drop_after_bytes=MID_CHAR_1, chunk_sizes=[1, 2, 3])],
        StreamInterruptedError,
        prefix(1),
    ),
    Fault(
        "eof_without_finish",
        lambda: [reply(finish_reason=None)],
        StreamInterruptedError,
        FULL,
    ),
    Fault(
        "empty_stream",
        times(ATTEMPTS, lambda: Reply(raw_body=b":keepalive\n\n")),
        APIConnectionError,
        requests=ATTEMPTS,
    ),
]

STALLS = [
    Fault(
        "stall_before_status",
        times(ATTEMPTS, lambda: reply(first_byte_delay=0.6)),
        APITimeoutError,
        # counted on the client (the backoffs): a busy emulator may see the
        # request only after the client gave up on it
        requests=None,
        client={"timeout": STALL},
        delays="backoff",
    ),
    Fault(
        "stall_after_headers",
        times(ATTEMPTS, lambda: reply(stall_after_frames=0, stall_seconds=0.6)),
        APITimeoutError,
        requests=ATTEMPTS,
        client={"timeout": STALL},
        delays="backoff",
    ),
    Fault(
        "stall_between_frames",
        lambda: [reply(stall_after_frames=2, stall_seconds=0.6)],
        APITimeoutError,
        prefix(2),
        client={"timeout": STALL},
    ),
    Fault(
        "stall_mid_frame",
        lambda: [
            reply(chunk_sizes=[MID_FRAME_1, 1 << 20], stall_after_frames=1, stall_seconds=0.6)
        ],
        APITimeoutError,
        prefix(1),
        client={"timeout": STALL},
    ),
    Fault(
        "slow_drip_past_total",
        lambda: [reply(drip_interval=0.004)],
        APITimeoutError,
        client={"timeout": Timeout(connect=1, read=1, total=0.3)},
    ),
    Fault(
        "stall_then_ok",
        then_ok(lambda: reply(first_byte_delay=0.6)),
        None,
        requests=2,
        client={"timeout": STALL},
    ),
]

_CLASSES: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    408: APIError,
    429: RateLimitError,
}
_RETRYABLE = {408, 429, 500, 502, 503, 504}


def _http_faults() -> list[Fault]:
    faults = []
    cases: list[tuple[int, float | None]] = [
        (s, None) for s in (400, 401, 403, 404, 408, 429, 500, 502, 503, 504)
    ]
    cases.insert(6, (429, 0))
    for status, retry_after in cases:
        for body in ("json", "html", "empty", "sse"):
            retried = status in _RETRYABLE
            name = f"http_{status}{'_retry_after_0' if retry_after is not None else ''}_{body}"
            faults.append(
                Fault(
                    name,
                    times(
                        ATTEMPTS if retried else 1,
                        lambda s=status, b=body, r=retry_after: http_error(
                            s, body=b, retry_after=r
                        ),
                    ),
                    _CLASSES.get(status, ServerError),
                    requests=ATTEMPTS if retried else 1,
                    # Retry-After: 0 is no advice: the usual backoff, never a busy loop.
                    delays="backoff" if retried else None,
                )
            )
    return faults


HTTP = [
    *_http_faults(),
    Fault(
        "http_429_quota_not_retried",
        lambda: [http_error(429, "Throttling.AllocationQuota", body="json", retry_after=0)],
        RateLimitError,
    ),
    Fault(
        "http_503_then_ok",
        then_ok(lambda: http_error(503, body="html", retry_after=0)),
        None,
        requests=2,
    ),
]

IN_STREAM = [
    Fault(
        "error_event_before_content_429",
        times(
            ATTEMPTS,
            lambda: reply(error_event=ErrorEvent("Throttling.RateQuota", "busy", status=429)),
        ),
        RateLimitError,
        requests=ATTEMPTS,
    ),
    Fault(
        "error_event_before_content_400",
        lambda: [reply(error_event=ErrorEvent("DataInspectionFailed", "no", status=400))],
        BadRequestError,
    ),
    Fault(
        "error_event_after_content_429",
        lambda: [
            reply(error_event=ErrorEvent("Throttling.RateQuota", "busy", 429, after_frames=2))
        ],
        RateLimitError,
        prefix(2),
    ),
    Fault(
        "error_event_after_content_500",
        lambda: [
            reply(
                error_event=ErrorEvent(
                    "InternalError", "oops", 500, after_frames=1, space_after_colon=True
                )
            )
        ],
        ServerError,
        prefix(1),
    ),
    Fault(
        "error_event_429_then_ok",
        then_ok(lambda: reply(error_event=ErrorEvent("Throttling.RateQuota", "busy", 429))),
        None,
        requests=2,
    ),
]

PROTOCOL = [
    Fault("malformed_first_frame", lambda: [reply(malformed_frame_at=0)], ProtocolError),
    Fault("malformed_third_frame", lambda: [reply(malformed_frame_at=2)], ProtocolError, prefix(2)),
    Fault("unknown_fields", UNKNOWN_FIELDS, None),
    *[
        Fault(f"wrong_type_{name}", first_then(bad), ProtocolError, prefix(1))
        for name, bad in WRONG_TYPES.items()
    ],
    Fault(
        "invalid_utf8",
        lambda: [Reply(raw_body=_frame(dumps(_content(TEXT[0]))).encode() + b"data:\xff\xfe\n\n")],
        ProtocolError,
        prefix(1),
    ),
    Fault(
        "html_200",
        lambda: [Reply(raw_body=b"<html>captive portal</html>", content_type="text/html")],
        ProtocolError,
    ),
    Fault(
        "json_200_not_an_object",
        lambda: [Reply(raw_body=b"[1, 2]", content_type="application/json")],
        ProtocolError,
    ),
    Fault(
        "recovered_after_reset",
        then_ok(lambda: reply(reset_before_status=True)),
        None,
        requests=2,
    ),
    Fault(
        "recovered_after_garbage",
        then_ok(lambda: Reply(garbage=b"\x16\x03\x01")),
        None,
        requests=2,
    ),
    Fault("recovered_after_drop_0", then_ok(lambda: reply(drop_after_frames=0)), None, requests=2),
]

FAULTS = TRANSPORT + STALLS + HTTP + IN_STREAM + PROTOCOL


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
def test_fault(
    fault: Fault, mode: str, dashscope_emulator: DashScopeEmulator, retry_delays: list[float]
) -> None:
    client = dict(fault.client)
    if client.get("base_url") == "CLOSED_PORT":
        client["base_url"] = f"http://127.0.0.1:{_closed_port()}/api/v1"
    outcome = run_case(mode, dashscope_emulator, fault.replies(), max_retries=RETRIES, **client)
    check_outcome(
        mode,
        outcome,
        error=fault.error,
        partial=fault.partial,
        requests=fault.requests,
        text=fault.text,
    )
    if fault.requests:
        # Every attempt after the first waited for one backoff; the policy may
        # also be asked once more and then be refused by Timeout.total.
        assert outcome.requests - 1 <= len(retry_delays) <= outcome.requests
    if fault.delays == "backoff":
        assert len(retry_delays) == RETRIES, retry_delays
        assert 0.5 <= retry_delays[0] <= 0.625 and 1.0 <= retry_delays[1] <= 1.25, retry_delays
    if fault.error is StreamInterruptedError or fault.error is APITimeoutError:
        assert outcome.error is not None
        # Timeouts are TimeoutErrors too; request ids survive into the error.
        if fault.error is APITimeoutError:
            assert isinstance(outcome.error, TimeoutError)
        if fault.partial is not None:
            assert getattr(outcome.error, "request_id", None) == REQUEST_ID


# -- the caller's own behaviour ------------------------------------------------------

SLOW_TEXT = [f"第{i}段 " for i in range(60)]
SLOW_FULL = "".join(SLOW_TEXT)


def slow() -> Reply:
    return Reply(text=SLOW_TEXT, frame_delay=0.01, request_id=REQUEST_ID)


def is_slow_prefix(output: ModelOutput | None) -> bool:
    return output is not None and SLOW_FULL.startswith(output.text) and output.text != SLOW_FULL


async def consume(mode: str, client: TongyiLLMClient, seen: list[ModelOutput], action: str) -> None:
    """Iterate ``mode`` and misbehave as ``action`` says after the first output."""
    if mode == "generate":
        seen.append(await client.generate(PROMPT))
        return
    if mode == "stream_with":
        async with client.generate_stream(PROMPT) as stream:
            async for output in stream:
                seen.append(output)
                if action == "break":
                    break
                if action == "raise":
                    raise ZeroDivisionError
    else:
        async for output in client.generate_stream(PROMPT):
            seen.append(output)
            if action == "break":
                break
            if action == "raise":
                raise ZeroDivisionError


def caller_case(emulator: DashScopeEmulator, reply_: Reply, body: Callable[..., None]) -> None:
    """Run ``body(client)`` with leak checks around it (the client is closed after it)."""
    baseline = Baseline(emulator)
    emulator.enqueue(reply_)
    client = TongyiLLMClient(
        api_key=emulator.api_key,
        base_url=emulator.base_url,
        timeout=Timeout(connect=1, read=2),
        max_retries=RETRIES,
        retry_policy=helpers.RETRY_POLICY,
    )
    with no_resource_warnings_or_loop_errors():
        try:
            body(client)
        finally:
            client.close()
    baseline.check()
    assert len(emulator.requests) == 1


async def closed_on_both_sides(emulator: DashScopeEmulator, client: TongyiLLMClient) -> None:
    assert await await_until(lambda: emulator.open_connections == 0, 1.0), (
        f"open={emulator.open_connections}"
    )


@pytest.mark.parametrize("mode", ["stream_with", "stream_bare"])
@pytest.mark.parametrize("action", ["break", "raise"])
def test_caller_leaves_an_async_stream_early(
    action: str, mode: str, dashscope_emulator: DashScopeEmulator
) -> None:
    def body(client: TongyiLLMClient) -> None:
        async def main() -> None:
            seen: list[ModelOutput] = []
            if action == "raise":
                with pytest.raises(ZeroDivisionError):
                    await consume(mode, client, seen, action)
            else:
                await consume(mode, client, seen, action)
            assert len(seen) == 1
            if mode == "stream_bare":
                # Documented: a bare loop left early is closed by garbage collection
                # (Stream and its generator form a cycle, so refcounting is not enough).
                gc.collect()
            await closed_on_both_sides(dashscope_emulator, client)
            await client.aclose()

        run_async(main)

    caller_case(dashscope_emulator, slow(), body)


@pytest.mark.parametrize("action", ["break", "raise", "interrupt", "drop"])
def test_caller_leaves_a_sync_stream_early(
    action: str, dashscope_emulator: DashScopeEmulator
) -> None:
    def body(client: TongyiLLMClient) -> None:
        seen: list[ModelOutput] = []
        outputs = client.sync_generate_stream(PROMPT)
        if action == "drop":  # no close(): dropping the generator must close the response
            for output in outputs:
                seen.append(output)
                break
            del outputs
        else:
            errors = {"raise": ZeroDivisionError, "interrupt": KeyboardInterrupt}
            with closing(outputs):  # type: ignore[type-var]
                if action == "break":
                    for output in outputs:
                        seen.append(output)
                        break
                else:
                    with pytest.raises(errors[action]):
                        for output in outputs:
                            seen.append(output)
                            raise errors[action]
        assert len(seen) == 1
        assert wait_until(
            lambda: dashscope_emulator.open_connections == 0,
            1.0,
        )

    caller_case(dashscope_emulator, slow(), body)


@pytest.mark.parametrize("mode", ["stream_with", "stream_bare", "generate"])
@pytest.mark.parametrize("how", ["cancel", "wait_for", "asyncio_timeout", "anyio_fail_after"])
def test_caller_cancels_or_times_out(
    how: str, mode: str, dashscope_emulator: DashScopeEmulator
) -> None:
    if how == "asyncio_timeout" and not hasattr(asyncio, "timeout"):
        pytest.skip("asyncio.timeout needs Python 3.11")

    def body(client: TongyiLLMClient) -> None:
        async def main() -> None:
            seen: list[ModelOutput] = []
            if how == "cancel":
                task = asyncio.create_task(consume(mode, client, seen, "read"))
                await await_until(lambda: len(dashscope_emulator.requests) == 1)
                await asyncio.sleep(0.1)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            elif how == "wait_for":
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(consume(mode, client, seen, "read"), 0.15)
            elif how == "asyncio_timeout":
                with pytest.raises(TimeoutError):
                    async with asyncio.timeout(0.15):  # type: ignore[attr-defined]
                        await consume(mode, client, seen, "read")
            else:
                with pytest.raises(TimeoutError):
                    with anyio.fail_after(0.15):
                        await consume(mode, client, seen, "read")
            if mode != "generate":
                assert seen and is_slow_prefix(seen[-1])
            await closed_on_both_sides(dashscope_emulator, client)
            await client.aclose()

        run_async(main)

    caller_case(dashscope_emulator, slow(), body)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("when", ["before_content", "after_content"])
def test_closing_the_client_while_a_stream_runs(
    when: str, mode: str, dashscope_emulator: DashScopeEmulator
) -> None:
    """Streams cut by close(): APIConnectionError before content, else StreamInterruptedError."""
    reply_ = slow() if when == "after_content" else reply(first_byte_delay=2)
    seen: list[ModelOutput] = []

    def started() -> bool:
        if when == "before_content":
            return len(dashscope_emulator.requests) == 1
        if mode in STREAM_MODES:
            return len(seen) >= 2
        return len(dashscope_emulator.requests) == 1

    def check(error: BaseException | None) -> None:
        if when == "before_content":
            assert type(error) is APIConnectionError, repr(error)
            assert error.partial is None
            assert "closed" in str(error)
        else:
            assert type(error) is StreamInterruptedError, repr(error)
            assert is_slow_prefix(error.partial)
            if mode in STREAM_MODES:
                assert error.partial == seen[-1]

    def body(client: TongyiLLMClient) -> None:
        if mode in ASYNC_MODES:

            async def main() -> None:
                task = asyncio.create_task(run_async_mode(mode, client, seen))
                await await_until(started)
                if mode == "generate" and when == "after_content":
                    await asyncio.sleep(0.1)
                await client.aclose()
                results = await asyncio.gather(task, return_exceptions=True)
                check(results[0])

            run_async(main)
        else:
            errors: list[BaseException | None] = []

            def worker() -> None:
                try:
                    run_sync_mode(mode, client, seen)
                except BaseException as exc:
                    errors.append(exc)
                else:
                    errors.append(None)

            thread = threading.Thread(target=worker)
            thread.start()
            assert wait_until(started)
            if mode == "sync_generate" and when == "after_content":
                time.sleep(0.1)
            client.close()
            thread.join(5)
            assert not thread.is_alive()
            check(errors[0])
        assert dashscope_emulator.wait_for_open_connections(0)

    caller_case(dashscope_emulator, reply_, body)
