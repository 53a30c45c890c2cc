"""Load recorded ``tests/transcripts/*.sse`` files and replay them.

The file format is described in ``tests/transcripts/README.md``: ``#!`` directive
lines (status, content type, headers, expected outcome), a lone ``#!`` line, then
the response body, byte for byte, to the end of the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiotongyi.testing import Reply

TRANSCRIPTS_DIR = Path(__file__).resolve().parent.parent / "transcripts"
_DIRECTIVE = b"#!"


@dataclass(frozen=True)
class Transcript:
    """One recorded HTTP response: status, headers and the exact body bytes."""

    name: str
    about: str
    status: int
    content_type: str
    headers: Mapping[str, str]
    body: bytes
    expect: Mapping[str, object] = field(default_factory=dict)

    @property
    def is_error(self) -> bool:
        """True when the expected outcome is an API error."""
        return "error" in self.expect

    @property
    def request_id(self) -> str | None:
        """The ``x-request-id`` header the response carries, if any."""
        return self.headers.get("x-request-id")

    def expected(self) -> dict[str, object]:
        """``expect`` with tool-call arguments parsed (the normalised shape)."""
        out = json.loads(json.dumps(self.expect))
        for call in out.get("tool_calls", ()):
            call["arguments"] = json.loads(call["arguments"])
        return out  # type: ignore[no-any-return]

    def response_headers(self) -> dict[str, str]:
        """Headers to send, content type included."""
        return {"content-type": self.content_type, **self.headers}

    def to_reply(
        self, *, chunk_sizes: Sequence[int] | None = None, body: bytes | None = None
    ) -> Reply:
        """An emulator ``Reply`` that sends exactly this response (optionally re-cut)."""
        from aiotongyi.testing import Reply

        return Reply(
            raw_body=self.body if body is None else body,
            status=self.status,
            content_type=self.content_type,
            headers=dict(self.headers),
            chunk_sizes=chunk_sizes,
            # The emulator writes Reply.request_id as x-request-id, over headers.
            request_id=self.request_id,
        )


def parse(name: str, data: bytes) -> Transcript:
    """Parse one transcript file's bytes."""
    directives: list[tuple[str, str]] = []
    pos = 0
    while True:
        end = data.index(b"\n", pos)
        line = data[pos:end]
        pos = end + 1
        if not line.startswith(_DIRECTIVE):
            raise ValueError(f"{name}: expected a '#!' directive line, got {line!r}")
        text = line[len(_DIRECTIVE) :].decode("utf-8").strip()
        if not text:
            break
        key, _, value = text.partition(":")
        directives.append((key.strip(), value.strip()))
    fields: dict[str, str] = {}
    headers: dict[str, str] = {}
    for key, value in directives:
        if key == "header":
            header, _, header_value = value.partition(":")
            headers[header.strip().lower()] = header_value.strip()
        else:
            fields[key] = value
    return Transcript(
        name=name,
        about=fields.get("about", ""),
        status=int(fields.get("status", "200")),
        content_type=fields.get("content-type", "text/event-stream;charset=UTF-8"),
        headers=headers,
        body=data[pos:],
        expect=json.loads(fields.get("expect", "{}")),
    )


def load(name: str) -> Transcript:
    """Load ``tests/transcripts/<name>.sse``."""
    path = TRANSCRIPTS_DIR / f"{name}.sse"
    return parse(name, path.read_bytes())


def names(prefix: str = "") -> list[str]:
    """Sorted transcript names, optionally only those starting with ``prefix``."""
    return sorted(p.stem for p in TRANSCRIPTS_DIR.glob(f"{prefix}*.sse"))


def split(body: bytes, sizes: Sequence[int]) -> list[bytes]:
    """Cut ``body`` into pieces of the given sizes, cycled (like ``Reply.chunk_sizes``)."""
    if not sizes or any(size <= 0 for size in sizes):
        raise ValueError("chunk sizes must be positive")
    out: list[bytes] = []
    pos = 0
    i = 0
    while pos < len(body):
        size = sizes[i % len(sizes)]
        out.append(body[pos : pos + size])
        pos += size
        i += 1
    return out
