"""An append-only text that hands out cheap prefixes (pure, no I/O)."""

from __future__ import annotations

import threading

__all__ = ["TextBuffer"]


class TextBuffer:
    """Cumulative text built from deltas, joined only when someone reads it.

    Outputs keep ``(buffer, length)``; :meth:`upto` joins the pending parts
    once and slices, so a stream whose caller reads only deltas (or only the
    last output) costs O(answer) instead of O(frames x answer).  The sync
    bridge reads outputs on another thread while the loop appends, hence the
    lock (uncontended, it costs far less than the frame it guards).
    """

    __slots__ = ("_joined", "_lock", "_pending", "length")

    def __init__(self) -> None:
        self._joined = ""
        self._pending: list[str] = []
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
        with self._lock:
            self._pending.append(part)
            self.length += len(part)

    def upto(self, length: int) -> str:
        with self._lock:
            pending = self._pending
            if pending:
                self._joined += pending[0] if len(pending) == 1 else "".join(pending)
                pending.clear()
            joined = self._joined
        return joined if length == len(joined) else joined[:length]
