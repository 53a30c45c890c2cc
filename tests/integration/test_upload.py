"""Local media through DashScope's temporary storage, against the emulator's upload endpoints."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from aiotongyi import (
    APIConnectionError,
    AuthenticationError,
    ModelRequest,
    ServerError,
    TongyiLLMClient,
)
from aiotongyi._media import MAX_INLINE_BYTES
from aiotongyi.testing import DashScopeEmulator, RecordedRequest, UploadFault

from ..conftest import eventually, make_client

PNG = (Path(__file__).parents[2] / "examples" / "assets" / "red_square.png").read_bytes()
MP4_HEAD = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00"
CHAT = "/api/v1/services/aigc/multimodal-generation/generation"
OSS_HEADER = "x-dashscope-ossresourceresolve"


def user(*parts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": list(parts)}]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def big_video(path: Path, size: int) -> Path:
    """A sparse file with an MP4 header: ``size`` bytes on disk in no time."""
    with path.open("wb") as file:
        file.write(MP4_HEAD)
        file.truncate(size)
    return path


def rewrite(path: Path, data: bytes) -> None:
    """New content with another mtime (a same-second rewrite must not hide the change)."""
    path.write_bytes(data)
    os.utime(path, ns=(1, 1))


def chat_requests(emu: DashScopeEmulator) -> list[RecordedRequest]:
    return [r for r in emu.requests if r.path == CHAT]


def media_of(request: RecordedRequest) -> list[Any]:
    assert isinstance(request.json, dict)
    return [
        part.get("image", part.get("video", part.get("audio")))
        for message in request.json["input"]["messages"]
        if isinstance(message["content"], list)
        for part in message["content"]
        if "text" not in part
    ]


@pytest.fixture
def png(tmp_path: Path) -> Path:
    path = tmp_path / "square.png"
    path.write_bytes(PNG)
    return path


async def test_a_file_above_the_inline_limit_is_uploaded_and_sent_as_oss(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, tmp_path: Path
) -> None:
    emu = dashscope_emulator
    video = big_video(tmp_path / "clip.mp4", MAX_INLINE_BYTES + 1)
    out = await client.generate(user({"video": video}, {"text": "?"}), model="qwen-vl-max")
    assert out.finish_reason == "stop"
    policy, post, chat = emu.requests
    assert (policy.method, policy.path) == ("GET", "/api/v1/uploads")
    assert policy.query == {"action": "getPolicy", "model": "qwen-vl-max"}
    assert policy.headers["authorization"] == f"Bearer {emu.api_key}"
    assert (post.method, post.path) == ("POST", "/oss")
    [stored] = emu.uploads.uploads
    assert stored.size == video.stat().st_size
    assert stored.sha256 == sha256(video)
    assert stored.filename == "clip.mp4"
    assert stored.key.endswith("/clip.mp4")
    assert stored.model == "qwen-vl-max"
    assert dict(stored.fields)["x-oss-content-type"] == "video/mp4"
    assert media_of(chat) == [stored.url]
    assert chat.headers[OSS_HEADER] == "enable"


async def test_the_api_key_never_goes_to_the_storage_host(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, png: Path
) -> None:
    await client.generate(user({"image": png}, {"text": "?"}), upload=True)
    [stored] = dashscope_emulator.uploads.uploads
    assert "authorization" not in stored.headers
    assert not any(dashscope_emulator.api_key in v for v in stored.headers.values())
    assert not any(dashscope_emulator.api_key in v for _, v in stored.fields)


async def test_upload_true_uploads_small_files_bytes_and_file_urls(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, png: Path, tmp_path: Path
) -> None:
    emu = dashscope_emulator
    other = tmp_path / "other.jpg"
    other.write_bytes(b"\xff\xd8\xff\xe0" + b"jpeg" * 10)
    await client.generate(
        user(
            {"image": png.as_uri()},
            {"image": PNG + b"bytes"},
            {"video": [str(other), "https://example.com/f.jpg"]},
            {"text": "?"},
        ),
        model="qwen-vl-max",
        upload=True,
    )
    stored = emu.uploads.uploads
    assert [u.filename for u in stored] == ["square.png", "image.png", "other.jpg"]
    assert [u.size for u in stored] == [len(PNG), len(PNG) + 5, other.stat().st_size]
    # One policy serves a call's files while it is fresh, as in the official SDK.
    assert emu.uploads.policy_requests == 1
    [chat] = chat_requests(emu)
    assert media_of(chat) == [
        stored[0].url,
        stored[1].url,
        [stored[2].url, "https://example.com/f.jpg"],
    ]


async def test_upload_on_the_model_request(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, png: Path
) -> None:
    await client.generate(ModelRequest(messages=user({"image": png}), upload=True))
    assert len(dashscope_emulator.uploads.uploads) == 1
    await client.generate(ModelRequest(messages=user({"image": png}), upload=True), upload=False)
    [*_, chat] = chat_requests(dashscope_emulator)
    assert media_of(chat)[0].startswith("data:image/png;base64,")
    assert OSS_HEADER not in chat.headers


async def test_small_files_stay_inline_without_upload(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, png: Path
) -> None:
    await client.generate(user({"image": png}, {"text": "?"}))
    [chat] = dashscope_emulator.requests
    assert media_of(chat)[0].startswith("data:image/png;base64,")
    assert dashscope_emulator.uploads.policy_requests == 0


async def test_the_same_file_twice_in_a_call_is_uploaded_once(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, png: Path
) -> None:
    await client.generate(user({"image": png}, {"image": str(png)}), upload=True)
    [stored] = dashscope_emulator.uploads.uploads
    [chat] = chat_requests(dashscope_emulator)
    assert media_of(chat) == [stored.url, stored.url]


async def test_two_files_with_one_name_get_two_keys(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, tmp_path: Path
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"
    first.write_bytes(PNG)
    second.write_bytes(PNG + b"different")
    # x-oss-forbid-overwrite: the second x.png needs another upload_dir.
    await client.generate(user({"image": first}, {"image": second}), upload=True)
    a, b = dashscope_emulator.uploads.uploads
    assert a.key != b.key
    assert a.filename == b.filename == "x.png"
    assert dashscope_emulator.uploads.policy_requests == 2


async def test_uploads_are_cached_by_content_and_model(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, png: Path, tmp_path: Path
) -> None:
    emu = dashscope_emulator
    copy = tmp_path / "copy.png"
    copy.write_bytes(PNG)
    await client.generate(user({"image": png}), model="qwen-vl-max", upload=True)
    await client.generate(user({"image": copy}), model="qwen-vl-max", upload=True)
    await client.generate(user({"image": PNG}), model="qwen-vl-max", upload=True)
    [stored] = emu.uploads.uploads
    assert [media_of(c) for c in chat_requests(emu)] == [[stored.url]] * 3
    assert all(c.headers[OSS_HEADER] == "enable" for c in chat_requests(emu))
    # Temporary files are bound to a model: another model means another upload.
    await client.generate(user({"image": png}), model="qwen-vl-plus", upload=True)
    assert [u.model for u in emu.uploads.uploads] == ["qwen-vl-max", "qwen-vl-plus"]
    # New content under the same name is uploaded again.
    rewrite(png, PNG + b"edited")
    await client.generate(user({"image": png}), model="qwen-vl-max", upload=True)
    assert [u.size for u in emu.uploads.uploads][-1] == len(PNG) + 6


async def test_the_cache_belongs_to_the_client_and_its_key(
    dashscope_emulator: DashScopeEmulator, png: Path
) -> None:
    emu = dashscope_emulator
    for key in ("sk-one", "sk-one", "sk-two"):
        async with make_client(emu, api_key=key) as client:
            await client.generate(user({"image": png}), upload=True)
    assert len(emu.uploads.uploads) == 3
    async with make_client(emu) as client:
        await client.generate(user({"image": png}), upload=True)
        await client.generate(user({"image": png}), upload=True)
    assert len(emu.uploads.uploads) == 4


def test_the_sync_api_uploads_too(
    sync_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, png: Path
) -> None:
    outputs = list(sync_client.sync_generate_stream(user({"image": png}), upload=True))
    assert outputs[-1].finish_reason == "stop"
    [stored] = dashscope_emulator.uploads.uploads
    [chat] = chat_requests(dashscope_emulator)
    assert media_of(chat) == [stored.url]
    sync_client.sync_generate(user({"image": png}), upload=True)
    assert len(dashscope_emulator.uploads.uploads) == 1


@pytest.mark.parametrize(
    "fault",
    [
        UploadFault("policy", status=500),
        UploadFault(
            "policy", status=429, code="Throttling.RateQuota", message="Requests throttled"
        ),
        UploadFault("policy", disconnect=True),
        UploadFault("oss", status=503, code="ServiceUnavailable", message="Please reduce rate"),
        UploadFault("oss", disconnect=True),
    ],
    ids=["policy-500", "policy-429", "policy-drop", "oss-503", "oss-drop"],
)
async def test_a_failed_step_is_retried_with_a_new_policy(
    client: TongyiLLMClient,
    dashscope_emulator: DashScopeEmulator,
    tmp_path: Path,
    fault: UploadFault,
) -> None:
    emu = dashscope_emulator
    emu.uploads.fail(fault)
    video = big_video(tmp_path / "clip.mp4", 2 * 1024 * 1024)
    out = await client.generate(user({"video": video}), upload=True)
    assert out.finish_reason == "stop"
    [stored] = emu.uploads.uploads
    assert stored.sha256 == sha256(video)
    assert emu.uploads.policy_requests == 2  # the retry never reuses the first policy
    assert media_of(chat_requests(emu)[0]) == [stored.url]


async def test_an_oss_refusal_is_an_api_error_with_the_oss_code(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, png: Path
) -> None:
    emu = dashscope_emulator
    emu.uploads.fail(UploadFault("oss", status=403, code="AccessDenied", message="No access."))
    with pytest.raises(AuthenticationError) as info:
        await client.generate(user({"image": png}), upload=True)
    error = info.value
    assert (error.status_code, error.code) == (403, "AccessDenied")
    assert "square.png" in error.message and "No access." in error.message
    assert error.request_id  # OSS's RequestId
    assert emu.uploads.policy_requests == 1  # a refusal is not retried
    assert chat_requests(emu) == []


async def test_a_policy_refusal_keeps_the_dashscope_code(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, png: Path
) -> None:
    dashscope_emulator.uploads.fail(
        UploadFault("policy", status=401, code="InvalidApiKey", message="Invalid API-key.")
    )
    with pytest.raises(AuthenticationError) as info:
        await client.generate(user({"image": png}), upload=True)
    assert (info.value.code, info.value.status_code) == ("InvalidApiKey", 401)
    assert info.value.request_id
    assert dashscope_emulator.api_key not in repr(info.value) + str(info.value)


async def test_retries_stop_at_max_retries(
    dashscope_emulator: DashScopeEmulator, png: Path
) -> None:
    emu = dashscope_emulator
    emu.uploads.fail(*[UploadFault("oss", status=500)] * 3)
    async with make_client(emu, max_retries=1) as client:
        with pytest.raises(ServerError) as info:
            await client.generate(user({"image": png}), upload=True)
    assert info.value.code == "InternalError"
    assert emu.uploads.policy_requests == 2
    assert emu.uploads.uploads == []


async def test_a_dropped_connection_with_no_retries_is_a_connection_error(
    dashscope_emulator: DashScopeEmulator, tmp_path: Path
) -> None:
    emu = dashscope_emulator
    emu.uploads.fail(UploadFault("oss", disconnect=True))
    async with make_client(emu, max_retries=0) as client:
        with pytest.raises(APIConnectionError):
            await client.generate(
                user({"video": big_video(tmp_path / "v.mp4", 4 << 20)}), upload=True
            )


async def test_an_expired_policy_is_replaced(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, png: Path, tmp_path: Path
) -> None:
    emu = dashscope_emulator
    # A policy that is already too close to its expiry is never used to start a POST.
    emu.uploads.expire_in_seconds = 5
    try:
        second = tmp_path / "second.png"
        second.write_bytes(PNG + b"2")
        await client.generate(user({"image": png}, {"image": second}), upload=True)
    finally:
        emu.uploads.expire_in_seconds = 300
    assert len(emu.uploads.uploads) == 2
    assert emu.uploads.policy_requests == 2


async def test_oss_says_the_policy_expired_and_a_new_one_is_fetched(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, png: Path
) -> None:
    emu = dashscope_emulator
    emu.uploads.fail(
        UploadFault(
            "oss",
            status=403,
            code="AccessDenied",
            message="Invalid according to Policy: Policy expired.",
        )
    )
    await client.generate(user({"image": png}), upload=True)
    assert len(emu.uploads.uploads) == 1
    assert emu.uploads.policy_requests == 2


async def test_a_file_removed_before_the_upload_is_a_value_error(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, png: Path
) -> None:
    stream = client.generate_stream(user({"image": png}), upload=True)
    os.remove(png)
    with pytest.raises(ValueError, match=r"square\.png cannot be read"):
        async with stream:
            async for _ in stream:
                pass
    assert dashscope_emulator.requests == []


def open_paths() -> set[str]:
    def target(fd: str) -> str:
        try:
            return os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed meanwhile
            return ""

    return {target(fd) for fd in os.listdir("/proc/self/fd")}


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads /proc")
async def test_cancelling_mid_upload_closes_the_file(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, tmp_path: Path
) -> None:
    video = big_video(tmp_path / "cancel.mp4", 40 * 1024 * 1024)
    task = asyncio.create_task(client.generate(user({"video": video})))
    assert await eventually(lambda: dashscope_emulator.uploads.policy_requests == 1)
    await asyncio.sleep(0.01)  # into the form POST, most of the time
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await eventually(lambda: str(video) not in open_paths(), within=10)
    assert chat_requests(dashscope_emulator) == []


def test_upload_must_be_a_bool(sync_client: TongyiLLMClient) -> None:
    with pytest.raises(ValueError, match="upload must be True or False"):
        sync_client.sync_generate("hi", upload="yes")  # type: ignore[arg-type]


async def test_the_emulator_refuses_oss_without_the_resolve_header(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    import aiohttp

    body = {
        "model": "qwen-vl-max",
        "input": {"messages": user({"image": "oss://dir/x.png"})},
        "parameters": {},
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(
            dashscope_emulator.base_url + "/services/aigc/multimodal-generation/generation",
            json=body,
            headers={"Authorization": "Bearer k"},
        ) as response:
            assert response.status == 400
            assert (await response.json())["code"] == "InvalidParameter"


# -- memory ------------------------------------------------------------------------

_MEASURE = textwrap.dedent(
    """
    import asyncio, json, sys
    from aiotongyi import TongyiLLMClient

    def kib(field):
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise LookupError(field)

    async def main(base_url, key, path):
        async with TongyiLLMClient(api_key=key, base_url=base_url, max_retries=0) as client:
            await client.generate("warm up")  # imports, pool, TLS-free connection
            before = kib("VmRSS")
            out = await client.generate(
                [{"role": "user", "content": [{"video": path}, {"text": "?"}]}],
                model="qwen-vl-max",
            )
            assert out.finish_reason == "stop"
        print(json.dumps({"before": before, "peak": kib("VmHWM")}))

    asyncio.run(main(*sys.argv[1:]))
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_a_50_mb_video_is_uploaded_with_flat_memory(
    dashscope_emulator: DashScopeEmulator, tmp_path: Path
) -> None:
    emu = dashscope_emulator
    size = 50 * 1024 * 1024
    video = tmp_path / "big.mp4"
    with video.open("wb") as file:  # random bytes: nothing on the way can compress them
        file.write(MP4_HEAD)
        for _ in range(50):
            file.write(os.urandom(1024 * 1024))
        file.truncate(size)
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, emu.base_url, emu.api_key, str(video)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    growth_kib = figures["peak"] - figures["before"]
    [stored] = emu.uploads.uploads
    assert stored.size == size
    assert stored.sha256 == sha256(video)
    # The file is streamed, never held whole (measured: about 3 MiB of growth).
    assert growth_kib * 1024 < size / 5, figures
