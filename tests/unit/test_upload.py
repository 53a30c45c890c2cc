"""The pure side of uploads: placeholders in prepared requests, finishing them, the URL cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiotongyi._media import MAX_INLINE_BYTES, LocalFile, normalize_parts
from aiotongyi._request import PreparedRequest, finish_uploads, prepare_request
from aiotongyi._upload import URL_LIFETIME, UploadCache

PNG = (Path(__file__).parents[2] / "examples" / "assets" / "red_square.png").read_bytes()


def prepare(messages: Any, **params: Any) -> PreparedRequest:
    return prepare_request(messages, params, default_model="qwen-vl-max", model_alias=None)


def user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


def test_without_local_media_nothing_is_pending() -> None:
    prepared = prepare(user({"image": "https://x/a.png"}, {"text": "?"}), upload=True)
    assert prepared.uploads == ()
    assert prepared.document is None
    assert json.loads(prepared.body)["input"]["messages"][0]["content"][0] == {
        "image": "https://x/a.png"
    }
    assert finish_uploads(prepared, {}) is prepared


def test_pending_uploads_hold_the_body_back(tmp_path: Path) -> None:
    png = tmp_path / "a.png"
    png.write_bytes(PNG)
    prepared = prepare(user({"image": png}, {"image": str(png)}, {"text": "?"}), upload=True)
    [file] = prepared.uploads  # the same file once
    assert file == LocalFile("a.png", "image/png", len(PNG), path=png.resolve())
    assert prepared.body == b""  # never sent by mistake with placeholders in it
    assert "X-DashScope-OssResourceResolve" not in prepared.headers
    assert prepared.path.endswith("multimodal-generation/generation")

    done = finish_uploads(prepared, {file: "oss://dir/a.png"})
    assert done.uploads == () and done.document is None
    assert done.headers == {"X-DashScope-OssResourceResolve": "enable"}
    content = json.loads(done.body)["input"]["messages"][0]["content"]
    assert content == [{"image": "oss://dir/a.png"}, {"image": "oss://dir/a.png"}, {"text": "?"}]


def test_finishing_needs_every_url() -> None:
    prepared = prepare(user({"image": PNG}), upload=True)
    with pytest.raises(KeyError, match=r"image\.png"):
        finish_uploads(prepared, {})


def test_bytes_above_the_limit_are_uploaded_not_refused() -> None:
    data = PNG + b"\x00" * MAX_INLINE_BYTES
    [part] = normalize_parts("c", [{"image": data}])
    assert part["image"] == LocalFile("image.png", "image/png", len(data), data=data)
    assert "data=" not in repr(part["image"])  # a repr never dumps megabytes


def test_unknown_types_need_no_mime_when_uploaded(tmp_path: Path) -> None:
    odd = tmp_path / "blob"
    odd.write_bytes(b"\x01\x02\x03")
    audio, video = normalize_parts("c", [{"audio": odd}, {"video": b"\x01\x02"}], upload=True)
    assert audio["audio"].mime == "application/octet-stream"
    assert video["video"].name == "video.bin"


def test_a_bad_body_is_still_refused_at_call_time() -> None:
    with pytest.raises(ValueError, match="cannot be encoded"):
        prepare(user({"image": PNG}), upload=True, extra_body={"x": object()})


@given(
    urls=st.lists(
        st.text(min_size=1, max_size=30).map(lambda s: "oss://" + s), min_size=1, max_size=5
    )
)
def test_finish_puts_each_url_where_its_file_was(urls: list[str]) -> None:
    files = [PNG + bytes([i]) for i in range(len(urls))]
    prepared = prepare(user(*({"image": f} for f in files), {"text": "t"}), upload=True)
    assert len(prepared.uploads) == len(urls)
    done = finish_uploads(prepared, dict(zip(prepared.uploads, urls, strict=True)))
    content = json.loads(done.body)["input"]["messages"][0]["content"]
    assert [part["image"] for part in content[:-1]] == urls
    assert content[-1] == {"text": "t"}


def test_cached_urls_expire_before_the_file_does() -> None:
    now = [1000.0]
    cache = UploadCache(clock=lambda: now[0])
    key = ("account", "qwen-vl-max", "abc")
    cache.put(key, "oss://x")
    assert cache.get(key) == "oss://x"
    assert cache.get(("account", "qwen-vl-plus", "abc")) is None
    now[0] += cache.lifetime - 1
    assert cache.get(key) == "oss://x"
    now[0] += 1
    assert cache.get(key) is None
    assert cache.lifetime < URL_LIFETIME == 48 * 3600


def test_the_cache_is_bounded() -> None:
    cache = UploadCache(max_entries=2)
    for i in range(3):
        cache.put(("a", "m", str(i)), f"oss://{i}")
    assert cache.get(("a", "m", "0")) is None
    assert cache.get(("a", "m", "2")) == "oss://2"
