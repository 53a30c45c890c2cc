"""The emulator's temporary storage checks a form upload the way OSS does."""

from __future__ import annotations

import hashlib
from typing import Any

import aiohttp
import pytest

from aiotongyi.testing import DashScopeEmulator, UploadFault

Form = list[tuple[str, str]]


async def policy(
    session: aiohttp.ClientSession, emu: DashScopeEmulator, **query: str
) -> tuple[int, Any]:
    params = {"action": "getPolicy", "model": "qwen-vl-max", **query}
    async with session.get(
        emu.base_url + "/uploads", params=params, headers={"Authorization": "Bearer k"}
    ) as response:
        return response.status, await response.json()


def form_for(data: dict[str, Any], name: str = "a.png") -> Form:
    return [
        ("OSSAccessKeyId", data["oss_access_key_id"]),
        ("Signature", data["signature"]),
        ("policy", data["policy"]),
        ("key", f"{data['upload_dir']}/{name}"),
        ("x-oss-object-acl", data["x_oss_object_acl"]),
        ("x-oss-forbid-overwrite", data["x_oss_forbid_overwrite"]),
        ("success_action_status", "200"),
        ("x-oss-content-type", "image/png"),
    ]


async def post(
    session: aiohttp.ClientSession, url: str, fields: Form, content: bytes | None = b"png"
) -> tuple[int, str]:
    form = aiohttp.FormData()
    for name, value in fields:
        form.add_field(name, value)
    if content is not None:
        form.add_field("file", content, filename="a.png")
    async with session.post(url, data=form) as response:
        return response.status, await response.text()


async def test_a_policy_then_an_upload(dashscope_emulator: DashScopeEmulator) -> None:
    emu = dashscope_emulator
    async with aiohttp.ClientSession() as session:
        status, reply = await policy(session, emu)
        assert status == 200 and reply["request_id"]
        data = reply["data"]
        assert data["upload_host"].startswith("http://127.0.0.1:")
        assert data["expire_in_seconds"] == 300
        status, _ = await post(session, data["upload_host"], form_for(data), b"\x89PNG data")
    assert status == 200
    [stored] = emu.uploads.uploads
    assert stored.url == f"oss://{data['upload_dir']}/a.png"
    assert stored.size == len(b"\x89PNG data")
    assert stored.sha256 == hashlib.sha256(b"\x89PNG data").hexdigest()
    assert emu.uploads.policy_requests == 1
    policy_request, post_request = emu.requests
    assert policy_request.query == {"action": "getPolicy", "model": "qwen-vl-max"}
    assert post_request.body == b""  # never kept


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        (lambda f: f.__setitem__(1, ("Signature", "forged")), 403, "SignatureDoesNotMatch"),
        (lambda f: f.__setitem__(2, ("policy", "unknown")), 403, "InvalidAccessKeyId"),
        (lambda f: f.__setitem__(3, ("key", "elsewhere/a.png")), 403, "AccessDenied"),
    ],
    ids=["signature", "policy", "key-prefix"],
)
async def test_a_broken_form_is_refused_with_an_oss_error(
    dashscope_emulator: DashScopeEmulator, change: Any, status: int, code: str
) -> None:
    async with aiohttp.ClientSession() as session:
        _, reply = await policy(session, dashscope_emulator)
        fields = form_for(reply["data"])
        change(fields)
        got, body = await post(session, reply["data"]["upload_host"], fields)
    assert got == status
    assert f"<Code>{code}</Code>" in body and "<RequestId>" in body
    assert dashscope_emulator.uploads.uploads == []


async def test_overwrite_expiry_size_and_missing_file(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    emu = dashscope_emulator
    async with aiohttp.ClientSession() as session:
        _, reply = await policy(session, emu)
        data = reply["data"]
        assert (await post(session, data["upload_host"], form_for(data)))[0] == 200
        status, body = await post(session, data["upload_host"], form_for(data))
        assert (status, "<Code>FileAlreadyExists</Code>" in body) == (409, True)
        status, body = await post(session, data["upload_host"], form_for(data, "b"), None)
        assert (status, "<Code>InvalidArgument</Code>" in body) == (400, True)
        emu.uploads.max_file_size_mb = 0
        emu.uploads.expire_in_seconds = 0
        try:
            status, body = await post(session, data["upload_host"], form_for(data, "c"))
            assert (status, "<Code>EntityTooLarge</Code>" in body) == (400, True)
            _, reply = await policy(session, emu)
            status, body = await post(session, data["upload_host"], form_for(reply["data"]))
            assert (status, "Policy expired" in body) == (403, True)
        finally:
            emu.uploads.max_file_size_mb = 1024
            emu.uploads.expire_in_seconds = 300


async def test_policy_requests_need_a_key_and_a_model(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(dashscope_emulator.base_url + "/uploads") as response:
            assert response.status == 401
        status, reply = await policy(session, dashscope_emulator, model="")
        assert (status, reply["code"]) == (400, "InvalidParameter")


async def test_faults_are_taken_by_their_stage_in_order(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    emu = dashscope_emulator
    emu.uploads.fail(
        UploadFault("oss", status=503, code="ServiceUnavailable"),
        UploadFault("policy", status=429, code="Throttling"),
    )
    async with aiohttp.ClientSession() as session:
        status, reply = await policy(session, emu)
        assert (status, reply["code"]) == (429, "Throttling")
        status, reply = await policy(session, emu)
        assert status == 200
        status, body = await post(session, reply["data"]["upload_host"], form_for(reply["data"]))
        assert (status, "<Code>ServiceUnavailable</Code>" in body) == (503, True)
        status, _ = await post(session, reply["data"]["upload_host"], form_for(reply["data"]))
        assert status == 200
    emu.uploads.fail(UploadFault("oss"))
    emu.reset()  # forgets queued faults and stored files
    assert emu.uploads.uploads == [] and emu.uploads.policy_requests == 0
