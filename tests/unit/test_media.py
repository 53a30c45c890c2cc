"""Multimodal parts: URLs pass, local media is inlined, bad parts are refused."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from aiotongyi._config import MULTIMODAL_PATH, TEXT_PATH
from aiotongyi._media import MAX_INLINE_BYTES, LocalFile, normalize_parts
from aiotongyi._request import prepare_request

PNG = (Path(__file__).parents[2] / "examples" / "assets" / "red_square.png").read_bytes()


def sent(messages: Any, **params: Any) -> tuple[str, dict[str, Any]]:
    prepared = prepare_request(messages, params, default_model="qwen-plus", model_alias=None)
    return prepared.path, json.loads(prepared.body)


def user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


def test_urls_pass_through_and_route_to_the_multimodal_endpoint() -> None:
    path, body = sent(user({"image": "https://example.com/a.png"}, {"text": "what is it?"}))
    assert path == MULTIMODAL_PATH
    assert body["input"]["messages"][0]["content"] == [
        {"image": "https://example.com/a.png"},
        {"text": "what is it?"},
    ]


@pytest.mark.parametrize("as_path", [str, Path, lambda p: f"file://{p}"])
def test_local_files_become_data_urls(tmp_path: Path, as_path: Any) -> None:
    image = tmp_path / "a.png"
    image.write_bytes(PNG)
    _, body = sent(user({"image": as_path(image)}, {"text": "?"}))
    url = body["input"]["messages"][0]["content"][0]["image"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == PNG


def test_bytes_are_sniffed() -> None:
    (part,) = normalize_parts("c", [{"image": PNG}])
    assert part["image"].startswith("data:image/png;base64,")


def test_unknown_bytes_need_a_type() -> None:
    with pytest.raises(ValueError, match="cannot tell the type"):
        normalize_parts("c", [{"image": b"\x00\x01\x02"}])


def test_missing_file_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="neither"):
        normalize_parts("c", [{"image": "/no/such/file.png"}])


def test_oversized_media_is_left_for_upload(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(PNG + b"\x00" * MAX_INLINE_BYTES)
    [part] = normalize_parts("c", [{"image": big}])
    assert part == {
        "image": LocalFile(
            name="big.png", mime="image/png", size=len(PNG) + MAX_INLINE_BYTES, path=big.resolve()
        )
    }


def test_video_frames_and_audio(tmp_path: Path) -> None:
    wav = tmp_path / "a.wav"
    wav.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt ")
    parts = normalize_parts(
        "c", [{"video": ["https://x/1.jpg", PNG]}, {"audio": str(wav)}, {"text": "?"}]
    )
    assert parts[0]["video"][0] == "https://x/1.jpg"
    assert parts[0]["video"][1].startswith("data:image/png;base64,")
    assert parts[1]["audio"].startswith("data:audio/")


def test_openai_style_parts_are_translated() -> None:
    parts = normalize_parts(
        "c",
        [
            {"type": "text", "text": "hi"},
            {"type": "image_url", "image_url": {"url": "https://x/a.png"}},
        ],
    )
    assert parts == [{"text": "hi"}, {"image": "https://x/a.png"}]


def test_unknown_part_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported part type"):
        normalize_parts("c", [{"type": "hologram"}])


def test_text_only_parts_stay_on_the_text_endpoint_unless_told() -> None:
    assert sent(user({"text": "hi"}))[0] == TEXT_PATH
    assert sent(user({"text": "hi"}), endpoint="multimodal")[0] == MULTIMODAL_PATH
    assert sent("hi", model="qwen-vl-max", endpoint="text")[0] == TEXT_PATH
    with pytest.raises(ValueError, match="endpoint"):
        sent("hi", endpoint="vision")


def test_file_urls_with_the_path_in_the_host_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cat.png").write_bytes(PNG)
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "dog.png").write_bytes(PNG)
    for url in ("file://cat.png", "file://img/dog.png", f"file://localhost{tmp_path}/cat.png"):
        (part,) = normalize_parts("c", [{"image": url}])
        assert part["image"].startswith("data:image/png;base64,"), url


def test_oss_urls_ask_the_service_to_resolve_them() -> None:
    prepared = prepare_request(
        user({"image": "oss://bucket/x.png"}, {"text": "?"}),
        {},
        default_model="qwen-vl-max",
        model_alias=None,
    )
    assert prepared.headers == {"X-DashScope-OssResourceResolve": "enable"}
    plain = prepare_request(
        user({"image": "https://x/a.png"}), {}, default_model="m", model_alias=None
    )
    assert plain.headers == {}


def test_openai_style_parts_keep_cache_and_pixel_hints() -> None:
    parts = normalize_parts(
        "m",
        [
            {"type": "text", "text": "long doc", "cache_control": {"type": "ephemeral"}},
            {
                "type": "image_url",
                "image_url": {"url": "https://x/a.png"},
                "min_pixels": 3136,
                "max_pixels": 1003520,
                "cache_control": {"type": "ephemeral"},
            },
            {"type": "video_url", "video_url": {"url": "https://x/v.mp4"}, "fps": 2},
        ],
    )
    assert parts == [
        {"text": "long doc", "cache_control": {"type": "ephemeral"}},
        {
            "image": "https://x/a.png",
            "min_pixels": 3136,
            "max_pixels": 1003520,
            "cache_control": {"type": "ephemeral"},
        },
        {"video": "https://x/v.mp4", "fps": 2},
    ]


def test_native_parts_keep_their_hints() -> None:
    part = {"image": "https://x/a.png", "max_pixels": 10, "cache_control": {"type": "ephemeral"}}
    assert normalize_parts("m", [part]) == [part]
