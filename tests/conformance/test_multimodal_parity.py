"""Multimodal requests: aiotongyi sends what the official SDK sends, media aside.

Every row of ``CASES`` is sent by aiotongyi (the emulator's request log), by
dashscope's legacy ``MultiModalConversation.call`` (the emulator's log) and by
its v2 client (respx). Method, path, the headers that matter and the parsed
JSON body must be equal. Local media is the one planned gap: the SDK uploads
it to OSS (faked here, nothing leaves the machine) and sends ``oss://`` with
``X-DashScope-OssResourceResolve: enable``; aiotongyi sends the file inline as
a base64 data URL, which is decoded and compared byte for byte with the file.
"""

from __future__ import annotations

import base64
import dataclasses
import os
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dashscope
import pytest
from dashscope.common.error import InvalidInput

from aiotongyi import TongyiLLMClient
from aiotongyi.testing import DashScopeEmulator, Reply

from . import _sdk
from ._differences import use

# The request-parity module's capture and comparison, so both tables judge alike.
from .test_request_parity import (
    WEATHER_TOOL,
    Captured,
    _assert_same_request,
    _from_emulator,
    _from_httpx,
)


def sdk_bug(raises: type[BaseException]) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, raises=raises, reason="dashscope 2.0.2 has this bug")


OSS_HEADER = "x-dashscope-ossresourceresolve"
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(32))
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(32, 64))
MP4 = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00" + bytes(range(64, 96))
MP3 = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(range(96, 128))
FILES = {
    "cat.png": PNG,
    "dog.jpg": JPEG,
    "frame1.jpg": JPEG + b"1",
    "frame2.jpg": JPEG + b"2",
    "frame3.jpg": JPEG + b"3",
    "clip.mp4": MP4,
    "voice.mp3": MP3,
    "猫 photo.png": PNG + b"cjk",  # file:// URLs percent-encode both
}
# What each suffix must be sent as; mimetypes could say otherwise on a strange box.
MIME = {".png": "image/png", ".jpg": "image/jpeg", ".mp4": "video/mp4", ".mp3": "audio/mpeg"}
CAT = "https://example.com/cat.png"
DOG = "https://example.com/dog.jpg"


@dataclass(frozen=True)
class Media:
    """The case files, on disk under ``root``."""

    root: Path

    def path(self, name: str) -> Path:
        return self.root / name

    def local(self, name: str) -> str:
        return os.fspath(self.root / name)

    def uri(self, name: str) -> str:
        return (self.root / name).as_uri()


Messages = list[dict[str, Any]]


@dataclass(frozen=True)
class MMCase:
    """One multimodal call in aiotongyi's terms; ``local`` media are inlined/uploaded."""

    id: str
    build: Callable[[Media], Messages]
    model: str = "qwen-vl-max"
    local: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)
    legacy: bool = True  # MultiModalConversation.call sends it as the native wire wants
    ours: Mapping[str, Any] = field(default_factory=dict)  # aiotongyi-only keywords


def user(*parts: dict[str, Any]) -> Messages:
    return [{"role": "user", "content": list(parts)}]


