"""Hostile servers (raw TCP, bytes by hand) and careless callers: every call ends, typed.

The promises under test (docs/streaming.md, docs/errors.md):

* ``Timeout.read`` is the longest silence between two received bytes, and
  bounds the wait for the status line and headers as a whole; ``Timeout.total``
  bounds everything.  No sequence of bytes or silences outlives them.
* Every body read is capped; past a cap the call fails with ``ProtocolError``.
* The API key is in no object reachable from a raised error.
* A stream is read once.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import struct
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import aiohttp.client_proto
import aiohttp.http_parser
import pytest

from aiotongyi import (
    APITimeoutError,
    ProtocolError,
    RateLimitError,
    Timeout,
    TongyiError,
    TongyiLLMClient,
)
from aiotongyi.testing import DashScopeEmulator, http_error

from .helpers import await_until, peak_rss_bytes, reset_peak_rss, rss_bytes
from .hostile import Conn, chunk, frame, head, serving

SECRET = "sk-hostile-SECRET-5e1d0b"
ROOT = Path(__file__).resolve().parents[2]

# -- the two HTTP parsers -------------------------------------------------------------


@pytest.fixture(params=["c", "py"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run with aiohttp's compiled response parser and with its pure-Python one.

    They fail differently on the same bytes (the compiled one may swallow a
    malformed chunk and wait, the Python one raises at once); both must end.
    Patching the name the client protocol builds its parser from is what
    ``AIOHTTP_NO_EXTENSIONS=1`` does at import time (checked once in a subprocess below).
    """
    if request.param == "py":
        monkeypatch.setattr(
            aiohttp.client_proto, "HttpResponseParser", aiohttp.http_parser.HttpResponseParserPy
        )
    return str(request.param)


# -- scripts ----------------------------------------------------------------------------

Script = Callable[[Conn], Awaitable[None]]
FIRST = frame("hello")


def _then(*steps: bytes | float | str) -> Script:
    """A script: read the request, then send bytes / sleep seconds / "hold" / "close"."""

    async def script(conn: Conn) -> None:
        await conn.read_request()
        for step in steps:
            if isinstance(step, bytes):
                await conn.send(step)
            elif isinstance(step, float):
                await asyncio.sleep(step)
            elif step == "hold":
                await conn.hold()
            elif step == "close":
                conn.close()
                return
            elif step == "reset":
                _reset(conn)
                return
        await conn.hold()

    return script


def _reset(conn: Conn) -> None:
    """Close with RST (SO_LINGER 0) instead of FIN."""
    sock = conn.writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.writer.transport.abort()


def _forever(make: Callable[[int], bytes], pause: float, *, start: bytes = b"") -> Script:
    """A script that sends ``start``, then ``make(i)`` every ``pause`` seconds, forever."""

    async def script(conn: Conn) -> None:
        await conn.read_request()
        await conn.send(start)
        i = 0
        while True:
            await conn.send(make(i))
            i += 1
            await asyncio.sleep(pause)

    return script


EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
READ = 0.5  # the idle limit of the read cases; the brief's own case uses 2 s (below)

