"""An append-only text that hands out cheap prefixes (pure, no I/O)."""

from __future__ import annotations

__all__ = ["TextBuffer"]


class TextBuffer:
    """Cumulative text built from deltas, joined only when someone reads it.

    Outputs keep ``(buffer, length)``; :meth:`upto` joins the pending parts
    once and slices, so a stream whose caller reads only deltas (or only the
    last output) costs O(answer) instead of O(frames x answer).
    """

    __slots__ = ("_joined", "_pending", "length")

    def __init__(self) -> None:
        self._joined = ""
        self._pending: list[str] = []
        self.length = 0

    def append(self, part: str) -> None:
        self._pending.append(part)
        self.length += len(part)

    @classmethod
    def of(cls, snapshot: str) -> TextBuffer:
        """A buffer holding a whole snapshot (cumulative frames)."""
        buffer = cls()
        buffer._joined = snapshot
        buffer.length = len(snapshot)
        return buffer

    def upto(self, length: int) -> str:
        if self._pending:
            self._joined += "".join(self._pending)
            self._pending = []
        joined = self._joined
        return joined if length == len(joined) else joined[:length]
