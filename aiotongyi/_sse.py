"""Incremental Server-Sent Events decoder: bytes in, events out (pure, no I/O).

DashScope frames look like ``id:1\\nevent:result\\n:HTTP_STATUS/200\\ndata:{...}\\n\\n``.
The decoder splits lines at LF, CRLF and lone CR (a CR at the end of one chunk
and an LF at the start of the next are one break), keeps the
``:HTTP_STATUS/NNN`` comment with its event, joins multi-line ``data``, and
works at the byte level so a UTF-8 character split across reads comes out
whole.  It only scans bytes it has not seen before, so a frame of many MiB fed
one byte at a time still decodes in linear time.
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["MAX_EVENT_BYTES", "SSEDecoder", "SSEEvent", "SSEProtocolError"]

#: One event (its data plus the unfinished line) may not grow past this.
MAX_EVENT_BYTES = 64 * 1024 * 1024
_STAGE_BYTES = 1024 * 1024

_BOM = b"\xef\xbb\xbf"
_STATUS_COMMENT = b":HTTP_STATUS/"
_EVENT_NAMES = {b"result": "result", b"error": "error"}
_KNOWN_STATUS = {b":HTTP_STATUS/200": 200}  # the comment on nearly every frame
# The exact shape of nearly every DashScope frame, matched whole by one regex
# instead of five lines through the general loop.  Anything else (CR, NUL or
# non-ASCII in the id, other fields or order, multi-line data, data that is
# empty or starts with a second space, [DONE]) goes the general way.  The
# fast path runs only between two events, so no field of another is pending.
_COMMON_EVENT = re.compile(
    rb"id: ?([\x01-\x09\x0b-\x7f]*)\nevent: ?result\n:HTTP_STATUS/200\ndata: ?([^\n ][^\n]*)\n\n"
).match
# A regex walks ``[^\n]*`` byte by byte (18 us on a 30 KB snapshot frame, more
# than decoding it), so once frames are long (snapshots), the regex matches a
# frame's head only and memchr finds its end.
_LONG_FRAME = 2048
_COMMON_HEAD = re.compile(
    rb"id: ?([\x01-\x09\x0b-\x7f]*)\nevent: ?result\n:HTTP_STATUS/200\ndata: ?(?=[^\n ])"
).match

_new_event = tuple.__new__  # SSEEvent(...) without its Python-level __new__


class SSEProtocolError(ValueError):
    """The byte stream broke an SSE rule the decoder cannot recover from."""


class SSEEvent(NamedTuple):
    """One dispatched event; ``data`` is raw bytes (JSON is parsed later)."""

    event: str
    data: bytes
    id: str | None = None
    status: int | None = None


class SSEDecoder:
    """Feed it chunks with :meth:`feed`, then call :meth:`flush` at end of stream."""

    __slots__ = (
        "_data",
        "_event",
        "_id",
        "_long_frames",
        "_max_event_bytes",
        "_parts",
        "_parts_size",
        "_size",
        "_skip_lf",
        "_stage_bytes",
        "_started",
        "_status",
        "_tail",
    )

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._max_event_bytes = max_event_bytes
        # An unfinished line: small pieces gather in a bytearray; past 1 MiB it is
        # frozen into _parts, so a huge line never reallocates (and copies) one
        # ever-growing buffer, which would double its memory at the wrong time.
        self._tail = bytearray()
        self._parts: list[bytes] = []
        self._parts_size = 0
        self._stage_bytes = min(_STAGE_BYTES, max_event_bytes)
        self._skip_lf = False  # the last chunk ended in CR: a leading LF is its CRLF
        self._started = False  # a BOM is only stripped from the very first line
        self._event = b""
        self._data: list[bytes] = []
        self._id: bytes | None = None
        self._status: int | None = None
        self._size = 0  # bytes held for the pending event
        self._long_frames = False  # a long frame seen: match heads only (see _COMMON_HEAD)

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Decode a chunk; returns the events it completed (often none or one)."""
        if self._skip_lf:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if 0x0D in chunk:  # CR; an int is found by memchr, far faster than b"\r"
            self._skip_lf = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        elif not (self._tail or self._parts or self._data or self._event) and (
            self._id is None and self._status is None
        ):  # between two events: whole common frames take the fast path
            return self._common(chunk, 0)
        elif self._tail or self._parts:
            # A frame split across reads (long frames nearly always are): once its
            # line and its event end, the rest of the chunk may take the fast path.
            line_end = chunk.find(b"\n")
            if 0 <= line_end < len(chunk) - 2 and chunk[line_end + 1] == 0x0A:
                return self._general(chunk[: line_end + 2]) + self._common(chunk, line_end + 2)
        return self._general(chunk)

    def _general(self, chunk: bytes) -> list[SSEEvent]:
        """Any chunk, line by line (LF only by now)."""
        if 0x0A not in chunk:  # inlined _grow_tail: the hot path of a huge line in tiny reads
            tail = self._tail
            tail += chunk
            if len(tail) >= self._stage_bytes:
                self._spill()
            return []
        # One split copies each byte once; the unfinished tail joins only the first line.
        lines = chunk.split(b"\n")
        rest = lines.pop()  # after the last LF: the start of the next line
        if self._tail or self._parts:
            lines[0] = self._take_line(lines[0])
        events: list[SSEEvent] = []
        self._lines(lines, events)
        if rest:
            self._grow_tail(rest)
        return events

    def _common(self, chunk: bytes, end: int) -> list[SSEEvent]:
        """``chunk[end:]``, which starts between two events: common frames, then the rest."""
        events: list[SSEEvent] = []
        size = len(chunk)
        long_frames = self._long_frames
        while True:
            if long_frames:
                found = _COMMON_HEAD(chunk, end)
                if found is None:
                    break
                start = found.end()
                line_end = chunk.find(b"\n", start)
                if line_end < 0 or line_end + 1 == size or chunk[line_end + 1] != 0x0A:
                    break  # unfinished, or more lines in this event: the general path
                event_id, payload = found[1], chunk[start:line_end]
                next_end = line_end + 2
            else:
                found = _COMMON_EVENT(chunk, end)
                if found is None:
                    break
                event_id, payload = found.groups()
                next_end = found.end()
                if len(payload) >= _LONG_FRAME:
                    long_frames = self._long_frames = True
            if payload == b"[DONE]" or len(payload) >= self._max_event_bytes:
                break  # the general path drops the one and refuses the other
            events.append(_new_event(SSEEvent, ("result", payload, event_id.decode(), 200)))
            end = next_end
            if end == size:
                break
        if end:
            self._started = True  # a frame matched from the start: the first line held no BOM
            if end == size:
                return events
            chunk = chunk[end:]
        return events + self._general(chunk) if events else self._general(chunk)

    def flush(self) -> list[SSEEvent]:
        """End of stream: dispatch a pending event even without its blank line."""
        events: list[SSEEvent] = []
        if self._tail or self._parts:
            self._lines([self._take_line(b"")], events)
        self._dispatch(events)
        return events

    def _grow_tail(self, part: bytes) -> None:
        self._tail += part
        if len(self._tail) >= self._stage_bytes:
            self._spill()

    def _spill(self) -> None:
        """Freeze the staged bytes of a long line (and enforce the event cap)."""
        self._parts.append(bytes(self._tail))
        self._parts_size += len(self._tail)
        self._tail.clear()
        if self._parts_size + self._size > self._max_event_bytes:
            self._too_big()

    def _take_line(self, end: bytes) -> bytes:
        """The unfinished line plus ``end``; the tail is empty afterwards."""
        tail = self._tail
        if self._parts:
            parts = self._parts
            parts.append(bytes(tail))
            parts.append(end)
            line = b"".join(parts)
            parts.clear()
            self._parts_size = 0
        else:
            tail += end
            line = bytes(tail)
        tail.clear()
        return line

    def _too_big(self) -> None:
        raise SSEProtocolError(f"an SSE event grew past {self._max_event_bytes} bytes")

    def _lines(self, lines: list[bytes], events: list[SSEEvent]) -> None:
        if not self._started and lines:
            self._started = True
            if lines[0].startswith(_BOM):
                lines[0] = lines[0][len(_BOM) :]
        for line in lines:
            if not line:
                self._dispatch(events)
            elif line[0] == 0x3A:  # ":" starts a comment
                if line.startswith(_STATUS_COMMENT):
                    status = _KNOWN_STATUS.get(line)
                    self._status = status or _parse_status(line[len(_STATUS_COMMENT) :])
            else:
                name, _, value = line.partition(b":")
                if value[:1] == b" ":
                    value = value[1:]
                if name == b"data":
                    self._data.append(value)
                    self._size += len(value) + 1
                    if self._size > self._max_event_bytes:
                        self._too_big()
                elif name == b"event":
                    self._event = value
                elif name == b"id":
                    if b"\0" in value:  # the WHATWG rule: such an id field is ignored
                        continue
                    # Some gateways omit the blank line: a new id ends the last event.
                    if self._data:
                        self._dispatch(events)
                    self._id = value
                # Unknown fields and retry: are ignored, as the SSE spec says.

    def _dispatch(self, events: list[SSEEvent]) -> None:
        data = self._data
        if data:
            payload = data[0] if len(data) == 1 else b"\n".join(data)
            if payload and payload != b"[DONE]":
                events.append(
                    SSEEvent(
                        _EVENT_NAMES.get(self._event) or _text(self._event) or "message",
                        payload,
                        None if self._id is None else _text(self._id),
                        self._status,
                    )
                )
            self._data = []
        self._event = b""
        self._id = None
        self._status = None
        self._size = 0


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise SSEProtocolError("an SSE field is not valid UTF-8") from exc


def _parse_status(raw: bytes) -> int | None:
    digits = raw.strip()
    return int(digits) if digits.isdigit() and len(digits) == 3 else None
