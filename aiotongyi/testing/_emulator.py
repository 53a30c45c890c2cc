"""The DashScope emulator: an aiohttp.web server on its own thread and event loop."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from . import _embeddings
from ._infer import count_tokens, infer_reply
from ._render import Exchange, render
from ._script import Reply
from ._upload import OSS_PATH, POLICY_PATH, UploadStorage, oss_header_problem
from ._writer import send

__all__ = ["DashScopeEmulator", "RecordedRequest"]

API_KEY = "sk-emulator"


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request the emulator received.

    :param method: the HTTP method, e.g. ``"POST"``.
    :param path: the URL path, without the query string.
    :param headers: the request headers, with lower-case names.
    :param body: the raw request body.
    :param json: the body parsed as JSON, or ``None`` when it is not JSON.
    :param query: the query string's parameters.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: object
    query: dict[str, str] = field(default_factory=dict)


class _CountingServer(web.Server):
    """aiohttp's low-level server, telling the emulator about each connection."""

    def __init__(self, emulator: DashScopeEmulator) -> None:
        super().__init__(emulator._handle, access_log=None)
        self._emulator = emulator

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        self._emulator._opened(handler, transport)

    def connection_lost(self, handler: RequestHandler, exc: BaseException | None = None) -> None:
        super().connection_lost(handler, exc)
        self._emulator._closed(handler)


