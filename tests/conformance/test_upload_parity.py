"""Uploads of local media: aiotongyi sends what the official SDK 2.0.2 sends.

The SDK uploads with ``requests`` (its ``OssUtils``, shared by the legacy API
and v2), so both sides upload to the emulator's temporary storage, which
records the policy request, each form POST (fields in order, part headers,
file name, size and hash) and the chat request that names the ``oss://`` URL.
The legacy chat request is recorded by the emulator too; v2's goes through
httpx and is answered by respx.  aiotongyi is asked with ``upload=True`` (it
inlines small files otherwise: the "local-media-inline" difference).
"""

from __future__ import annotations

import email.utils
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dashscope
import pytest
import respx

from aiotongyi import TongyiLLMClient
from aiotongyi.testing import DashScopeEmulator, RecordedRequest, RecordedUpload

from . import _sdk
from ._differences import use
from .test_request_parity import Captured, _assert_same_request, _from_emulator, _from_httpx

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(64))
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(64, 128))
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00" + os.urandom(3000)
MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(range(128, 192))
FILES = {
    "cat.png": PNG,
    "dog.jpg": JPEG,
    "f1.jpg": JPEG + b"1",
    "f2.jpg": JPEG + b"2",
    "clip.mp4": MP4,
    "voice.mp3": MP3,
    "猫 photo.png": PNG + b"cjk",
}
OSS_HEADER = "x-dashscope-ossresourceresolve"
POLICY = "/api/v1/uploads"
# Fields whose values come from the policy (they differ per policy, not per client).
PER_POLICY = {"Signature", "policy", "key"}


def user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


@dataclass(frozen=True)
class UploadCase:
    id: str
    build: Callable[[Path], list[dict[str, Any]]]
    model: str = "qwen-vl-max"


CASES = [
    UploadCase("image-path", lambda d: user({"image": str(d / "cat.png")}, {"text": "?"})),
    UploadCase("image-file-url", lambda d: user({"image": (d / "dog.jpg").as_uri()})),
    UploadCase("cjk-name", lambda d: user({"image": (d / "猫 photo.png").as_uri()}, {"text": "?"})),
    UploadCase("video", lambda d: user({"video": str(d / "clip.mp4")}, {"text": "?"})),
    UploadCase(
        "video-frames",
        lambda d: user(
            {"video": [str(d / "f1.jpg"), (d / "f2.jpg").as_uri(), "https://x.test/3.jpg"]},
            {"text": "?"},
        ),
    ),
    UploadCase(
        "several-files",
        lambda d: user({"image": str(d / "cat.png")}, {"image": str(d / "dog.jpg")}),
    ),
    UploadCase(
        "audio",
        lambda d: user({"audio": str(d / "voice.mp3")}, {"text": "转写"}),
        model="qwen-audio-turbo",
    ),
]


@dataclass(frozen=True)
class Flow:
    """What one side sent: policy requests, uploads and the chat request."""

    policies: list[RecordedRequest]
    uploads: list[RecordedUpload]
    chat: Captured


@pytest.fixture
def media(tmp_path: Path) -> Path:
    for name, data in FILES.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


@pytest.fixture
async def client(dashscope_emulator: DashScopeEmulator) -> AsyncIterator[TongyiLLMClient]:
    async with TongyiLLMClient(
        api_key=_sdk.SDK_KEY, base_url=dashscope_emulator.base_url, max_retries=0
    ) as ours:
        yield ours


@pytest.fixture
def v2(dashscope_emulator: DashScopeEmulator) -> Iterator[dashscope.Client]:
    # v2 fetches the upload policy from its own base_url: the emulator's.
    sdk = dashscope.Client(
        api_key=_sdk.SDK_KEY, base_url=dashscope_emulator.base_url, protocol="native", max_retries=0
    )
    try:
        yield sdk
    finally:
        sdk.close()


def _flow(emu: DashScopeEmulator, chat: Captured | None = None) -> Flow:
    policies = [r for r in emu.requests if r.path == POLICY]
    return Flow(policies, emu.uploads.uploads, chat or _from_emulator(emu))


async def _ours(client: TongyiLLMClient, emu: DashScopeEmulator, c: UploadCase, d: Path) -> Flow:
    emu.reset()
    out = await client.generate(c.build(d), model=c.model, upload=True)
    assert out.finish_reason == "stop"
    return _flow(emu)