CASES = [
    MMCase("image-url", lambda m: user({"image": CAT}, {"text": "What is this?"})),
    MMCase("image-data-url", lambda m: user({"image": _data_url(PNG)}, {"text": "描述"})),
    MMCase(
        "image-local-path", lambda m: user({"image": m.local("cat.png")}, {"text": "?"}), local=1
    ),
    MMCase("image-pathlib", lambda m: user({"image": m.path("dog.jpg")}, {"text": "?"}), local=1),
    MMCase("image-file-url", lambda m: user({"image": m.uri("cat.png")}, {"text": "?"}), local=1),
    MMCase(
        "image-file-url-percent-encoded",
        lambda m: user({"image": m.uri("猫 photo.png")}, {"text": "?"}),
        local=1,
    ),
    MMCase("image-bytes", lambda m: user({"image": PNG}, {"text": "What is this?"})),
    MMCase(
        "several-images",
        lambda m: user(
            {"image": CAT},
            {"image": m.local("dog.jpg")},
            {"image": m.uri("cat.png")},
            {"text": "Diff?"},
        ),
        local=2,
    ),
    MMCase(
        "image-pixel-hints",
        lambda m: user({"image": CAT, "min_pixels": 3136, "max_pixels": 1003520}, {"text": "?"}),
    ),
    MMCase(
        "video-frame-urls",
        lambda m: user({"video": [CAT, DOG, CAT]}, {"text": "What happens?"}),
    ),
    MMCase(
        "video-frames-local",
        lambda m: user(
            {"video": [m.local("frame1.jpg"), m.uri("frame2.jpg"), m.path("frame3.jpg"), DOG]},
            {"text": "What happens?"},
        ),
        local=3,
    ),
    MMCase("video-url", lambda m: user({"video": "https://example.com/clip.mp4"}, {"text": "?"})),
    MMCase("video-local", lambda m: user({"video": m.local("clip.mp4")}, {"text": "?"}), local=1),
    MMCase(
        "audio-url",
        lambda m: user({"audio": "https://example.com/a.mp3"}, {"text": "转写"}),
        model="qwen-audio-turbo",
    ),
    MMCase(
        "audio-local",
        lambda m: user({"audio": m.local("voice.mp3")}, {"text": "转写"}),
        model="qwen2-audio-instruct",
        local=1,
    ),
    MMCase(
        "audio-file-url",
        lambda m: user({"audio": m.uri("voice.mp3")}, {"text": "转写"}),
        model="qwen-audio-turbo",
        local=1,
    ),
    MMCase(
        "multi-turn-images",
        lambda m: [
            *user({"image": CAT}, {"text": "这是什么？"}),
            {"role": "assistant", "content": [{"text": "一只猫。"}]},
            *user({"image": m.local("dog.jpg")}, {"text": "这个呢？"}),
            {"role": "assistant", "content": "一只狗。"},
            *user({"text": "哪个更可爱？"}),
        ],
        local=1,
    ),
    MMCase(
        "system-prompt-image",
        lambda m: [
            {"role": "system", "content": "You describe images in one sentence."},
            *user({"image": m.uri("cat.png")}, {"text": "Describe."}),
        ],
        local=1,
    ),
    MMCase(
        "system-parts-image",
        lambda m: [
            {"role": "system", "content": [{"text": "You are a careful annotator."}]},
            *user({"text": "Count the animals."}, {"image": CAT}, {"image": DOG}),
        ],
    ),
    MMCase(
        "image-with-parameters",
        lambda m: user({"image": m.local("cat.png")}, {"text": "JSON please"}),
        local=1,
        params={"temperature": 0.2, "top_p": 0.8, "max_tokens": 64, "seed": 7, "stop": ["END"]},
    ),
    MMCase(
        "image-with-tools",
        lambda m: user({"image": CAT}, {"text": "Weather where this was taken?"}),
        params={"tools": [WEATHER_TOOL]},
    ),
    MMCase("vl-text-only", lambda m: [{"role": "user", "content": "Hello, VL."}]),
    MMCase("vl-text-parts-only", lambda m: user({"text": "Hello"}, {"text": "again"})),
    MMCase(
        "qvq-image",
        lambda m: user({"image": CAT}, {"text": "Think step by step."}),
        model="qvq-max",
    ),
    MMCase(
        "omni-text-only",
        lambda m: [{"role": "user", "content": "你好"}],
        model="qwen-omni-turbo",
        ours={"endpoint": "multimodal"},  # use("omni-refused"): refused without it
    ),
    MMCase(
        "omni-audio-image",
        lambda m: user({"audio": m.local("voice.mp3")}, {"image": CAT}, {"text": "?"}),
        model="qwen2.5-omni-7b",
        local=1,
        ours={"endpoint": "multimodal"},
    ),
    MMCase(
        "openai-style-parts",
        lambda m: user(
            {"type": "image_url", "image_url": {"url": CAT}}, {"type": "text", "text": "What?"}
        ),
        legacy=False,  # legacy forwards these verbatim (see test_openai_style_parts_legacy)
    ),
]