class DashScopeEmulator:
    """A local stand-in for DashScope's native chat, embedding and rerank endpoints.

    The server runs on a thread of its own with its own event loop, so it can
    be started and stopped from any thread, including from inside a running
    event loop. Replies are scripted with :meth:`enqueue`; every request is
    recorded in :attr:`requests`. Any non-empty ``Bearer`` key is accepted.

    :param host: the address to bind (a loopback address).
    :param port: the TCP port; ``0`` picks a free one.
    :param request_log_size: how many requests :attr:`requests` keeps (the newest).
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, request_log_size: int = 10_000
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = API_KEY
        self._lock = threading.Lock()
        self._queue: collections.deque[Reply] = collections.deque()
        # Bounded, so a long-running emulator (a soak, `serve`) does not grow forever.
        self._requests: collections.deque[RecordedRequest] = collections.deque(
            maxlen=request_log_size
        )
        self._connections = 0
        self._open: dict[object, asyncio.Transport] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._state = "new"
        #: The temporary storage behind the upload endpoints (see ``_upload.py``).
        self.uploads = UploadStorage()
        #: Builds the answer to a chat request when nothing is queued, from its JSON
        #: body; replace it to route answers by request (``infer_reply`` by default).
        self.default_reply: Callable[[dict[str, Any]], Reply] = infer_reply

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> DashScopeEmulator:
        """Start serving; return ``self`` once the socket is listening.

        :raises RuntimeError: if the emulator was started before.
        :raises OSError: if the address cannot be bound.
        """
        if self._state != "new":
            raise RuntimeError(f"the emulator cannot be started twice (it is {self._state})")
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._main(ready)),
            name=f"aiotongyi-emulator-{id(self):x}",
            daemon=True,
        )
        self._thread.start()
        try:
            ready.result()
        except BaseException:
            self._thread.join()
            self._state = "stopped"
            raise
        self._state = "running"
        return self

    def stop(self) -> None:
        """Stop serving, abort open connections and join the server thread.

        Idempotent; a no-op on an emulator that was never started.

        :raises RuntimeError: when called from a request handler (the server's
            own thread), which would deadlock.
        """
        if self._state != "running":
            self._state = "stopped"
            return
        thread, loop, stopping = self._thread, self._loop, self._stopping
        assert thread is not None and loop is not None and stopping is not None
        if threading.current_thread() is thread:
            raise RuntimeError("stop() cannot be called from the emulator's own thread")
        self._state = "stopped"
        with contextlib.suppress(RuntimeError):  # the loop already ended
            loop.call_soon_threadsafe(stopping.set)
        thread.join()

    def __enter__(self) -> DashScopeEmulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    async def _main(self, ready: concurrent.futures.Future[None]) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_quiet_exception_handler)
        self._loop, self._stopping = loop, asyncio.Event()
        runner = web.ServerRunner(_CountingServer(self), handle_signals=False)
        try:
            await runner.setup()
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
            self.port = runner.addresses[0][1]
        except BaseException as exc:
            await runner.cleanup()
            ready.set_exception(exc)
            return
        ready.set_result(None)
        try:
            await self._stopping.wait()
        finally:
            await self._shutdown(runner)

    async def _shutdown(self, runner: web.BaseRunner) -> None:
        with self._lock:
            transports, tasks = list(self._open.values()), list(self._tasks)
        for transport in transports:
            transport.abort()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await runner.cleanup()

    # -- public state ------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The base URL to give a client, ``http://HOST:PORT/api/v1`` (no trailing slash).

        :raises RuntimeError: before :meth:`start`.
        """
        if self._state == "new":
            raise RuntimeError("the emulator has no address until start()")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/api/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received since start or :meth:`reset`, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> int:
        """TCP connections accepted since start or :meth:`reset`."""
        with self._lock:
            return self._connections

    @property
    def open_connections(self) -> int:
        """TCP connections open right now, as the server sees them."""
        with self._lock:
            return len(self._open)

    def enqueue(self, *replies: Reply) -> None:
        """Queue replies; each incoming request takes the oldest one.

        With the queue empty, a chat request's answer is inferred from the request
        (see ``docs/testing.md``, "Answers inferred from the request") and an
        embedding or rerank request gets its computed answer (``docs/embeddings.md``).
        """
        with self._lock:
            self._queue.extend(replies)

    def reset(self) -> None:
        """Forget queued replies, recorded requests and the connection count.

        Connections that are open stay open (and counted in ``open_connections``).
        """
        with self._lock:
            self._queue.clear()
            self._requests.clear()
            self._connections = 0
        self.uploads.reset()

    def wait_for_open_connections(self, n: int, timeout: float = 2.0) -> bool:
        """Wait until exactly ``n`` connections are open; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        while self.open_connections != n:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def __repr__(self) -> str:
        where = f" {self.base_url}" if self._state != "new" else ""
        return f"<DashScopeEmulator {self._state}{where}>"

    # -- server side (runs on the emulator's loop) -------------------------

    def _opened(self, handler: object, transport: asyncio.Transport) -> None:
        with self._lock:
            self._connections += 1
            self._open[handler] = transport

    def _closed(self, handler: object) -> None:
        with self._lock:
            self._open.pop(handler, None)

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        with self._lock:
            self._tasks.add(task)
        try:
            return await self._answer(request)
        except ConnectionError:
            # The client went away; aiohttp's own write of this fails quietly.
            return web.Response()
        finally:
            with self._lock:
                self._tasks.discard(task)

    async def _answer(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path in (POLICY_PATH, OSS_PATH):
            return await self._answer_upload(request)
        body = await request.content.read()
        try:
            payload: object = json.loads(body)
        except ValueError:
            payload = None
        headers = {name.lower(): value for name, value in request.headers.items()}
        recorded = RecordedRequest(request.method, request.path, headers, body, payload)
        with self._lock:
            self._requests.append(recorded)
        route = ROUTES.get(request.path)
        if route is None:
            return _error(404, "NotFound", f"url error, please check url! {request.path}")
        if request.method != "POST":
            return _error(405, "MethodNotAllowed", "Method not allowed.")
        scheme, _, key = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return _error(401, "InvalidApiKey", "Invalid API-key provided.")
        return await route(self, request, recorded)

    def _take_reply(self) -> Reply | None:
        """The oldest queued reply, or None when nothing is scripted."""
        with self._lock:
            return self._queue.popleft() if self._queue else None

    async def _answer_upload(self, request: web.BaseRequest) -> web.StreamResponse:
        """Upload traffic is logged without its body (a file is counted, never kept)."""
        headers = {name.lower(): value for name, value in request.headers.items()}
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    request.method, request.path, headers, b"", None, dict(request.query)
                )
            )
        if request.path == OSS_PATH:
            return await self.uploads.handle_oss(request)
        return await self.uploads.handle_policy(request, self.base_url.removesuffix("/api/v1"))


def _quiet_exception_handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    """Drop the loop's reports of clients that vanished; report anything else."""
    if isinstance(context.get("exception"), ConnectionError):
        return
    loop.default_exception_handler(context)