def _legacy(emu: DashScopeEmulator, c: UploadCase, d: Path) -> Flow:
    emu.reset()
    use("always-message-incremental")
    with _sdk.legacy_base_url(emu.base_url):
        responses = list(
            _sdk.legacy_multimodal_call(
                model=c.model,
                messages=c.build(d),
                api_key=_sdk.SDK_KEY,
                stream=True,
                result_format="message",
                incremental_output=True,
            )
        )
    assert responses[-1].status_code == 200
    return _flow(emu)


def _v2(sdk: dashscope.Client, emu: DashScopeEmulator, c: UploadCase, d: Path) -> Flow:
    emu.reset()
    t = _sdk.load_plain()
    with respx.mock(assert_all_called=False) as router:
        route = router.post(url__startswith=emu.base_url + "/services/aigc/")
        route.mock(return_value=_sdk.respond(t.body, headers=t.response_headers()))
        sdk.chat.completions.create(
            model=c.model, messages=c.build(d), stream=True
        ).get_final_message()
    return _flow(emu, _from_httpx(route.calls.last.request))


def _assert_same_uploads(mine: Flow, theirs: Flow, d: Path) -> None:
    # The policy request: same method, path, query and the headers that matter.
    assert len(mine.policies) == len(theirs.policies) >= 1
    for a, b in zip(mine.policies, theirs.policies, strict=True):
        assert (a.method, a.path, a.query) == (b.method, b.path, b.query)
        for name in ("authorization", "accept", "x-dashscope-workspace"):
            assert a.headers.get(name) == b.headers.get(name), name
    use("sdk-identification-headers")
    # The form POSTs: the same fields in the same order, the same file.
    assert len(mine.uploads) == len(theirs.uploads) >= 1
    for a, b in zip(mine.uploads, theirs.uploads, strict=True):
        assert [name for name, _ in a.fields] == [name for name, _ in b.fields]
        same = {k: v for k, v in a.fields if k not in PER_POLICY}
        assert same == {k: v for k, v in b.fields if k not in PER_POLICY}
        assert (a.filename, a.size, a.sha256) == (b.filename, b.size, b.sha256)
        assert a.sha256 == _sha256((d / (a.filename or "")).read_bytes())
        assert a.key.rsplit("/", 1)[1] == b.key.rsplit("/", 1)[1] == a.filename
        assert dict(a.fields)["key"] == a.key
        assert a.part_headers == b.part_headers
        for name in ("accept", "authorization", "content-length"):
            assert (name in a.headers) == (name in b.headers), name
            if name != "content-length":
                assert a.headers.get(name) == b.headers.get(name), name
        assert a.headers["content-type"].startswith("multipart/form-data; boundary=")
        assert email.utils.parsedate_to_datetime(a.headers["date"]).tzinfo is not None


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _positional(value: object, urls: dict[str, str]) -> object:
    """The body with each uploaded ``oss://`` URL named by its upload's position."""
    if isinstance(value, str):
        return urls.get(value, value)
    if isinstance(value, dict):
        return {k: _positional(v, urls) for k, v in value.items()}
    if isinstance(value, list):
        return [_positional(v, urls) for v in value]
    return value


def _chat(flow: Flow) -> Captured:
    urls = {u.url: f"oss://upload-{i}" for i, u in enumerate(flow.uploads)}
    return replace(flow.chat, body=_positional(flow.chat.body, urls))


def _assert_same_chat(mine: Flow, theirs: Flow, *, compare_accept: bool) -> None:
    assert mine.chat.headers.get(OSS_HEADER) == theirs.chat.headers.get(OSS_HEADER) == "enable"
    a, b = _chat(mine), _chat(theirs)
    assert "oss://upload-0" in str(a.body)
    _assert_same_request(a, b, compare_accept=compare_accept)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
async def test_same_upload_flow_as_the_legacy_sdk(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, media: Path, c: UploadCase
) -> None:
    mine = await _ours(client, dashscope_emulator, c, media)
    theirs = _legacy(dashscope_emulator, c, media)
    _assert_same_uploads(mine, theirs, media)
    use("body-serialisation")
    _assert_same_chat(mine, theirs, compare_accept=True)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
async def test_same_upload_flow_as_the_v2_client(
    client: TongyiLLMClient,
    v2: dashscope.Client,
    dashscope_emulator: DashScopeEmulator,
    media: Path,
    c: UploadCase,
) -> None:
    mine = await _ours(client, dashscope_emulator, c, media)
    theirs = _v2(v2, dashscope_emulator, c, media)
    _assert_same_uploads(mine, theirs, media)
    _assert_same_chat(mine, theirs, compare_accept=False)