def _data_url(data: bytes) -> str:
    assert data.startswith(PNG[:8])
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _for_sdk(value: object) -> Any:
    """The same messages with the str the SDK needs where aiotongyi takes bytes or Path."""
    if isinstance(value, bytes):
        use("media-bytes-and-paths")
        return _data_url(value)
    if isinstance(value, Path):
        use("media-bytes-and-paths")
        return os.fspath(value)
    if isinstance(value, dict):
        return {k: _for_sdk(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_for_sdk(v) for v in value]
    return value


def _has_media(messages: Messages) -> bool:
    return any(
        isinstance(part, dict)
        and bool({"image", "video", "audio"} & part.keys() or part.get("type", "text") != "text")
        for message in messages
        if isinstance(message.get("content"), list)
        for part in message["content"]
    )


@pytest.fixture
def media(tmp_path: Path) -> Media:
    root = tmp_path / "media"
    root.mkdir()
    for name, data in FILES.items():
        (root / name).write_bytes(data)
    return Media(root)


@pytest.fixture
def uploads() -> Iterator[list[str]]:
    with _sdk.fake_oss_uploads() as uploaded:
        yield uploaded


@pytest.fixture
async def client(dashscope_emulator: DashScopeEmulator) -> AsyncIterator[TongyiLLMClient]:
    async with TongyiLLMClient(
        model="qwen-plus", api_key=_sdk.SDK_KEY, base_url=dashscope_emulator.base_url, max_retries=0
    ) as ours:
        yield ours


async def _ours_capture(
    client: TongyiLLMClient, emu: DashScopeEmulator, c: MMCase, media: Media
) -> Captured:
    if c.ours:
        use("omni-refused")
    # A scripted answer: the emulator would otherwise answer a request with tools
    # by a tool call, and only the request matters here.
    emu.enqueue(Reply(text=["o", "k"]))
    out = await client.generate(c.build(media), model=c.model, **c.params, **c.ours)
    assert out.finish_reason == "stop"
    return _from_emulator(emu)


def _legacy_kwargs(c: MMCase, media: Media) -> dict[str, Any]:
    use("always-message-incremental")
    return {
        "model": c.model,
        "messages": _for_sdk(c.build(media)),
        "api_key": _sdk.SDK_KEY,
        "stream": True,
        "result_format": "message",
        "incremental_output": True,
        **c.params,
    }


def _legacy_capture(emu: DashScopeEmulator, c: MMCase, media: Media) -> Captured:
    with _sdk.legacy_base_url(emu.base_url):
        responses = list(_sdk.legacy_multimodal_call(**_legacy_kwargs(c, media)))
    assert responses[-1].status_code == 200
    return _from_emulator(emu)


def _v2_capture(sdk_client: dashscope.Client, c: MMCase, media: Media) -> Captured:
    messages = _for_sdk(c.build(media))
    # chat.completions sends text-only calls to the text path whatever the model
    # (the "vl-model-path" difference); multimodal.chat is v2's way to say "media model".
    chat = sdk_client.chat.completions if _has_media(messages) else sdk_client.multimodal.chat
    t = _sdk.load_plain()
    with _sdk.sdk_router(_sdk.respond(t.body, headers=t.response_headers())) as route:
        chat.create(model=c.model, messages=messages, stream=True, **c.params).get_final_message()
    return _from_httpx(route.calls.last.request)


def _reconcile(ours: object, theirs: object, media: Media, inlined: list[str]) -> object:
    """``ours`` with each data URL that stands where the SDK sent an upload's
    ``oss://`` URL checked against that file and replaced by the SDK's URL."""
    if (
        isinstance(ours, str)
        and isinstance(theirs, str)
        and theirs.startswith(_sdk.FAKE_OSS)
        and ours.startswith("data:")
    ):
        name = theirs.removeprefix(_sdk.FAKE_OSS)
        head, _, payload = ours.partition(",")
        assert head == f"data:{MIME[Path(name).suffix]};base64", (name, head)
        assert base64.b64decode(payload, validate=True) == media.path(name).read_bytes(), name
        inlined.append(name)
        return theirs
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return {k: _reconcile(v, theirs.get(k), media, inlined) for k, v in ours.items()}
    if isinstance(ours, list) and isinstance(theirs, list) and len(ours) == len(theirs):
        return [_reconcile(a, b, media, inlined) for a, b in zip(ours, theirs, strict=True)]
    return ours


def _assert_same(
    mine: Captured,
    theirs: Captured,
    c: MMCase,
    media: Media,
    uploaded: list[str],
    *,
    compare_accept: bool,
) -> None:
    inlined: list[str] = []
    body = _reconcile(mine.body, theirs.body, media, inlined)
    assert len(inlined) == c.local
    assert sorted(inlined) == sorted(os.path.basename(p) for p in uploaded)
    assert all(Path(p).resolve().parent == media.root.resolve() for p in uploaded)
    assert OSS_HEADER not in mine.headers
    if c.local:
        use("local-media-inline")
        assert theirs.headers.get(OSS_HEADER) == "enable"
    else:
        assert OSS_HEADER not in theirs.headers
    theirs = dataclasses.replace(
        theirs, headers={k: v for k, v in theirs.headers.items() if k != OSS_HEADER}
    )
    _assert_same_request(
        dataclasses.replace(mine, body=body), theirs, compare_accept=compare_accept
    )


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 20
    assert len({c.id for c in CASES}) == len(CASES)
    assert sum(c.local > 0 for c in CASES) >= 10


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
async def test_same_multimodal_request_as_the_sdk(
    sdk_client: dashscope.Client,
    client: TongyiLLMClient,
    dashscope_emulator: DashScopeEmulator,
    media: Media,
    uploads: list[str],
    c: MMCase,
) -> None:
    emu = dashscope_emulator
    mine = await _ours_capture(client, emu, c, media)
    assert mine.url.endswith("/api/v1" + _sdk.MULTIMODAL_PATH)
    _assert_same(mine, _v2_capture(sdk_client, c, media), c, media, uploads, compare_accept=False)
    if not c.legacy:
        return
    uploads.clear()
    theirs = _legacy_capture(emu, c, media)
    use("body-serialisation")
    _assert_same(mine, theirs, c, media, uploads, compare_accept=True)


async def test_async_sdks_send_the_same(
    client: TongyiLLMClient,
    dashscope_emulator: DashScopeEmulator,
    media: Media,
    uploads: list[str],
) -> None:
    """AsyncClient and AioMultiModalConversation upload (off-loop) and send as the sync APIs."""
    c = next(c for c in CASES if c.id == "several-images")
    emu = dashscope_emulator
    mine = await _ours_capture(client, emu, c, media)
    t = _sdk.load_plain()
    with _sdk.sdk_router(_sdk.respond(t.body, headers=t.response_headers())) as route:
        sdk = _sdk.v2_async_client()
        try:
            stream = await sdk.chat.completions.create(
                model=c.model, messages=_for_sdk(c.build(media)), stream=True
            )
            await stream.get_final_message()
        finally:
            await sdk.aclose()
    v2 = _from_httpx(route.calls.last.request)
    _assert_same(mine, v2, c, media, uploads, compare_accept=False)
    uploads.clear()
    with _sdk.legacy_base_url(emu.base_url):
        try:
            responses = [
                r async for r in await _sdk.legacy_multimodal_acall(**_legacy_kwargs(c, media))
            ]
        finally:
            await _sdk.close_legacy_aio_session()
    assert responses[-1].status_code == 200
    _assert_same(mine, _from_emulator(emu), c, media, uploads, compare_accept=True)


# ---- what only one side accepts --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "legacy_error"),
    [(PNG, TypeError), (Path("cat.png"), AttributeError)],
    ids=["bytes", "pathlib"],
)
def test_sdk_needs_str_media(
    sdk_client: dashscope.Client,
    dashscope_emulator: DashScopeEmulator,
    media: Media,
    uploads: list[str],
    monkeypatch: pytest.MonkeyPatch,
    value: object,
    legacy_error: type[Exception],
) -> None:
    """The other half of ``media-bytes-and-paths``: neither SDK API takes them."""
    use("media-bytes-and-paths")
    monkeypatch.chdir(media.root)
    messages: Any = user({"image": value}, {"text": "?"})
    with _sdk.legacy_base_url(dashscope_emulator.base_url), pytest.raises(legacy_error):
        list(_sdk.legacy_multimodal_call(model="qwen-vl-max", messages=messages, stream=True))
    with pytest.raises(ValueError, match="valid string"):
        sdk_client.chat.completions.create(model="qwen-vl-max", messages=messages, stream=True)
    assert dashscope_emulator.requests == []
    assert uploads == []