#: Scripts that must end within ``READ`` + 1 s with a typed error, ``total`` unset.
#: name -> (script, text of the partial the error must keep, or None)
READ_CASES: dict[str, tuple[Script, str | None]] = {
    "silent_before_status": (_then("hold"), None),
    "half_a_status_line": (_then(b"HTTP/1.1 2", "hold"), None),
    "headers_then_silence": (_then(head(), "hold"), None),
    "bad_chunk_then_silence": (_then(head() + chunk(FIRST), 0.2, b"zz\r\n", "hold"), "hello"),
    "bad_chunk_then_close": (_then(head() + chunk(FIRST), 0.2, b"zz\r\n", "close"), "hello"),
    "huge_chunk_then_silence": (_then(head() + chunk(FIRST), b"7fffffff\r\n: x", "hold"), "hello"),
    "chunk_cut_then_silence": (_then(head() + chunk(FIRST), b"ff\r\n: x\n", "hold"), "hello"),
    "length_lies_then_close": (
        _then(head(chunked=False, extra=(("Content-Length", "100000"),)) + FIRST, "close"),
        "hello",
    ),
    "reset_after_content": (_then(head() + chunk(FIRST), 0.1, "reset"), "hello"),
    "gzip_garbage": (
        _then(head(extra=(("Content-Encoding", "gzip"),)) + chunk(b"\x1f\x8b garbage" * 50)),
        None,
    ),
    "deflate_garbage_after_content": (
        _then(
            head(chunked=False, extra=(("Content-Encoding", "deflate"),)) + b"not deflate" * 100,
            "close",
        ),
        None,
    ),
    # aiohttp reads 1xx answers in a loop: an endless run of them is a header section
    "endless_1xx": (
        _forever(lambda i: b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", 0.01),
        None,
    ),
    # header lines arrive, but the header section never completes: read bounds it whole
    "endless_header_section_slow": (
        _forever(lambda i: f"X-Pad-{i}: v\r\n".encode(), 0.3, start=b"HTTP/1.1 200 OK\r\n"),
        None,
    ),
    "endless_header_section_fast": (
        _forever(lambda i: f"X-Pad-{i}: v\r\n".encode(), 0.0, start=b"HTTP/1.1 200 OK\r\n"),
        None,
    ),
    "endless_header_line": (
        _forever(lambda i: b"v" * 1024, 0.0, start=b"HTTP/1.1 200 OK\r\nX-Long: "),
        None,
    ),
    "error_status_then_silence": (
        _then(head("500 Internal Server Error", "application/json"), "hold"),
        None,
    ),
}


def _client(base_url: str, timeout: Timeout, **kwargs: Any) -> TongyiLLMClient:
    kwargs.setdefault("max_retries", 0)
    return TongyiLLMClient(api_key=SECRET, base_url=base_url, timeout=timeout, **kwargs)


async def _stream_call(client: TongyiLLMClient, seen: list[str]) -> None:
    async with client.generate_stream("hi") as stream:
        async for output in stream:
            seen.append(output.text)


async def _timed_call(
    base_url: str, timeout: Timeout, limit: float
) -> tuple[BaseException | None, list[str], float]:
    """One streamed call; fails the test if it outlives ``limit`` seconds."""
    client = _client(base_url, timeout)
    seen: list[str] = []
    error: BaseException | None = None
    started = time.monotonic()
    try:
        await asyncio.wait_for(_stream_call(client, seen), limit)
    except TongyiError as exc:
        error = exc
    except asyncio.TimeoutError:
        pytest.fail(f"the call outlived {limit} s; it got {seen}")
    finally:
        await client.aclose()
    return error, seen, time.monotonic() - started


def _check_typed(error: BaseException | None, seen: list[str], partial: str | None) -> None:
    assert isinstance(error, TongyiError), f"no typed error: {error!r}"
    got = error.partial
    assert (None if got is None else got.text) == partial, (error, seen)
    assert seen == ([] if partial is None else [partial])


# -- item 1: the read promise, on both parsers ------------------------------------------


@pytest.mark.parametrize("form", ["generate", "sync_stream", "sync_generate"])
def test_the_read_promise_holds_in_every_call_form(form: str, parser: str) -> None:
    script = _then(head() + chunk(FIRST), 0.2, b"zz\r\n", "hold")
    with serving(script) as server:
        client = _client(server.base_url, Timeout(read=1, total=None))
        started = time.monotonic()
        try:
            with pytest.raises(TongyiError) as info:
                _call_form(form, client)
        finally:
            client.close()
    assert time.monotonic() - started < 1 + 1
    partial = info.value.partial
    assert partial is not None and partial.text == "hello"


async def test_a_malformed_chunk_after_content_cannot_defeat_read_timeout(parser: str) -> None:
    """The issue's own case: one frame, ``zz`` as a chunk size, then silence (or close)."""
    for then in ("hold", "close"):
        script = _then(head() + chunk(FIRST), 0.2, b"zz\r\n", then)
        with serving(script) as server:
            error, seen, elapsed = await _timed_call(
                server.base_url, Timeout(read=2, total=None), 10
            )
        _check_typed(error, seen, "hello")
        assert elapsed < 2 + 1, f"{parser}/{then}: ended after {elapsed:.1f} s"


@pytest.mark.parametrize("case", list(READ_CASES))
async def test_every_byte_sequence_ends_within_read(case: str, parser: str) -> None:
    script, partial = READ_CASES[case]
    with serving(script) as server:
        error, seen, elapsed = await _timed_call(
            server.base_url, Timeout(connect=1, read=READ, total=None), 10
        )
        assert await await_until(lambda: server.open_connections == 0, 2), "socket left open"
    _check_typed(error, seen, partial)
    assert elapsed < READ + 1, f"ended after {elapsed:.1f} s"


async def test_a_trickle_is_not_silence_but_total_ends_it(parser: str) -> None:
    """One byte every read - 0.1 s keeps a stream alive (the read promise), until ``total``."""
    trickle = b": keep-alive\n\n"
    script = _forever(
        lambda i: trickle[i % len(trickle) : i % len(trickle) + 1],
        0.3,
        start=head(chunked=False) + FIRST,
    )
    with serving(script) as server:
        error, seen, elapsed = await _timed_call(
            server.base_url, Timeout(connect=1, read=0.4, total=2.5), 10
        )
        # read alone does not end it: bytes keep coming
        client = _client(server.base_url, Timeout(connect=1, read=0.4, total=None))
        alive: list[str] = []
        try:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(_stream_call(client, alive), 2.0)
        finally:
            await client.aclose()
    assert isinstance(error, APITimeoutError), repr(error)
    assert error.partial is not None and error.partial.text == "hello"
    assert 2.5 <= elapsed < 3.5
    assert seen == alive == ["hello"]


@pytest.mark.parametrize("pause", [0.0, 0.05])
async def test_endless_keep_alive_comments_end_at_total(pause: float, parser: str) -> None:
    script = _forever(lambda i: chunk(b": keep-alive\n\n"), pause, start=head() + chunk(FIRST))
    with serving(script) as server:
        error, seen, elapsed = await _timed_call(
            server.base_url, Timeout(connect=1, read=1, total=1.5), 10
        )
    assert isinstance(error, APITimeoutError), repr(error)
    assert error.partial is not None and error.partial.text == "hello"
    assert seen == ["hello"]
    assert elapsed < 1.5 + 1


async def test_an_endless_sse_line_ends_at_its_cap_or_total(parser: str) -> None:
    """A ``data:`` line that never ends: the 64 MiB event cap (or ``total``) stops it."""
    block = b"x" * 65536
    script = _forever(lambda i: chunk(block), 0.0, start=head() + chunk(FIRST) + chunk(b"data:"))
    with serving(script) as server:
        error, seen, elapsed = await _timed_call(
            server.base_url, Timeout(connect=1, read=1, total=20), 30
        )
    assert isinstance(error, ProtocolError | APITimeoutError), repr(error)
    assert error.partial is not None and error.partial.text == "hello"
    assert seen == ["hello"]
    assert elapsed < 20 + 1


def test_the_real_pure_python_parser_switch() -> None:
    """``AIOHTTP_NO_EXTENSIONS=1`` in a fresh interpreter: the brief's case ends typed."""
    code = f"""
import asyncio, sys, time
sys.path.insert(0, {str(ROOT)!r})
from tests.reliability.hostile import serving, head, chunk, frame
from tests.reliability.test_hostile import _then, _timed_call
from aiotongyi import Timeout, TongyiError
with serving(_then(head() + chunk(frame("hello")), 0.2, b"zz\\r\\n", "hold")) as server:
    error, seen, elapsed = asyncio.run(_timed_call(server.base_url, Timeout(read=2), 10))
assert isinstance(error, TongyiError), error
assert error.partial.text == "hello" and elapsed < 3, (error, elapsed)
print(type(error).__name__)
"""
    env = {**os.environ, "AIOHTTP_NO_EXTENSIONS": "1"}
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() in {"StreamInterruptedError", "APITimeoutError"}


# -- item 5: every body is capped ---------------------------------------------------------


def _json_flood(size: int) -> Script:
    """A 200 ``application/json`` reply of ``size`` bytes, written as fast as possible."""
    block = b" " * (1 << 20)

    async def script(conn: Conn) -> None:
        await conn.read_request()
        length = (("Content-Length", str(size)),)
        await conn.send(
            head(content_type="application/json", chunked=False, extra=length) + b'{"output": "'
        )
        sent = 12
        while sent < size:
            await conn.send(block[: min(len(block), size - sent)])
            sent += len(block)
        await conn.hold()

    return script


@pytest.mark.parametrize("form", ["stream", "embed"])
async def test_a_json_body_past_the_cap_is_a_protocol_error(form: str) -> None:
    gc.collect()
    measured = reset_peak_rss()
    before = rss_bytes()
    with serving(_json_flood(70 << 20)) as server:
        client = _client(server.base_url, Timeout(connect=1, read=5, total=60))
        try:
            with pytest.raises(ProtocolError, match="larger than"):
                if form == "stream":
                    await client.generate("hi")
                else:
                    await client.embed("hi")
        finally:
            await client.aclose()
    if measured:
        growth = peak_rss_bytes() - before
        # the cap (64 MiB) is held once, plus aiohttp's buffers: never the whole 70 MiB twice
        assert growth < 140 << 20, f"peak RSS grew by {growth >> 20} MiB"


async def test_an_error_body_is_cut_at_64_kib() -> None:
    body = b'{"code": "InternalError", "message": "' + b"m" * (1 << 20) + b'"}'
    script = _then(_with_body("500 Internal Server Error", body))
    with serving(script) as server:
        client = _client(server.base_url, Timeout(connect=1, read=2, total=10))
        try:
            with pytest.raises(TongyiError) as info:
                await client.generate("hi")
        finally:
            await client.aclose()
    assert info.value.status_code == 500
    assert len(str(info.value)) <= 70 * 1024


# -- item 6: Retry-After: 0 cannot become a busy loop ---------------------------------------


def test_retry_after_zero_waits_the_floor(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(*[http_error(429, "Throttling", retry_after=0)] * 60)
    client = TongyiLLMClient(
        api_key="sk-x",
        base_url=dashscope_emulator.base_url,
        timeout=Timeout(connect=1, read=1, total=1),
        max_retries=50,
    )
    try:
        with pytest.raises((RateLimitError, APITimeoutError)):
            client.sync_generate("hi")
    finally:
        client.close()
    # 0.1 s floor between attempts: about ten in one second, never hundreds
    assert 2 <= len(dashscope_emulator.requests) <= 12, len(dashscope_emulator.requests)


# -- item 13: a stream is read once ---------------------------------------------------------


async def test_reading_a_finished_or_closed_stream_again_raises(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    client = TongyiLLMClient(api_key="sk-x", base_url=dashscope_emulator.base_url)
    try:
        stream = client.generate_stream("hi")
        async with stream:
            texts = [output.text async for output in stream]
        assert texts
        with pytest.raises(RuntimeError, match="ended"):
            await stream.__anext__()
        with pytest.raises(RuntimeError, match="ended"):
            async for _ in stream:
                pass
        closed = client.generate_stream("hi")
        await closed.aclose()
        with pytest.raises(RuntimeError, match="ended"):
            async for _ in closed:
                pass
    finally:
        await client.aclose()


# -- item 8: the key is in no object reachable from a raised error ---------------------------


def _reachable_text(exc: BaseException) -> Iterator[str]:
    """Every text a tool could print from ``exc``: the chain, attributes, frames, locals."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]

    def walk(value: object, depth: int) -> Iterator[str]:
        if id(value) in seen or depth > 6:
            return
        seen.add(id(value))
        if isinstance(value, BaseException):
            pending.append(value)
            seen.discard(id(value))  # visited as an exception below
            return
        if isinstance(value, str | bytes | int | float | bool | type(None)):
            yield repr(value)
            return
        if isinstance(value, TracebackType):  # a frame's local: its frames are reachable too
            while value is not None:
                for local in value.tb_frame.f_locals.values():
                    yield from walk(local, depth + 1)
                value = value.tb_next
            return
        try:
            yield repr(value)
        except Exception as problem:  # a broken repr is not a leak
            yield f"<repr failed: {problem!r}>"
        items: list[object] = []
        if isinstance(value, dict) or (hasattr(value, "items") and callable(value.items)):
            try:
                items = [part for pair in value.items() for part in pair]  # type: ignore[union-attr]
            except Exception:
                items = []
        elif isinstance(value, list | tuple | set | frozenset):
            items = list(value)
        if hasattr(value, "__dict__") and not isinstance(value, type):
            items += list(vars(value).values())
        for slot in getattr(type(value), "__slots__", ()):
            if isinstance(slot, str) and hasattr(value, slot):
                items.append(getattr(value, slot))
        for item in items:
            yield from walk(item, depth + 1)

    visited: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in visited:
            continue
        visited.add(id(current))
        yield str(current)
        yield repr(current)
        yield "".join(traceback.format_exception(current))
        yield from walk(current.args, 0)
        yield from walk(vars(current), 0)
        tb: TracebackType | None = current.__traceback__
        while tb is not None:
            frame_: FrameType = tb.tb_frame
            for name, local in frame_.f_locals.items():
                if isinstance(local, BaseException):
                    pending.append(local)
                try:
                    yield f"{name}={local!r}"
                except Exception as problem:
                    yield f"<repr of {name} failed: {problem!r}>"
                if isinstance(local, TracebackType):
                    yield from walk(local, 0)
            tb = tb.tb_next
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
        pending.extend(getattr(current, "exceptions", ()))


def _with_body(status: str, body: bytes) -> bytes:
    """A whole JSON response with a Content-Length."""
    length = (("Content-Length", str(len(body))),)
    return head(status, "application/json", chunked=False, extra=length) + body


MALFORMED: dict[str, Script] = {
    "bad_status_line": _then(b"HTTP/1.1 999 \xff\r\n\r\n", "close"),
    "not_http": _then(b"SSH-2.0-OpenSSH\r\n\r\n", "close"),
    "bad_header": _then(b"HTTP/1.1 200 OK\r\nBad Header No Colon\r\n\r\n", "close"),
    "nul_in_header": _then(b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\n\r\n", "close"),
    "too_many_headers": _then(
        b"HTTP/1.1 200 OK\r\n" + b"".join(f"X-{i}: v\r\n".encode() for i in range(300)) + b"\r\n",
        "close",
    ),
    "bad_chunk": _then(head() + chunk(FIRST) + b"zz\r\n", "close"),
    "bad_chunk_first": _then(head() + b"zz\r\n", "close"),
    "unsupported_encoding": _then(
        head(extra=(("Content-Encoding", "snappy"),)) + chunk(b"\x00\x01\x02"), "close"
    ),
    "gzip_garbage": _then(head(extra=(("Content-Encoding", "gzip"),)) + chunk(b"junk" * 64)),
    "both_length_and_chunked": _then(
        head(extra=(("Content-Length", "5"),)) + chunk(FIRST), "close"
    ),
    "status_401": _then(
        _with_body("401 Unauthorized", b'{"code":"InvalidApiKey","message":"Invalid key"}'),
        "close",
    ),
    "timeout": _then(head(), "hold"),
    "timeout_before_status": _then("hold"),
    "reset_mid_stream": _then(head() + chunk(FIRST), 0.05, "reset"),
    "reset_before_status": _then("reset"),
    "close_before_status": _then("close"),
}
FORMS = ("stream", "generate", "sync_stream", "sync_generate", "embed", "sync_embed")


def _call_form(form: str, client: TongyiLLMClient) -> None:
    """Run one call in ``form``; its TongyiError propagates."""
    if form == "sync_stream":
        with closing(client.sync_generate_stream("hi")) as outputs:  # type: ignore[type-var]
            for _ in outputs:
                pass
    elif form == "sync_generate":
        client.sync_generate("hi")
    elif form == "sync_embed":
        client.sync_embed("hi")
    else:

        async def main() -> None:
            try:
                if form == "stream":
                    async with client.generate_stream("hi") as stream:
                        async for _ in stream:
                            pass
                elif form == "generate":
                    await client.generate("hi")
                else:
                    await client.embed("hi")
            finally:
                await client.aclose()

        asyncio.run(main())


class _AllRecords(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.texts.append(logging.Formatter().format(record))
        self.texts.append(repr(record.args))
        self.texts.append(repr(vars(record)))


@pytest.fixture
def debug_logs() -> Iterator[list[str]]:
    handler = _AllRecords()
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.texts
    finally:
        root.removeHandler(handler)
        root.setLevel(old)


def _assert_no_secret(error: BaseException, extra: list[str]) -> None:
    texts = list(_reachable_text(error)) + extra
    leaked = [text for text in texts if SECRET in text]
    assert not leaked, leaked[0][:800]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", list(MALFORMED))
def test_the_key_is_in_no_object_reachable_from_the_error(
    case: str, form: str, parser: str, debug_logs: list[str]
) -> None:
    with serving(MALFORMED[case]) as server:
        client = _client(server.base_url, Timeout(connect=1, read=0.3, total=5))
        texts = [repr(client), str(client)]
        try:
            with pytest.raises(TongyiError) as info:
                _call_form(form, client)
        finally:
            client.close()
        assert server.requests, "the request must have reached the server"
        assert SECRET.encode() in server.requests[0]
    _assert_no_secret(info.value, texts + debug_logs)


@pytest.mark.parametrize("form", FORMS)
def test_the_key_is_not_reachable_from_a_refused_connection(
    form: str, debug_logs: list[str]
) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]  # bound, never listening: refused
        client = _client(f"http://127.0.0.1:{port}/api/v1", Timeout(connect=1, read=1, total=5))
        try:
            with pytest.raises(TongyiError) as info:
                _call_form(form, client)
        finally:
            client.close()
    _assert_no_secret(info.value, [repr(client), *debug_logs])


# -- beyond the list: a connect timeout is reported as one -----------------------------------


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose accept queue is full: SYNs are dropped, so connecting times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)
    try:
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.mark.parametrize("form", ["generate", "stream", "embed"])
async def test_a_connect_timeout_is_not_relabelled_a_read_timeout(
    form: str, unanswered_port: int
) -> None:
    """``APITimeoutError`` is an ``OSError``: no outer layer may map it a second time."""
    client = _client(
        f"http://127.0.0.1:{unanswered_port}/api/v1", Timeout(connect=0.3, read=5, total=None)
    )
    try:
        with pytest.raises(APITimeoutError, match="connecting") as info:
            if form == "generate":
                await client.generate("hi")
            elif form == "stream":
                await _stream_call(client, [])
            else:
                await client.embed("hi")
    finally:
        await client.aclose()
    assert not isinstance(info.value.__context__, TongyiError)


# -- beyond the list: a slow whole body is not silence ----------------------------------------

CHAT_JSON = (
    b'{"output":{"choices":[{"message":{"content":"slow","role":"assistant"},'
    b'"finish_reason":"stop"}]},"usage":{"input_tokens":1,"output_tokens":1,'
    b'"total_tokens":2},"request_id":"rid-hostile"}'
)
EMBED_JSON = (
    b'{"output":{"embeddings":[{"text_index":0,"embedding":[0.25,0.5]}]},'
    b'"usage":{"total_tokens":1},"request_id":"rid-hostile"}'
)
ERROR_JSON = b'{"code":"InternalError","message":"slowly broken","request_id":"rid-hostile"}'


def _slow_body(status: str, body: bytes, seconds: float) -> Script:
    """A whole JSON reply whose body arrives in pieces spread over ``seconds``."""
    pieces = 6

    async def script(conn: Conn) -> None:
        await conn.read_request()
        length = (("Content-Length", str(len(body))),)
        await conn.send(head(status, "application/json", chunked=False, extra=length))
        step = -(-len(body) // pieces)
        for start in range(0, len(body), step):
            await asyncio.sleep(seconds / pieces)
            await conn.send(body[start : start + step])
        await conn.hold()

    return script


@pytest.mark.parametrize("form", ["generate", "embed", "error"])
async def test_a_json_body_that_keeps_coming_outlives_read(form: str) -> None:
    """``read`` is silence between bytes: a body arriving for 3 x ``read`` is read whole."""
    status, body = {
        "generate": ("200 OK", CHAT_JSON),
        "embed": ("200 OK", EMBED_JSON),
        "error": ("500 Internal Server Error", ERROR_JSON),
    }[form]
    with serving(_slow_body(status, body, 1.8)) as server:
        client = _client(server.base_url, Timeout(connect=1, read=0.6, total=10))
        try:
            if form == "generate":
                assert (await client.generate("hi")).text == "slow"
            elif form == "embed":
                assert (await client.embed("hi")).vectors == ((0.25, 0.5),)
            else:
                with pytest.raises(TongyiError, match="slowly broken") as info:
                    await client.generate("hi")
                assert info.value.status_code == 500
        finally:
            await client.aclose()


# -- beyond the list: the upload of a local file is a call like any other -----------------

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def _upload_call(client: TongyiLLMClient, path: Path) -> Awaitable[Any]:
    message = {"role": "user", "content": [{"image": str(path)}, {"text": "?"}]}
    return client.generate([message], model="qwen-vl-max", upload=True)


UPLOAD_CASES: dict[str, tuple[Script, type[TongyiError]]] = {
    # the policy reply: one chunk, a malformed chunk size, then silence
    "policy_bad_chunk": (
        _then(head(content_type="application/json") + chunk(b'{"data": {'), 0.2, b"zz\r\n"),
        TongyiError,  # a timeout (C parser) or a broken body (Python),
    ),
    "policy_headers_then_silence": (_then(head(content_type="application/json")), APITimeoutError),
    "policy_flood": (_json_flood(70 << 20), ProtocolError),
    "policy_401": (
        _then(_with_body("401 Unauthorized", b'{"code":"InvalidApiKey","message":"no"}')),
        TongyiError,
    ),
}


@pytest.mark.parametrize("case", list(UPLOAD_CASES))
async def test_an_upload_policy_request_keeps_every_promise(
    case: str, parser: str, tmp_path: Path
) -> None:
    """The policy request of an upload: bounded by ``read``, capped, and the key unreachable."""
    script, expected = UPLOAD_CASES[case]
    image = tmp_path / "a.png"
    image.write_bytes(PNG)
    with serving(script) as server:
        client = _client(server.base_url, Timeout(connect=1, read=READ, total=None))
        started = time.monotonic()
        try:
            with pytest.raises(expected) as info:
                await asyncio.wait_for(_upload_call(client, image), 10)
        finally:
            await client.aclose()
        assert b"getPolicy" in server.requests[0]
    if case != "policy_flood":
        assert time.monotonic() - started < READ + 1
    _assert_no_secret(info.value, [])


# -- beyond the list: a compression bomb is capped after decompression ----------------------


@pytest.fixture(scope="module")
def gzip_bomb() -> bytes:
    """256 MiB of zeros, gzip-compressed to about 250 KB."""
    import zlib

    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = b"\0" * (1 << 24)
    return b"".join(compressor.compress(zeros) for _ in range(16)) + compressor.flush()


@pytest.mark.parametrize("content_type", ["application/json", "text/event-stream"])
async def test_a_gzip_bomb_is_a_protocol_error(content_type: str, gzip_bomb: bytes) -> None:
    extra = (("Content-Encoding", "gzip"), ("Content-Length", str(len(gzip_bomb))))
    script = _then(head(content_type=content_type, chunked=False, extra=extra) + gzip_bomb)
    gc.collect()
    measured = reset_peak_rss()
    before = rss_bytes()
    with serving(script) as server:
        client = _client(server.base_url, Timeout(connect=1, read=5, total=30))
        try:
            with pytest.raises(ProtocolError, match=r"larger than|grew past"):
                await client.generate("hi")
        finally:
            await client.aclose()
    if measured:
        growth = peak_rss_bytes() - before
        assert growth < 140 << 20, f"peak RSS grew by {growth >> 20} MiB"
