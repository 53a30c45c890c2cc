"""The official SDK's bugs (PROTOCOL.md, "Known bugs in the official dashscope SDK").

One aiotongyi test per bug asserts the correct behaviour on the triggering input.
Where dashscope 2.0.2 still shows the bug, a ``_sdk`` twin feeds it the same
bytes and asserts the same correct behaviour under ``xfail(strict=True)``: the
day the SDK is fixed, the twin XPASSes and the run fails, so we notice.
Bugs marked (uncertain) in PROTOCOL.md (18, 20) get no twin.
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from dashscope.v2 import errors as v2_errors
from dashscope.v2.transport import http as v2_http

from aiotongyi import (
    APIConnectionError,
    APITimeoutError,
    BadRequestError,
    ModelOutput,
    ProtocolError,
    RateLimitError,
    StreamInterruptedError,
    Timeout,
    TongyiLLMClient,
    ToolCall,
)
from aiotongyi.testing import DashScopeEmulator, ErrorEvent, Reply, http_error

from . import _sdk, _sdk_internals
from ._ours import collect, outcome, raw_reply
from ._transcripts import load

SDK_BUG = pytest.mark.xfail(strict=True, reason="dashscope 2.0.2 still has this bug")


def _events(rid: str, texts: list[str], finish: str = "stop") -> bytes:
    """Incremental frames, one per text, then an empty finishing frame."""
    out = []
    for i, text in enumerate([*texts, ""]):
        data = {
            "output": {
                "choices": [
                    {
                        "message": {"content": text, "role": "assistant"},
                        "finish_reason": finish if i == len(texts) else "null",
                    }
                ]
            },
            "usage": {"total_tokens": 2 + i, "output_tokens": 1 + i, "input_tokens": 1},
            "request_id": rid,
        }
        line = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        out.append(f"id:{i + 1}\nevent:result\n:HTTP_STATUS/200\ndata:{line}\n\n")
    return "".join(out).encode()


# ---- 1. lone CR line endings ---------------------------------------------------


def _lone_cr() -> bytes:
    return load("plain_text").body.replace(b"\n", b"\r")


async def test_bug01_lone_cr_gives_every_frame(
    ours: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    t = load("plain_text")
    outputs, exc = await collect(ours, dashscope_emulator, raw_reply(_lone_cr(), chunk_sizes=[7]))
    assert exc is None
    assert len(outputs) == 4
    assert outputs[-1].text == t.expect["text"]
    assert outputs[-1].finish_reason == "stop"


@SDK_BUG
async def test_bug01_lone_cr_sdk_legacy_async(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(raw_reply(_lone_cr()))
    with _sdk.legacy_base_url(dashscope_emulator.base_url):
        responses = await _sdk.legacy_async_responses()
    assert len(responses) == 4
    assert _sdk.legacy_text(responses) == load("plain_text").expect["text"]


# ---- 2. multi-line data --------------------------------------------------------


async def test_bug02_multiline_data_is_one_frame(
    ours: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    t = load("bug_multiline_data")
    outputs, exc = await collect(ours, dashscope_emulator, t.to_reply())
    assert exc is None
    assert len(outputs) == 1
    assert await outcome(ours, dashscope_emulator, t.to_reply(chunk_sizes=[5])) == t.expected()


@SDK_BUG
def test_bug02_multiline_data_sdk_legacy(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(load("bug_multiline_data").to_reply())
    with _sdk.legacy_base_url(dashscope_emulator.base_url):
        responses = _sdk.legacy_responses()
    assert [r.status_code for r in responses] == [200]
    assert _sdk.legacy_text(responses) == "多行"


# ---- 3. `event: error` with a space -------------------------------------------


async def test_bug03_spaced_event_error_is_a_rate_limit_error(
    ours: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    t = load("bug_event_error_space")
    _, exc = await collect(ours, dashscope_emulator, t.to_reply())
    assert isinstance(exc, RateLimitError)
    assert (exc.status_code, exc.code) == (429, "Throttling.RateQuota")
    assert exc.partial is not None and exc.partial.text == "Hi"
    assert await outcome(ours, dashscope_emulator, t.to_reply(chunk_sizes=[3])) == t.expected()


@SDK_BUG
def test_bug03_spaced_event_error_sdk_legacy(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(load("bug_event_error_space").to_reply())
    with _sdk.legacy_base_url(dashscope_emulator.base_url):
        responses = _sdk.legacy_responses()  # raises TypeError today
    assert (responses[-1].status_code, responses[-1].code) == (429, "Throttling.RateQuota")


# ---- 4. the status inside the stream -------------------------------------------


@pytest.mark.parametrize(
    ("name", "status"), [("rate_limit_in_200", 429), ("content_filter_mid_stream", 400)]
)
async def test_bug04_in_stream_status_comes_from_the_comment(
    ours: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, name: str, status: int
) -> None:
    t = load(name)
    result = await outcome(ours, dashscope_emulator, t.to_reply())
    assert result == t.expected()
    assert result["error"]["status_code"] == status  # type: ignore[index]


@SDK_BUG
def test_bug04_in_stream_status_sdk_legacy(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(load("rate_limit_in_200").to_reply())
    with _sdk.legacy_base_url(dashscope_emulator.base_url):
        responses = _sdk.legacy_responses()
    assert responses[-1].status_code == 429


@SDK_BUG
def test_bug04_in_stream_status_sdk_v2() -> None:
    t = load("rate_limit_in_200")
    with _sdk.sdk_router(_sdk.respond(t.body, headers=t.response_headers())):
        client = _sdk.v2_client()
        try:
            result = _sdk.v2_outcome(client)
        finally:
            client.close()
    assert result["error"]["status_code"] == 429  # type: ignore[index]


# ---- 5. no trailing blank line -------------------------------------------------


@pytest.mark.parametrize("ending", [b"\n", b""], ids=["one-lf", "bare-eof"])
async def test_bug05_last_event_without_blank_line_is_dispatched(
    ours: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, ending: bytes
) -> None:
    t = load("bug_no_trailing_blank_line")
    body = t.body.rstrip(b"\n") + ending
    assert await outcome(ours, dashscope_emulator, t.to_reply(body=body)) == t.expected()


@SDK_BUG
def test_bug05_last_event_without_blank_line_sdk_v2() -> None:
    t = load("bug_no_trailing_blank_line")
    with _sdk.sdk_router(_sdk.respond(t.body, headers=t.response_headers())):
        client = _sdk.v2_client()
        try:
            result = _sdk.v2_outcome(client)
        finally:
            client.close()
    assert result["finish_reason"] == "stop"


# ---- 6. a long line ------------------------------------------------------------

_LONG_TEXT = "长" * 200_000  # 600 kB of UTF-8 on one data: line


def _long_line() -> bytes:
    return _events("long-line-0006", [_LONG_TEXT])


async def test_bug06_long_line_decodes(
    ours: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    outputs, exc = await collect(
        ours, dashscope_emulator, raw_reply(_long_line(), chunk_sizes=[65_537])
    )
    assert exc is None
    assert outputs[-1].text == _LONG_TEXT
    assert outputs[-1].finish_reason == "stop"


@SDK_BUG
async def test_bug06_long_line_sdk_legacy_async(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(raw_reply(_long_line()))
    with _sdk.legacy_base_url(dashscope_emulator.base_url):
        responses = await _sdk.legacy_async_responses()  # LineTooLong today
    assert _sdk.legacy_text(responses) == _LONG_TEXT


# ---- 7. an event without output ------------------------------------------------


async def test_bug07_event_without_output_is_skipped(
    ours: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    t = load("bug_no_output_event")
    outputs, exc = await collect(ours, dashscope_emulator, t.to_reply())
    assert exc is None
    assert [o.delta for o in outputs] == ["ok", ""]
    assert await outcome(ours, dashscope_emulator, t.to_reply(chunk_sizes=[2])) == t.expected()


@SDK_BUG
def test_bug07_event_without_output_sdk_legacy(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(load("bug_no_output_event").to_reply())
    with _sdk.legacy_base_url(dashscope_emulator.base_url):
        responses = _sdk.legacy_responses()  # TypeError today
    assert _sdk.legacy_text(responses) == "ok"


# ---- 8. truncation ----------------------------------------------------------------


async def test_bug08_truncated_stream_is_an_error(
    ours: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    t = load("bug_truncated")
    _, exc = await collect(ours, dashscope_emulator, t.to_reply())
    assert isinstance(exc, StreamInterruptedError)
    assert exc.partial is not None and exc.partial.text == "Half an answer"
    assert await outcome(ours, dashscope_emulator, t.to_reply(chunk_sizes=[9])) == t.expected()


async def test_bug08_truncated_before_content_is_a_connection_error(
    ours: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    _, exc = await collect(ours, dashscope_emulator, raw_reply(b":keepalive\n\n"))
    assert type(exc) is APIConnectionError
    assert exc.partial is None


@SDK_BUG
def test_bug08_truncated_stream_sdk_v2() -> None:
    t = load("bug_truncated")
    with _sdk.sdk_router(_sdk.respond(t.body, headers=t.response_headers())):
        client = _sdk.v2_client()
        try:
            with pytest.raises(v2_errors.DashScopeError):
                client.chat.completions.create(
                    model="qwen-plus", messages="hi", stream=True
                ).get_final_message()
        finally:
            client.close()


@SDK_BUG
def test_bug08_truncated_stream_sdk_legacy(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(load("bug_truncated").to_reply())
    with _sdk.legacy_base_url(dashscope_emulator.base_url):
        responses = _sdk.legacy_responses()
    assert responses[-1].status_code != 200


# ---- 9. the "null" string ----------------------------------------------------------


async def test_bug09_intermediate_finish_reason_is_none(
    ours: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    outputs, exc = await collect(ours, dashscope_emulator, load("plain_text").to_reply())
    assert exc is None
    assert [o.finish_reason for o in outputs] == [None, None, None, "stop"]


@SDK_BUG
def test_bug09_intermediate_finish_reason_sdk_v2() -> None:
    t = load("plain_text")
    with _sdk.sdk_router(_sdk.respond(t.body, headers=t.response_headers())):
        client = _sdk.v2_client()
        try:
            chunks = list(
                client.chat.completions.create(model="qwen-plus", messages="hi", stream=True)
            )
        finally:
            client.close()
    assert [c.choices[0].finish_reason for c in chunks] == [None, None, None, "stop"]


# ---- 10. a reset mid-chunk --------------------------------------------------------


def _first_frame_len() -> int:
    return len(load("plain_text").body.split(b"\n\n")[0]) + 2


async def test_bug10_reset_mid_body_is_stream_interrupted(
    ours: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    reply = load("plain_text").to_reply()
    reply.drop_after_bytes = _first_frame_len() + 20
    outputs, exc = await collect(ours, dashscope_emulator, reply)
    assert isinstance(exc, StreamInterruptedError)
    assert exc.partial is not None and exc.partial.text == "春眠"
    assert [o.text for o in outputs] == ["春眠"]


@SDK_BUG
def test_bug10_reset_mid_body_sdk_v2() -> None:
    t = load("plain_text")
    response = _sdk.respond(
        t.body[: _first_frame_len() + 20],
        headers=t.response_headers(),
        fail_with=httpx.RemoteProtocolError("peer closed connection"),
    )
    with _sdk.sdk_router(response):
        client = _sdk.v2_client()
        try:
            with pytest.raises(v2_errors.APIConnectionError):  # raw httpx error today
                list(client.chat.completions.create(model="qwen-plus", messages="hi", stream=True))
        finally:
            client.close()


@SDK_BUG
def test_bug10_reset_mid_body_sdk_legacy(dashscope_emulator: DashScopeEmulator) -> None:
    reply = load("plain_text").to_reply()
    reply.drop_after_bytes = _first_frame_len() + 20
    dashscope_emulator.enqueue(reply)
    with _sdk.legacy_base_url(dashscope_emulator.base_url), pytest.raises(Exception) as info:
        _sdk.legacy_responses()
    assert not isinstance(info.value, requests.exceptions.RequestException)


# ---- 11. a JSON reply to a stream request -------------------------------------


async def test_bug11_json_reply_is_the_final_frame(
    ours: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    t = load("bug_json_reply")
    assert await outcome(ours, dashscope_emulator, t.to_reply()) == t.expected()


@SDK_BUG
def test_bug11_json_reply_sdk_v2() -> None:
    t = load("bug_json_reply")
    with _sdk.sdk_router(_sdk.respond(t.body, headers=t.response_headers())):
        client = _sdk.v2_client()
        try:
            result = _sdk.v2_outcome(client)  # httpx_sse.SSEError today
        finally:
            client.close()
    assert result == t.expected()


# ---- 12. streams never retried ----------------------------------------------------


async def test_bug12_stream_retried_before_content(dashscope_emulator: DashScopeEmulator) -> None:
    emu = dashscope_emulator
    t = load("plain_text")
    busy = http_error(503, "ModelServingError", "busy", retry_after=0)
    throttled = load("rate_limit_in_200").to_reply()
    async with TongyiLLMClient(api_key=emu.api_key, base_url=emu.base_url, max_retries=2) as client:
        # The in-stream 429 goes first: its backoff (no Retry-After is possible
        # inside a stream) is then the shortest, attempt 0's.
        emu.enqueue(throttled, busy)
        assert await outcome(client, emu, t.to_reply()) == t.expected()
    assert len(emu.requests) == 3


@SDK_BUG
def test_bug12_stream_retried_sdk_v2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(v2_http, "_sleep", lambda seconds: None)
    t = load("plain_text")
    busy = load("http_503_json")
    with _sdk.sdk_router(
        _sdk.respond(busy.body, status=503, headers=busy.response_headers()),
        _sdk.respond(t.body, headers=t.response_headers()),
    ) as route:
        client = _sdk.v2_client(max_retries=2)
        try:
            result = _sdk.v2_outcome(client)
        finally:
            client.close()
    assert route.call_count == 2
    assert result == t.expected()


# ---- 13. quota 429s are final -----------------------------------------------------


@pytest.mark.parametrize("in_stream", [False, True], ids=["http-429", "in-stream-429"])
@pytest.mark.parametrize("code", ["Throttling.AllocationQuota", "PrepaidBillOverdue"])
async def test_bug13_quota_429_is_not_retried(
    dashscope_emulator: DashScopeEmulator, code: str, in_stream: bool
) -> None:
    emu = dashscope_emulator
    if in_stream:
        reply = Reply(
            error_event=ErrorEvent(code, "quota", status=429), headers={"retry-after": "0"}
        )
    else:
        reply = http_error(429, code, "quota", retry_after=0)
    async with TongyiLLMClient(api_key=emu.api_key, base_url=emu.base_url, max_retries=2) as client:
        _, exc = await collect(client, emu, reply, reply, reply)
    assert isinstance(exc, RateLimitError)
    assert (exc.status_code, exc.code) == (429, code)
    assert len(emu.requests) == 1


@SDK_BUG
@pytest.mark.parametrize("code", ["Throttling.AllocationQuota", "PrepaidBillOverdue"])
def test_bug13_quota_429_sdk_v2(monkeypatch: pytest.MonkeyPatch, code: str) -> None:
    monkeypatch.setattr(v2_http, "_sleep", lambda seconds: None)
    body = f'{{"code":"{code}","message":"quota","request_id":"q-13"}}'.encode()
    with _sdk.sdk_router(
        _sdk.respond(body, status=429, headers={"content-type": "application/json"})
    ) as route:
        client = _sdk.v2_client(max_retries=2)
        try:
            with pytest.raises(v2_errors.RateLimitError):
                client.chat.completions.create(model="qwen-plus", messages="hi")
        finally:
            client.close()
    assert route.call_count == 1


# ---- 14. duplicate POSTs ------------------------------------------------------------
# No SDK twin: the trigger is a non-stream call timing out before any byte,
# which PROTOCOL.md's own retry policy also retries (before content). What
# aiotongyi guarantees is that a timeout after content is never re-sent.


async def test_bug14_timeout_after_content_is_not_resent(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    emu = dashscope_emulator
    reply = Reply(text=["a", "b"], stall_after_frames=1, stall_seconds=1.5)
    async with TongyiLLMClient(
        api_key=emu.api_key, base_url=emu.base_url, max_retries=2, timeout=Timeout(read=0.3)
    ) as client:
        outputs, exc = await collect(client, emu, reply)
    assert isinstance(exc, APITimeoutError)
    assert exc.partial is not None and exc.partial.text == "a"
    assert [o.text for o in outputs] == ["a"]
    assert len(emu.requests) == 1


# ---- 15. outputs never change after delivery -------------------------------------


async def test_bug15_outputs_are_immutable(
    ours: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    t = load("parallel_tool_calls")
    emu = dashscope_emulator
    emu.enqueue(t.to_reply())
    seen: list[tuple[ModelOutput, tuple[ToolCall, ...]]] = []
    async for out in ours.generate_stream("hi"):
        seen.append((out, copy.deepcopy(out.tool_calls)))
    for out, snapshot in seen:
        assert out.tool_calls == snapshot
        assert isinstance(out.tool_calls, tuple)
    assert len(seen[0][0].tool_calls) == 1
    assert seen[0][0].tool_calls[0].arguments == '{"city": "'
    with pytest.raises(AttributeError):
        seen[0][0].text = "changed"  # type: ignore[misc]


@SDK_BUG
def test_bug15_outputs_are_immutable_sdk_legacy(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(load("parallel_tool_calls").to_reply())
    seen = []
    with _sdk.legacy_base_url(dashscope_emulator.base_url):
        for response in _sdk_legacy_iter(incremental_output=False):
            calls = response.output.choices[0].message.get("tool_calls")
            seen.append((response, copy.deepcopy(calls)))
    first, snapshot = seen[0]
    assert first.output.choices[0].message.get("tool_calls") == snapshot


def _sdk_legacy_iter(**params: Any) -> Iterator[Any]:
    kwargs: dict[str, Any] = {
        "model": "qwen-plus",
        "messages": [{"role": "user", "content": "hi"}],
        "api_key": _sdk.SDK_KEY,
        "stream": True,
        "result_format": "message",
        **params,
    }
    return _sdk.legacy_call(**kwargs)


# ---- 16. connect timeouts ---------------------------------------------------------


class BlackHole:
    """A loopback port whose accept queue is full, so new SYNs are dropped."""

    def __init__(self) -> None:
        self._server = socket.socket()
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(0)
        self.port = self._server.getsockname()[1]
        self._fillers: list[socket.socket] = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", self.port))
            except BlockingIOError:
                pass
            self._fillers.append(filler)
        time.sleep(0.05)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def close(self) -> None:
        for sock in [*self._fillers, self._server]:
            sock.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    try:
        yield hole
    finally:
        hole.close()


async def test_bug16_connect_timeout_is_bounded(black_hole: BlackHole) -> None:
    started = time.monotonic()
    async with TongyiLLMClient(
        api_key="sk-x", base_url=black_hole.base_url, max_retries=0, timeout=Timeout(connect=0.3)
    ) as client:
        with pytest.raises(APITimeoutError) as info:
            await client.generate("hi")
    assert info.value.partial is None
    assert time.monotonic() - started < 2.0


@SDK_BUG
async def test_bug16_connect_timeout_sdk_legacy_async(black_hole: BlackHole) -> None:
    with _sdk.legacy_base_url(black_hole.base_url):
        try:
            await asyncio.wait_for(_sdk.legacy_async_responses(request_timeout=0.3), timeout=0.8)
        except asyncio.TimeoutError:
            pytest.fail("the legacy async client was still connecting after 0.8 s")
        except Exception:
            return
    pytest.fail("a black-holed host cannot answer")


# ---- 17. errors are raised, not returned ---------------------------------------


async def test_bug17_errors_are_raised(
    ours: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    t = load("http_400_json")
    _, exc = await collect(ours, dashscope_emulator, t.to_reply())
    assert isinstance(exc, BadRequestError)
    assert (exc.code, exc.request_id) == ("InvalidParameter", t.request_id)
    outputs, exc = await collect(
        ours, dashscope_emulator, Reply(text=["a", "b", "c"], malformed_frame_at=1)
    )
    assert isinstance(exc, ProtocolError)
    assert [o.text for o in outputs] == ["a"]


@SDK_BUG
def test_bug17_errors_are_raised_sdk_legacy(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(load("http_400_json").to_reply())
    with _sdk.legacy_base_url(dashscope_emulator.base_url), pytest.raises(Exception):  # noqa: B017
        _sdk.legacy_responses()


# ---- 18. one loop thread per client (uncertain: no twin) --------------------------


def _loop_threads() -> set[threading.Thread]:
    # asyncio_N are a loop's default-executor workers (getaddrinfo), bounded by
    # the executor; the bug is a new *loop* thread per call.
    return {t for t in threading.enumerate() if not t.name.startswith("asyncio_")}


def test_bug18_sync_calls_share_one_loop_thread(dashscope_emulator: DashScopeEmulator) -> None:
    emu = dashscope_emulator
    before = set(threading.enumerate())
    with TongyiLLMClient(api_key=emu.api_key, base_url=emu.base_url) as client:
        first = client.sync_generate("one")
        during = _loop_threads() - before
        for _ in range(3):
            client.sync_generate("again")
            assert _loop_threads() - before == during
    assert first.finish_reason == "stop"
    assert len(during) == 1
    deadline = time.monotonic() + 2.0
    while set(threading.enumerate()) - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert set(threading.enumerate()) - before == set()


# ---- 19. cleanup -------------------------------------------------------------------


async def test_bug19_early_break_releases_the_connection(
    ours: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    emu = dashscope_emulator
    emu.enqueue(Reply(text=["a", "b", "c", "d"], frame_delay=0.05))
    async with ours.generate_stream("hi") as stream:
        async for _ in stream:
            break
    # Poll without blocking: closing a transport needs this loop to run.
    deadline = time.monotonic() + 2.0
    # The emulator's counter offers no event to await.
    while emu.open_connections and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    assert emu.open_connections == 0


@SDK_BUG
async def test_bug19_no_session_left_open_sdk_legacy_async(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    dashscope_emulator.enqueue(load("plain_text").to_reply())
    kwargs: dict[str, Any] = {
        "model": "qwen-plus",
        "messages": [{"role": "user", "content": "hi"}],
        "api_key": _sdk.SDK_KEY,
        "stream": True,
        "result_format": "message",
        "incremental_output": True,
    }
    with _sdk.legacy_base_url(dashscope_emulator.base_url):
        async for _ in await _sdk.legacy_acall(**kwargs):
            break
    # The shared per-loop session has no owner that closes it: at interpreter
    # exit (or loop GC) aiohttp reports "Unclosed client session".
    session = _sdk_internals.legacy_aio_session(asyncio.get_running_loop())
    left_open = session is not None and not session.closed
    await _sdk.close_legacy_aio_session()
    assert not left_open


# ---- 20. resend on disconnect (uncertain: no twin) --------------------------------


@pytest.mark.parametrize("retries", [0, 1])
async def test_bug20_disconnect_before_status_follows_retry_rules(
    dashscope_emulator: DashScopeEmulator, retries: int
) -> None:
    emu = dashscope_emulator
    async with TongyiLLMClient(
        api_key=emu.api_key, base_url=emu.base_url, max_retries=retries
    ) as client:
        _, exc = await collect(client, emu, *[Reply(reset_before_status=True)] * (retries + 1))
    assert type(exc) is APIConnectionError
    assert len(emu.requests) == retries + 1