async def test_relative_path_is_read_from_cwd(
    sdk_client: dashscope.Client,
    client: TongyiLLMClient,
    dashscope_emulator: DashScopeEmulator,
    media: Media,
    uploads: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(media.root)
    c = MMCase("relative", lambda m: user({"image": "cat.png"}, {"text": "?"}), local=1)
    mine = await _ours_capture(client, dashscope_emulator, c, media)
    _assert_same(mine, _v2_capture(sdk_client, c, media), c, media, uploads, compare_accept=False)


async def test_oss_url_passes_through(
    sdk_client: dashscope.Client,
    client: TongyiLLMClient,
    dashscope_emulator: DashScopeEmulator,
    media: Media,
    uploads: list[str],
) -> None:
    """An ``oss://`` URL (an earlier upload) is sent unchanged by both, with no new upload."""
    c = MMCase("oss", lambda m: user({"image": "oss://bucket/dir/cat.png"}, {"text": "?"}))
    mine = await _ours_capture(client, dashscope_emulator, c, media)
    theirs = _v2_capture(sdk_client, c, media)
    assert mine.body == theirs.body
    assert uploads == []
    assert theirs.headers.get(OSS_HEADER) == "enable"


async def test_oss_url_asks_the_service_to_resolve_it(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, media: Media
) -> None:
    """PROTOCOL.md: ``oss://`` goes "together with the OSS header"; both SDK APIs send it."""
    c = MMCase("oss", lambda m: user({"image": "oss://bucket/dir/cat.png"}, {"text": "?"}))
    mine = await _ours_capture(client, dashscope_emulator, c, media)
    assert mine.headers.get(OSS_HEADER) == "enable"


@pytest.mark.parametrize("uri", ["file://cat.png", "file://sub/cat.png"])
async def test_relative_file_url(
    sdk_client: dashscope.Client,
    client: TongyiLLMClient,
    dashscope_emulator: DashScopeEmulator,
    media: Media,
    uploads: list[str],
    monkeypatch: pytest.MonkeyPatch,
    uri: str,
) -> None:
    """``f"file://{local_path}"`` with a relative path (DashScope's own examples): the
    host part is part of the path, for the SDK and for aiotongyi (found here, fixed)."""
    (media.root / "sub").mkdir()
    (media.root / "sub" / "cat.png").write_bytes(PNG)
    monkeypatch.chdir(media.root)
    c = MMCase("relative-uri", lambda m: user({"image": uri}, {"text": "?"}), local=1)
    theirs = _v2_capture(sdk_client, c, media)
    assert theirs.headers.get(OSS_HEADER) == "enable"
    mine = await _ours_capture(client, dashscope_emulator, c, media)
    image = mine.body["input"]["messages"][0]["content"][0]["image"]  # type: ignore[index]
    assert image == _data_url(PNG)


# ---- the legacy API's own ways -------------------------------------------------------------


def test_openai_style_parts_legacy(dashscope_emulator: DashScopeEmulator, media: Media) -> None:
    """Legacy forwards OpenAI-style parts verbatim; aiotongyi translates them as v2 does."""
    use("openai-style-parts")
    c = next(c for c in CASES if c.id == "openai-style-parts")
    sent = _legacy_capture(dashscope_emulator, c, media).body
    content = sent["input"]["messages"][0]["content"]  # type: ignore[index]
    assert content == c.build(media)[0]["content"]


@sdk_bug(AssertionError)
def test_legacy_text_part_naming_a_file(
    dashscope_emulator: DashScopeEmulator,
    media: Media,
    uploads: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Legacy runs ``text`` parts through the uploader too: a prompt that happens to be
    an existing file name is uploaded and replaced by an ``oss://`` URL. **Correct:**
    text is text (v2 and aiotongyi leave it alone)."""
    monkeypatch.chdir(media.root)
    c = MMCase("text-file", lambda m: user({"image": CAT}, {"text": "cat.png"}))
    sent = _legacy_capture(dashscope_emulator, c, media).body
    assert sent["input"]["messages"][0]["content"][1] == {"text": "cat.png"}  # type: ignore[index]


@sdk_bug(InvalidInput)
async def test_legacy_file_url_with_plus(
    client: TongyiLLMClient,
    dashscope_emulator: DashScopeEmulator,
    media: Media,
    uploads: list[str],
) -> None:
    """``file://`` paths are decoded with ``unquote_plus``: ``a+b.png`` becomes
    ``a b.png`` and the call fails with InvalidInput. **Correct:** ``+`` is literal in
    a URL path (aiotongyi reads the file)."""
    media.path("a+b.png").write_bytes(PNG)
    uri = "file://" + media.local("a+b.png")  # DashScope's docs build them this way
    c = MMCase("plus", lambda m: user({"image": uri}, {"text": "?"}), local=1)
    mine = await _ours_capture(client, dashscope_emulator, c, media)
    assert mine.body["input"]["messages"][0]["content"][0]["image"] == _data_url(PNG)  # type: ignore[index]
    _legacy_capture(dashscope_emulator, c, media)
    assert [os.path.basename(p) for p in uploads] == ["a+b.png"]
