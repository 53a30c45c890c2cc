"""Multimodal content parts: local files and bytes become data URLs (no network).

DashScope's native multimodal content is a list of one-key parts such as
``{"image": "https://..."}`` or ``{"text": "..."}``.  URLs (``http(s)://``,
``data:``, ``oss://``) pass through; a local path, ``file://`` URL,
``pathlib.Path`` or ``bytes`` is read and sent inline as a base64 ``data:``
URL.  Media above the inline limit (or any local media, when asked) is left
as a :class:`LocalFile` placeholder for ``_upload`` to send to DashScope's
temporary storage, as the official SDK does.  OpenAI-style parts
(``{"type": "image_url", ...}``) are translated.
"""

from __future__ import annotations

import base64
import dataclasses
import mimetypes
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import unquote, urlsplit

__all__ = [
    "MAX_INLINE_BYTES",
    "MEDIA_KEYS",
    "LocalFile",
    "has_media",
    "local_files",
    "normalize_parts",
    "uses_oss",
]

MEDIA_KEYS = ("image", "video", "audio")
#: Inline media larger than this is refused (DashScope caps base64 input near 10 MB).
MAX_INLINE_BYTES = 10 * 1024 * 1024
_PASS_THROUGH = ("http://", "https://", "data:", "oss://")
_MIME_ALIASES = {"audio/x-wav": "audio/wav"}  # the registered name, not the legacy one
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"ID3", "audio/mpeg"),
    (b"\xff\xfb", "audio/mpeg"),
    (b"fLaC", "audio/flac"),
    (b"OggS", "audio/ogg"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class LocalFile:
    """Local media to upload to temporary storage before the request is sent.

    :param name: the object's file name (the local file's base name).
    :param mime: the ``x-oss-content-type`` to store it with.
    :param size: its size in bytes when the call was prepared.
    :param path: the absolute path of a file (``None`` for bytes).
    :param data: the bytes themselves (``None`` for a file).
    """

    name: str
    mime: str
    size: int
    path: Path | None = None
    data: bytes | None = dataclasses.field(default=None, repr=False)


def normalize_parts(
    where: str, parts: Sequence[Any], *, upload: bool = False
) -> list[dict[str, Any]]:
    """Check a content list; inline its local media, or mark it for upload.

    Media above :data:`MAX_INLINE_BYTES`, and with ``upload`` any local file or
    bytes, becomes a :class:`LocalFile` placeholder.

    :raises ValueError: for unknown part shapes or missing files.
    """
    normalized = []
    for position, part in enumerate(parts):
        label = f"{where}[{position}]"
        if not isinstance(part, Mapping) or not part:
            raise ValueError(f"{label} must be a non-empty mapping such as {{'text': '...'}}")
        part = _from_openai_style(label, part)
        converted: dict[str, Any] = {}
        for key, value in part.items():
            if key in MEDIA_KEYS:
                if key == "video" and isinstance(value, list | tuple):
                    converted[key] = [_media(f"{label}.video", key, v, upload) for v in value]
                else:
                    converted[key] = _media(label, key, value, upload)
            elif key == "text" and not isinstance(value, str):
                raise ValueError(f"{label} text must be a str")
            else:
                converted[key] = value
        normalized.append(converted)
    return normalized


def has_media(parts: Sequence[Mapping[str, Any]]) -> bool:
    return any(key in part for part in parts for key in MEDIA_KEYS)


def local_files(parts: Sequence[Mapping[str, Any]]) -> Iterator[LocalFile]:
    """The :class:`LocalFile` placeholders of normalized parts, in order."""
    for part in parts:
        for key in MEDIA_KEYS:
            value = part.get(key)
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, LocalFile):
                    yield item


