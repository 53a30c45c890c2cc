"""Append-only text and item logs that hand out cheap prefixes (pure, no I/O)."""

from __future__ import annotations

import threading

__all__ = ["ItemLog", "TextBuffer"]


class TextBuffer:
    """Cumulative text built from deltas, joined only when someone reads it.

    Outputs keep ``(buffer, length)``; :meth:`upto` joins the pending parts
    once and slices, so a stream whose caller reads only deltas (or only the
    last output) costs O(answer) instead of O(frames x answer).  Unread parts
    are joined in runs of ``_RUN`` as they come: a delta of 20 characters is a
    120-byte object, so 200 of them held apart took three times the text's own
    size per stream, and 5,000 streams at once paid for it in RSS.  The sync
    bridge reads outputs on another thread while the loop appends: readers
    take the lock (a read joins and trims the pending parts); appends need it
    only to join a run.
    """

    __slots__ = ("_blocks", "_joined", "_lock", "_parts", "length")

    _RUN = 16

    def __init__(self) -> None:
        self._joined = ""  # the prefix read so far
        self._blocks: list[str] = []  # then runs of parts, joined
        self._parts: list[str] = []  # then the latest parts
        self._lock = threading.Lock()
        self.length = 0

    @classmethod
    def of(cls, snapshot: str) -> TextBuffer:
        """A buffer holding a whole snapshot (cumulative frames)."""
        buffer = cls()
        buffer._joined = snapshot
        buffer.length = len(snapshot)
        return buffer

    def append(self, part: str) -> None:
        # No lock for the append itself: one thread appends, and list.append is
        # atomic, so a reader (locked against other readers) sees every part up
        # to any length it was handed, whatever it catches of this part; only
        # the appender writes ``length``.
        parts = self._parts
        parts.append(part)
        self.length += len(part)
        if len(parts) >= self._RUN:
            with self._lock:  # a reader may be taking parts: join what it left
                if parts:
                    self._blocks.append("".join(parts))
                    parts.clear()

    def upto(self, length: int) -> str:
        with self._lock:
            joined = self._joined
            size = len(joined)
            if length > size:
                # Join only the pieces up to ``length``: reading every output in
                # turn then appends one part each time.  Slicing a longer joined
                # string instead would rescan the whole prefix (str slicing
                # looks for its widest character), which made reading ``text``
                # on every frame cost O(answer) more per frame.
                taken: list[str] = []
                for pending in (self._blocks, self._parts):
                    count = 0
                    for piece in pending:
                        size += len(piece)
                        count += 1
                        if size >= length:
                            break
                    taken += pending[:count]
                    del pending[:count]
                    if size >= length:
                        break
                joined += taken[0] if len(taken) == 1 else "".join(taken)
                self._joined = joined
        return joined if length == len(joined) else joined[:length]


class ItemLog:
    """An append-only list that hands out cheap prefixes as tuples (pure, no I/O).

    Outputs keep ``(log, length)`` like they keep ``(TextBuffer, length)``:
    growing a tuple on every frame would copy the whole sequence each time.
    :meth:`upto` builds the tuple when someone reads it; the last one built is
    cached so reading the same output twice, or only the last output, is cheap.
    """

    __slots__ = ("_cache", "_items")

    def __init__(self) -> None:
        self._items: list[object] = []
        self._cache: tuple[int, tuple[object, ...]] = (0, ())

    @property
    def length(self) -> int:
        return len(self._items)

    def extend(self, items: list[object] | tuple[object, ...]) -> None:
        # list.extend is atomic under the GIL: a reader on the sync bridge's
        # thread sees either none or all of a frame's items, and only asks for
        # lengths it was handed anyway.
        self._items.extend(items)

    def upto(self, length: int) -> tuple[object, ...]:
        cached_length, cached = self._cache
        if length == cached_length:
            return cached
        if length > cached_length:
            value = cached + tuple(self._items[cached_length:length])
        else:
            value = tuple(self._items[:length])
        self._cache = (length, value)
        return value