async def _chat(
    emulator: DashScopeEmulator, request: web.BaseRequest, recorded: RecordedRequest
) -> web.StreamResponse:
    """The native chat endpoints (text and multimodal), streaming or not."""
    payload = recorded.json
    problem = _check_body(payload) or oss_header_problem(payload, recorded.headers)
    if problem is not None:
        return _error(400, *problem)
    assert isinstance(payload, dict)
    parameters: dict[str, object] = payload["parameters"]
    reply = emulator._take_reply()
    if reply is None:
        reply = emulator.default_reply(payload)
    headers = recorded.headers
    stream = headers.get("x-dashscope-sse", "").lower() == "enable" or (
        "text/event-stream" in headers.get("accept", "")
    )
    exchange = Exchange(
        stream=stream,
        incremental=parameters.get("incremental_output") is True,
        multimodal="multimodal" in request.path,
        input_tokens=_count_input(payload),
    )
    return await send(request, reply, render(reply, exchange))


Route = Callable[
    [DashScopeEmulator, web.BaseRequest, RecordedRequest], Awaitable[web.StreamResponse]
]


# Path -> handler. Every route gets the request logged, 404/405/401 checks first.
async def _embed(
    emulator: DashScopeEmulator, request: web.BaseRequest, recorded: RecordedRequest
) -> web.StreamResponse:
    """Embeddings and rerank: queued replies (errors, faults) first, else the computed answer."""
    return await _embeddings.answer(request, recorded.json, emulator._take_reply())


ROUTES: dict[str, Route] = {
    "/api/v1/services/aigc/text-generation/generation": _chat,
    "/api/v1/services/aigc/multimodal-generation/generation": _chat,
    **dict.fromkeys(_embeddings.ROUTES, _embed),
}


def _error(status: int, code: str, message: str) -> web.Response:
    request_id = str(uuid.uuid4())
    body = {"code": code, "message": message, "request_id": request_id}
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        headers={"Content-Type": "application/json", "X-Request-Id": request_id},
    )


def _check_body(payload: object) -> tuple[str, str] | None:
    """The 400 the real service would give this body, as (code, message), or None."""
    if not isinstance(payload, dict):
        return ("InvalidParameter", "The request body is not valid JSON.")
    if not payload.get("model"):
        return (
            "BadRequest.EmptyModel",
            'Required parameter "model" missing from request.',
        )
    if not isinstance(payload.get("input"), dict):
        return ("BadRequest.EmptyInput", 'Required parameter "input" missing from request.')
    if not isinstance(payload.get("parameters"), dict):
        return (
            "BadRequest.EmptyParameters",
            'Required parameter "parameters" missing from request.',
        )
    return None


def _texts(content: object) -> Iterator[str]:
    """The text of a message's content: a string, or the ``text`` parts of a list."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and isinstance(part.get("text"), str):
                yield part["text"]


def _messages(payload: dict[str, object]) -> list[dict[str, object]]:
    body_input = payload.get("input")
    messages = body_input.get("messages") if isinstance(body_input, dict) else None
    if not isinstance(messages, list):
        return []
    return [message for message in messages if isinstance(message, dict)]


def _count_input(payload: dict[str, object]) -> int:
    """Input tokens of the message text, by the emulator's token rule (at least 1)."""
    texts = (text for m in _messages(payload) for text in _texts(m.get("content")))
    return max(1, sum(count_tokens(text) for text in texts))