def uses_oss(parts: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a part points at ``oss://`` (temporary storage the service must resolve)."""
    for part in parts:
        for key in MEDIA_KEYS:
            value = part.get(key)
            values = value if isinstance(value, list) else [value]
            if any(isinstance(v, str) and v.startswith("oss://") for v in values):
                return True
    return False


# Hints that ride beside the media on the native wire (as the official SDK
# translates them): resize and frame-rate hints, and the explicit-cache marker.
_HINTS = {
    "text": ("cache_control",),
    "image": ("min_pixels", "max_pixels", "cache_control"),
    "audio": ("cache_control",),
    "video": ("fps", "min_pixels", "max_pixels", "total_pixels", "cache_control"),
}


def _from_openai_style(label: str, part: Mapping[str, Any]) -> Mapping[str, Any]:
    kind = part.get("type")
    if kind is None:
        return part
    if kind == "text":
        return _with_hints({"text": part.get("text", "")}, "text", part, None)
    for openai_key, key in (
        ("image_url", "image"),
        ("input_audio", "audio"),
        ("video_url", "video"),
    ):
        if kind == openai_key:
            inner = part.get(openai_key)
            url = inner.get("url", inner.get("data")) if isinstance(inner, Mapping) else inner
            if url is None:
                raise ValueError(f"{label} has no {openai_key} url")
            nested = inner if isinstance(inner, Mapping) else None
            return _with_hints({key: url}, key, part, nested)
    raise ValueError(f"{label} has an unsupported part type {kind!r}")


def _with_hints(
    converted: dict[str, Any],
    key: str,
    part: Mapping[str, Any],
    inner: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Keep the hints given beside the part (or inside its ``image_url``-style object)."""
    for hint in _HINTS[key]:
        for source in (inner, part):  # a sibling wins over a nested one
            if source is not None and source.get(hint) is not None:
                converted[hint] = source[hint]
    return converted


def _media(label: str, key: str, value: Any, upload: bool) -> str | LocalFile:
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
        mime = _sniff(data)
        if upload or len(data) > MAX_INLINE_BYTES:
            mime = mime or "application/octet-stream"
            # The object needs a name; the extension helps the service tell the type.
            name = f"{key}{mimetypes.guess_extension(mime) or ''}"
            return LocalFile(name=name, mime=mime, size=len(data), data=data)
        return _data_url(label, data, mime or _unknown_type(label, key))
    if isinstance(value, os.PathLike):
        return _read_file(label, key, Path(value), upload)
    if not isinstance(value, str):
        raise ValueError(
            f"{label} {key} must be a URL, a path or bytes, not {type(value).__name__}"
        )
    if value.startswith(_PASS_THROUGH):
        return value
    if value.startswith("file://"):
        parts = urlsplit(value)
        # "file://cat.png" (DashScope's own examples) and "file://D:/x.png" put part
        # of the path in the host; only "file:///x" and "file://localhost/x" do not.
        host = "" if parts.netloc in ("", "localhost") else parts.netloc
        return _read_file(label, key, Path(unquote(host + parts.path)), upload)
    path = Path(value).expanduser()
    if path.is_file():
        return _read_file(label, key, path, upload)
    raise ValueError(
        f"{label} {key} is neither an http(s)/data/oss URL nor an existing file: {value!r}"
    )


def _read_file(label: str, key: str, path: Path, upload: bool) -> str | LocalFile:
    try:
        size = path.stat().st_size
        if upload or size > MAX_INLINE_BYTES:
            with path.open("rb") as file:
                head = file.read(16)
            # What the official SDK stores it as (mimetypes, else octet-stream),
            # with the sniffed type for a name that says nothing.
            mime = mimetypes.guess_type(path.name)[0] or _sniff(head) or "application/octet-stream"
            return LocalFile(name=path.name, mime=mime, size=size, path=path.resolve())
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{label} {key} file cannot be read: {exc}") from None
    mime = mimetypes.guess_type(path.name)[0] or _sniff(data) or _unknown_type(label, key)
    mime = _MIME_ALIASES.get(mime, mime)
    return _data_url(label, data, mime)


def _data_url(label: str, data: bytes, mime: str) -> str:
    if len(data) > MAX_INLINE_BYTES:
        raise ValueError(_too_big(label, len(data)))
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _sniff(data: bytes) -> str | None:
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "audio/wav"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    return None


def _unknown_type(label: str, key: str) -> NoReturn:
    raise ValueError(
        f"{label}: cannot tell the type of these {key} bytes; pass a file path or a "
        "data: URL with its MIME type"
    )


def _too_big(label: str, size: int) -> str:
    return f"{label} is {size} bytes; inline media is limited to {MAX_INLINE_BYTES} bytes"
