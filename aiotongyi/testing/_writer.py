"""Writing one rendered reply to the socket, with its pacing and faults."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import socket
import struct
import sys
import time
from collections.abc import Iterator

from aiohttp import web

from ._render import Rendered
from ._script import Reply

__all__ = ["send"]

_ENDLESS_BLOCK = b"a" * 65536
_FLUSH_TIMEOUT = 2.0
_OUTQ: int | None
try:  # Linux: bytes still in the kernel's send queue, so a reset loses none of them
    from fcntl import ioctl as _ioctl

    _OUTQ = 0x894B if sys.platform == "linux" else None  # SIOCOUTQNSD: not yet sent
except ImportError:  # pragma: no cover - other platforms skip that wait
    _OUTQ = None


async def send(request: web.BaseRequest, reply: Reply, rendered: Rendered) -> web.StreamResponse:
    """Answer one request as the reply says; returns what aiohttp should finish."""
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("the client is gone")
    if reply.garbage is not None:
        transport.write(reply.garbage)
        transport.close()  # flushes the bytes, then FIN; aiohttp's own reply then fails quietly
        return web.Response()
    if reply.reset_before_status:
        _reset(transport)
        return web.Response()
    if reply.first_byte_delay:
        await asyncio.sleep(reply.first_byte_delay)
    response = web.StreamResponse(status=rendered.status, headers=rendered.headers)
    frames = rendered.frames
    limit = _drop_offset(reply, frames)
    if rendered.chunked or reply.endless:
        response.enable_chunked_encoding()
    else:  # also when dropping: the client then knows the body came up short
        response.content_length = sum(len(frame) for frame in frames)
    await response.prepare(request)
    if reply.endless:
        await _write_endless(response)
        return response
    if reply.stall_after_frames == 0:
        await asyncio.sleep(reply.stall_seconds)
    done = 0
    for piece, complete in _pieces(frames, reply, limit):
        await response.write(piece)
        if reply.drip_interval is not None:
            await asyncio.sleep(reply.drip_interval)
        if complete > done:
            if reply.stall_after_frames is not None and done < reply.stall_after_frames <= complete:
                await asyncio.sleep(reply.stall_seconds)
            if reply.frame_delay and complete < len(frames):
                await asyncio.sleep(reply.frame_delay)
            done = complete
        # Yield even when unpaced, so concurrent streams interleave and stop() gets through.
        await asyncio.sleep(0)
    if limit is not None:
        await _flush(transport)
        _reset(transport)
        return response
    await response.write_eof()
    return response


def _drop_offset(reply: Reply, frames: list[bytes]) -> int | None:
    """The body offset at which to abort the connection, or None to end cleanly."""
    limits = []
    if reply.drop_after_bytes is not None:
        limits.append(reply.drop_after_bytes)
    if reply.drop_after_frames is not None:
        limits.append(sum(len(frame) for frame in frames[: reply.drop_after_frames]))
    return min(limits) if limits else None


def _pieces(frames: list[bytes], reply: Reply, limit: int | None) -> Iterator[tuple[bytes, int]]:
    """The body as writes, each with the number of frames complete after it."""
    sizes = [1] if reply.drip_interval is not None else reply.chunk_sizes
    if not sizes:
        offset = 0
        for number, frame in enumerate(frames, start=1):
            if limit is not None and offset + len(frame) >= limit:
                if limit > offset:
                    whole = limit - offset == len(frame)
                    yield frame[: limit - offset], number if whole else number - 1
                return
            offset += len(frame)
            yield frame, number
        return
    ends = []
    offset = 0
    for frame in frames:
        offset += len(frame)
        ends.append(offset)
    body = b"".join(frames)
    if limit is not None:
        body = body[:limit]
    position, turn = 0, 0
    while position < len(body):
        stop = position + sizes[turn % len(sizes)]
        turn += 1
        yield body[position:stop], bisect.bisect_right(ends, min(stop, len(body)))
        position = stop


async def _write_endless(response: web.StreamResponse) -> None:
    """One ``data:`` line that never ends, in fixed blocks, until the client leaves."""
    await response.write(b"data:")
    while True:
        await response.write(_ENDLESS_BLOCK)
        await asyncio.sleep(0)


async def _flush(transport: asyncio.Transport) -> None:
    """Wait (bounded) until written bytes have left asyncio and the kernel."""
    deadline = time.monotonic() + _FLUSH_TIMEOUT
    sock = transport.get_extra_info("socket")
    while time.monotonic() < deadline and not transport.is_closing():
        pending = transport.get_write_buffer_size()
        if pending == 0 and _OUTQ is not None and sock is not None:
            with contextlib.suppress(OSError):
                pending = struct.unpack("i", _ioctl(sock.fileno(), _OUTQ, b"\0" * 4))[0]
        if pending == 0:
            return
        await asyncio.sleep(0.001)


def _reset(transport: asyncio.Transport) -> None:
    """Abort the connection with a TCP reset instead of an orderly FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
