"""Hostile HTTP servers written apart from the emulator: raw asyncio TCP, bytes by hand.

Each server runs a *script* (an ``async`` function of one :class:`Conn`) for
every connection, on its own event loop in a daemon thread, so both the async
and the sync API can call it.  Nothing here shares code with
``aiotongyi.testing``: the point is to send what no well-behaved emulator would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType

REQUEST_ID = "rid-hostile"
CRLF = b"\r\n"


def frame(text: str, *, finish: str = "null", seq: int = 1) -> bytes:
    """One DashScope SSE frame carrying ``text`` (incremental output)."""
    payload = {
        "output": {
            "choices": [
                {"message": {"content": text, "role": "assistant"}, "finish_reason": finish}
            ]
        },
        "usage": {"input_tokens": 1, "output_tokens": seq, "total_tokens": seq + 1},
        "request_id": REQUEST_ID,
    }
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"id:{seq}\nevent:result\n:HTTP_STATUS/200\ndata:{data}\n\n".encode()


def chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk."""
    return f"{len(data):x}".encode() + CRLF + data + CRLF


def head(
    status: str = "200 OK",
    content_type: str = "text/event-stream",
    *,
    chunked: bool = True,
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """A status line and a header section (ending with its blank line)."""
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", f"X-Request-Id: {REQUEST_ID}"]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    lines += [f"{name}: {value}" for name, value in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Conn:
    """One accepted connection, as a script sees it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def read_request(self) -> bytes:
        """Read one request (head and a Content-Length body); returns its head."""
        raw = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in raw.split(CRLF):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if length:
            await self.reader.readexactly(length)
        return raw

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def hold(self) -> None:
        """Keep the socket open, silent, until the client goes away (or the server stops)."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass

    def close(self) -> None:
        self.writer.close()


Script = Callable[[Conn], Awaitable[None]]


class HostileServer:
    """Serve ``script`` on 127.0.0.1 until the ``with`` block ends.

    ``requests`` holds the head of every request read by a script (through
    :meth:`Conn.read_request`); ``connections`` counts accepted connections.
    """

    def __init__(self, script: Script) -> None:
        self._script = script
        self.requests: list[bytes] = []
        self.connections = 0
        self._open: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="hostile-server", daemon=True)
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def __enter__(self) -> HostileServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the hostile server did not start")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        loop, stop = self._loop, self._stop
        assert loop is not None and stop is not None
        loop.call_soon_threadsafe(stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            for task in list(self._open):
                task.cancel()
            await asyncio.gather(*self._open, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._open.add(task)
        conn = Conn(reader, writer)
        original = conn.read_request

        async def recording() -> bytes:
            raw = await original()
            self.requests.append(raw)
            return raw

        conn.read_request = recording  # type: ignore[method-assign]
        try:
            await self._script(conn)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up: that is its right
        except asyncio.CancelledError:
            pass  # the server stops: asyncio would log a cancelled connection callback
        finally:
            self._open.discard(task)
            writer.close()


@contextlib.contextmanager
def serving(script: Script) -> Iterator[HostileServer]:
    with HostileServer(script) as server:
        yield server
