"""Loopback fake of DashScope's streaming chat endpoints, for benchmarks only.

Adapted from the shared harness's ``perf/fake_dashscope.py`` (same wire bytes,
knobs and connection counting, so numbers stay comparable with its baseline).

    python -m benchmarks._server PORT [--cpu N] [--no-uvloop]

PORT 0 picks a free port; once listening it prints ``READY http://127.0.0.1:PORT``.
Stop it with SIGTERM or SIGINT.

Endpoints, each also served under a ``/_fake/<knobs>/`` prefix so that a client
which only lets you set a base URL can still choose the knobs:

* ``POST /api/v1/services/aigc/text-generation/generation`` (native). Streams
  when the request has ``X-DashScope-SSE: enable`` or accepts
  ``text/event-stream``: chunked ``text/event-stream;charset=UTF-8``, one event
  per frame, exactly ``id:N\\nevent:result\\n:HTTP_STATUS/200\\ndata:{...}\\n\\n``
  with compact JSON and raw UTF-8 Chinese text. ``incremental_output`` true
  gives deltas; false or absent (the service default) gives cumulative text.
* ``POST /compatible-mode/v1/chat/completions`` (OpenAI-compatible):
  ``data: {chat.completion.chunk}`` frames, an optional usage chunk, ``[DONE]``.
* ``GET /_health``, ``GET /_stats`` (requests, distinct TCP connections since the
  last reset, server CPU seconds), ``POST /_stats/reset``.

Knobs (query > ``X-Fake-*`` header > body ``x_fake`` > path prefix > default):
``frames`` (20), ``chars`` per frame (20), ``delay_ms`` between frames (0: still
yields, so concurrent streams interleave), ``burst`` (1: no yield between
frames), ``chunk`` (comma-separated write sizes that re-cut the body ignoring
frame and character boundaries), ``batch`` (frames per write), ``mode``
(auto | incremental | cumulative). Frames are precomputed per knob set, so
serving a stream is a loop of writes.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import importlib
import itertools
import json
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl

from aiohttp import web

NATIVE_PATH = "/api/v1/services/aigc/text-generation/generation"
COMPAT_PATH = "/compatible-mode/v1/chat/completions"
INPUT_TOKENS = 12
MAX_FRAMES = 1_000_000
MAX_STREAM_BYTES = 1 << 30

_TEXT = (
    "通义千问是阿里云自主研发的超大规模语言模型，能够回答问题、创作文字，"
    "还能表达观点、撰写代码。它在海量数据上进行训练，具备多轮对话、逻辑推理、"
    "多语言理解与生成等能力；在客服、教育、办公、编程与内容创作等场景中，"
    "可以帮助用户更高效地完成任务。流式输出让回答一边生成一边展示，"
    "用户无需等待完整结果即可开始阅读，从而获得更流畅的交互体验。"
)

_HEADERS = {
    "frames": "X-Fake-Frames",
    "chars": "X-Fake-Chars",
    "delay_ms": "X-Fake-Delay-Ms",
    "chunk": "X-Fake-Chunk",
    "batch": "X-Fake-Batch",
    "mode": "X-Fake-Mode",
    "burst": "X-Fake-Burst",
}


class BadKnobError(ValueError):
    """A knob value the server refuses (answered with HTTP 400)."""


@dataclass(frozen=True)
class Knobs:
    """Server behaviour for one request."""

    frames: int = 20
    chars: int = 20
    delay_ms: float = 0.0
    chunk: tuple[int, ...] = ()
    batch: int = 1
    mode: str = "auto"
    burst: bool = False


def text_slice(start: int, n: int) -> str:
    """``n`` characters of the cyclic sample text, from character ``start``."""
    out = []
    start %= len(_TEXT)
    while n > 0:
        piece = _TEXT[start : start + n]
        out.append(piece)
        n -= len(piece)
        start = 0
    return "".join(out)


def _dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _int(name: str, value: object, low: int, high: int) -> int:
    number = int(str(value))
    if not low <= number <= high:
        raise BadKnobError(f"{name} must be in [{low}, {high}]")
    return number


def _coerce(name: str, value: object) -> object:
    """One knob from its text (or JSON) form."""
    try:
        if name in ("frames", "batch"):
            return _int(name, value, 1, MAX_FRAMES)
        if name == "chars":
            return _int(name, value, 0, 1_000_000)
        if name == "burst":
            return str(value).lower() in ("1", "true", "yes", "on")
        if name == "delay_ms":
            delay = float(str(value))
            if delay < 0:
                raise BadKnobError("delay_ms must be >= 0")
            return delay
        if name == "chunk":
            parts = value if isinstance(value, list | tuple) else str(value).split(",")
            sizes = tuple(int(str(p)) for p in parts if str(p).strip())
            if any(size <= 0 for size in sizes):
                raise BadKnobError("chunk sizes must be positive")
            return sizes
        if name == "mode" and str(value).lower() in ("auto", "incremental", "cumulative"):
            return str(value).lower()
    except ValueError as exc:
        if isinstance(exc, BadKnobError):
            raise
        raise BadKnobError(f"bad value for {name}: {value!r}") from None
    raise BadKnobError(f"bad knob {name}={value!r}")


def resolve_knobs(request: web.Request, body: Mapping[str, object]) -> Knobs:
    """Merge the knob layers of one request; later layers win."""
    layers: list[Mapping[str, object]] = []
    if prefix := request.match_info.get("knobs"):
        layers.append(dict(parse_qsl(prefix, keep_blank_values=True)))
    params = body.get("parameters")
    sources = (params.get("x_fake") if isinstance(params, dict) else None, body.get("x_fake"))
    layers += [source for source in sources if isinstance(source, dict)]
    layers.append({k: request.headers[h] for k, h in _HEADERS.items() if h in request.headers})
    layers.append(dict(request.query))
    values: dict[str, object] = {}
    for layer in layers:
        values.update({k: _coerce(k, v) for k, v in layer.items() if k in _HEADERS})
    return Knobs(**values)  # type: ignore[arg-type]


def build_native_frames(
    frames: int, chars: int, incremental: bool, result_format: str
) -> tuple[list[bytes], str]:
    """Every SSE event of one native stream, and its request id."""
    request_id = str(uuid.uuid4())
    rid = _dumps(request_id)
    out: list[bytes] = []
    parts: list[str] = []
    for i in range(1, frames + 1):
        delta = text_slice((i - 1) * chars, chars)
        if not incremental:
            parts.append(delta)
        content = _dumps(delta if incremental else "".join(parts))
        finish = '"stop"' if i == frames else '"null"'
        if result_format == "text":
            output = f'{{"finish_reason":{finish},"text":{content}}}'
        else:
            output = (
                f'{{"choices":[{{"message":{{"content":{content},"role":"assistant"}},'
                f'"finish_reason":{finish}}}]}}'
            )
        tokens = i * chars
        data = (
            f'{{"output":{output},"usage":{{"total_tokens":{INPUT_TOKENS + tokens},'
            f'"output_tokens":{tokens},"input_tokens":{INPUT_TOKENS}}},"request_id":{rid}}}'
        )
        out.append(f"id:{i}\nevent:result\n:HTTP_STATUS/200\ndata:{data}\n\n".encode())
    return out, request_id


def build_compat_frames(
    frames: int, chars: int, model: str, include_usage: bool
) -> tuple[list[bytes], str]:
    """Every SSE event of one OpenAI-compatible stream, and its completion id."""
    cid = "chatcmpl-" + uuid.uuid4().hex
    tail = (
        f',"object":"chat.completion.chunk","usage":null,"created":{int(time.time())},'
        f'"system_fingerprint":null,"model":{_dumps(model)},"id":{_dumps(cid)}}}'
    )
    out: list[bytes] = []
    for i in range(1, frames + 1):
        delta = _dumps(text_slice((i - 1) * chars, chars))
        role = ',"role":"assistant"' if i == 1 else ""
        finish = '"stop"' if i == frames else "null"
        data = (
            f'{{"choices":[{{"delta":{{"content":{delta}{role}}},"index":0,'
            f'"logprobs":null,"finish_reason":{finish}}}]{tail}'
        )
        out.append(f"data: {data}\n\n".encode())
    if include_usage:
        n = frames * chars
        usage = (
            f'{{"prompt_tokens":{INPUT_TOKENS},"completion_tokens":{n},'
            f'"total_tokens":{INPUT_TOKENS + n}}}'
        )
        head = tail.replace('"usage":null,', "")
        out.append(f'data: {{"choices":[],"usage":{usage}{head}\n\n'.encode())
    out.append(b"data: [DONE]\n\n")
    return out, cid


def make_plan(
    frames: list[bytes], chunk: tuple[int, ...], batch: int
) -> tuple[list[bytes], list[bool]]:
    """Cut frames into writes: (pieces, whether each piece ends a frame)."""
    if chunk:
        body = b"".join(frames)
        ends = iter(itertools.accumulate(map(len, frames)))
        next_end = next(ends, None)
        pieces: list[bytes] = []
        flags: list[bool] = []
        pos = k = 0
        while pos < len(body):
            nxt = min(pos + chunk[k % len(chunk)], len(body))
            k += 1
            pieces.append(body[pos:nxt])
            crossed = False
            while next_end is not None and next_end <= nxt:
                crossed, next_end = True, next(ends, None)
            flags.append(crossed)
            pos = nxt
        return pieces, flags
    if batch > 1:
        pieces = [b"".join(frames[i : i + batch]) for i in range(0, len(frames), batch)]
        return pieces, [True] * len(pieces)
    return list(frames), [True] * len(frames)


@dataclass(frozen=True)
class _Plan:
    pieces: list[bytes]
    ends_frame: list[bool]
    request_id: str
    nbytes: int


class _PlanCache:
    """LRU of precomputed write plans, bounded by their total size."""

    def __init__(self, max_bytes: int) -> None:
        self._max = max_bytes
        self._size = 0
        self._items: collections.OrderedDict[tuple[object, ...], _Plan] = collections.OrderedDict()

    def get(self, key: tuple[object, ...], build: Callable[[], _Plan]) -> _Plan:
        if (hit := self._items.get(key)) is not None:
            self._items.move_to_end(key)
            return hit
        plan = self._items[key] = build()
        self._size += plan.nbytes
        while self._size > self._max and len(self._items) > 1:
            self._size -= self._items.popitem(last=False)[1].nbytes
        return plan


def _plan(frames: list[bytes], request_id: str, knobs: Knobs) -> _Plan:
    pieces, flags = make_plan(frames, knobs.chunk, knobs.batch)
    return _Plan(pieces, flags, request_id, sum(map(len, pieces)))


class FakeDashScope:
    """The aiohttp application and its counters."""

    def __init__(self, cache_mb: int = 512) -> None:
        self._cache = _PlanCache(cache_mb << 20)
        self.requests = 0
        self.peers: set[tuple[str, int]] = set()

    def _count(self, request: web.Request) -> None:
        self.requests += 1
        transport = request.transport
        peer = transport.get_extra_info("peername") if transport is not None else None
        if peer is not None:
            self.peers.add((peer[0], peer[1]))

    @staticmethod
    async def _body(request: web.Request) -> dict[str, object]:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            raise BadKnobError("request body is not JSON") from None
        if not isinstance(body, dict):
            raise BadKnobError("request body must be a JSON object")
        return body

    @staticmethod
    def _check_size(knobs: Knobs, cumulative: bool) -> None:
        f, c = knobs.frames, knobs.chars
        estimate = f * 300 + (3 * c * f * (f + 1) // 2 if cumulative else 3 * c * f)
        if estimate > MAX_STREAM_BYTES:
            raise BadKnobError(f"stream would be ~{estimate >> 20} MiB, over the cap")

    @staticmethod
    async def _stream(request: web.Request, plan: _Plan, knobs: Knobs) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream;charset=UTF-8",
                "Cache-Control": "no-cache",
                "X-Request-Id": plan.request_id,
            }
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        delay = -1.0 if knobs.burst else knobs.delay_ms / 1000.0
        pieces, flags = plan.pieces, plan.ends_frame
        write, sleep = response.write, asyncio.sleep
        try:
            for i in range(len(pieces) - 1):
                await write(pieces[i])
                if delay >= 0 and flags[i]:
                    await sleep(delay)  # a zero sleep still lets other streams interleave
            await response.write_eof(pieces[-1])  # last piece and terminator in one send
        except ConnectionError:
            pass  # the client left mid-stream; nothing to clean up
        return response

    async def native(self, request: web.Request) -> web.StreamResponse:
        """The native generation endpoint."""
        self._count(request)
        try:
            body = await self._body(request)
            knobs = resolve_knobs(request, body)
            params = body.get("parameters") or {}
            if not isinstance(params, dict):
                raise BadKnobError("parameters must be an object")
            if knobs.mode == "auto":
                incremental = bool(params.get("incremental_output", False))
            else:
                incremental = knobs.mode == "incremental"
            result_format = "text" if params.get("result_format") == "text" else "message"
            sse = request.headers.get("X-DashScope-SSE", "").lower() == "enable" or (
                "text/event-stream" in request.headers.get("Accept", "")
            )
            self._check_size(knobs, sse and not incremental)
        except BadKnobError as exc:
            return web.json_response(
                {"code": "InvalidParameter", "message": str(exc), "request_id": "fake"},
                status=400,
            )
        if not sse:
            return self._native_whole(knobs, result_format)
        key = (
            ("native", knobs.frames, knobs.chars, incremental),
            (result_format, knobs.chunk, knobs.batch),
        )

        def build() -> _Plan:
            frames, rid = build_native_frames(knobs.frames, knobs.chars, incremental, result_format)
            return _plan(frames, rid, knobs)

        return await self._stream(request, self._cache.get(key, build), knobs)

    @staticmethod
    def _native_whole(knobs: Knobs, result_format: str) -> web.Response:
        text = text_slice(0, knobs.frames * knobs.chars)
        tokens = knobs.frames * knobs.chars
        output: dict[str, object] = {"finish_reason": "stop", "text": text}
        if result_format != "text":
            message = {"role": "assistant", "content": text}
            output = {"choices": [{"finish_reason": "stop", "message": message}]}
        usage = {
            "total_tokens": INPUT_TOKENS + tokens,
            "output_tokens": tokens,
            "input_tokens": INPUT_TOKENS,
        }
        body = {"output": output, "usage": usage, "request_id": str(uuid.uuid4())}
        return web.json_response(body, dumps=_dumps)

    async def compat(self, request: web.Request) -> web.StreamResponse:
        """The OpenAI-compatible chat completions endpoint (streaming only)."""
        self._count(request)
        try:
            body = await self._body(request)
            knobs = resolve_knobs(request, body)
            self._check_size(knobs, False)
            if not body.get("stream"):
                raise BadKnobError("this fake serves only stream=true in compatible mode")
        except BadKnobError as exc:
            error = {"message": str(exc), "type": "invalid_request_error", "code": "invalid"}
            return web.json_response({"error": error}, status=400)
        model = str(body.get("model") or "qwen-plus")
        options = body.get("stream_options")
        usage = isinstance(options, dict) and bool(options.get("include_usage"))
        key = ("compat", knobs.frames, knobs.chars, model, usage, knobs.chunk, knobs.batch)

        def build() -> _Plan:
            frames, cid = build_compat_frames(knobs.frames, knobs.chars, model, usage)
            return _plan(frames, cid, knobs)

        return await self._stream(request, self._cache.get(key, build), knobs)

    async def health(self, request: web.Request) -> web.Response:
        """Liveness probe."""
        return web.Response(text="ok")

    async def stats(self, request: web.Request) -> web.Response:
        """Counters since the last reset, and the server's CPU time."""
        stats = {
            "requests": self.requests,
            "connections": len(self.peers),
            "cpu_s": time.process_time(),
            "pid": os.getpid(),
        }
        return web.json_response(stats)

    async def reset(self, request: web.Request) -> web.Response:
        """Zero the request and connection counters."""
        self.requests = 0
        self.peers.clear()
        return web.json_response({"ok": True})

    def app(self) -> web.Application:
        """The routes, with and without the knob prefix."""
        app = web.Application(client_max_size=64 << 20)
        for prefix in ("", "/_fake/{knobs}"):
            app.router.add_post(prefix + NATIVE_PATH, self.native)
            app.router.add_post(prefix + COMPAT_PATH, self.compat)
        app.router.add_get("/_health", self.health)
        app.router.add_get("/_stats", self.stats)
        app.router.add_post("/_stats/reset", self.reset)
        return app


async def _start(sock: socket.socket) -> web.AppRunner:
    runner = web.AppRunner(
        FakeDashScope().app(), access_log=None, handle_signals=False, keepalive_timeout=75.0
    )
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner


def _listen(port: int, backlog: int = 8192) -> socket.socket:  # S8 connects 5,000 at once
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(backlog)
    return sock


async def _serve(port: int) -> None:
    sock = _listen(port)
    runner = await _start(sock)
    print(f"READY http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


class ServerThread:
    """The fake on a daemon thread of this process (tests; not for measuring)."""

    def __init__(self) -> None:
        self._sock = _listen(0)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._loop = asyncio.new_event_loop()
        self._runner = self._loop.run_until_complete(_start(self._sock))
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fake-dashscope", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop the server and its loop."""
        future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        future.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def main(argv: list[str] | None = None) -> None:
    """Command line: serve until SIGTERM."""
    parser = argparse.ArgumentParser(description="loopback fake DashScope (benchmarks)")
    parser.add_argument("port", type=int, help="TCP port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--cpu", type=int, help="pin this process to one CPU")
    parser.add_argument("--no-uvloop", action="store_true", help="use the stdlib event loop")
    args = parser.parse_args(argv)
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    import resource  # S8 serves thousands of connections at once

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 16384:
        wanted = 16384 if hard == resource.RLIM_INFINITY else min(16384, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    if not args.no_uvloop:
        try:
            uvloop = importlib.import_module("uvloop")  # optional, from the bench extra
        except ImportError:
            pass
        else:
            uvloop.run(_serve(args.port))
            return
    asyncio.run(_serve(args.port))


if __name__ == "__main__":
    main()
