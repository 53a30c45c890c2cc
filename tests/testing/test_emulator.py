"""The DashScope emulator, checked from the wire with a plain aiohttp client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from aiotongyi.testing import (
    DashScopeEmulator,
    ErrorEvent,
    RecordedRequest,
    Reply,
    ToolCallScript,
    http_error,
)

TEXT_PATH = "/services/aigc/text-generation/generation"
VL_PATH = "/services/aigc/multimodal-generation/generation"
SSE_TYPE = "text/event-stream;charset=UTF-8"


@dataclass
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    error: BaseException | None = None

    def frames(self) -> list[dict[str, object]]:
        """Every ``data:`` payload, parsed."""
        lines = self.body.decode().splitlines()
        return [json.loads(line[5:]) for line in lines if line.startswith("data:")]

    def choices(self) -> list[dict[str, object]]:
        """``output.choices[0]`` of every frame."""
        return [frame["output"]["choices"][0] for frame in self.frames()]  # type: ignore[index]


def chat_body(content: str = "hi", *, incremental: bool | None = True) -> dict[str, object]:
    parameters: dict[str, object] = {"result_format": "message"}
    if incremental is not None:
        parameters["incremental_output"] = incremental
    return {
        "model": "qwen-plus",
        "input": {"messages": [{"role": "user", "content": content}]},
        "parameters": parameters,
    }


async def post(
    emulator: DashScopeEmulator,
    body: object = None,
    *,
    stream: bool = True,
    headers: Mapping[str, str] | None = None,
    path: str = TEXT_PATH,
    raw: bytes | None = None,
) -> Answer:
    """POST once on a fresh session; a transport error after the headers is kept in ``error``."""
    sent = {"Authorization": f"Bearer {emulator.api_key}", "Content-Type": "application/json"}
    if stream:
        sent |= {"Accept": "text/event-stream", "X-DashScope-SSE": "enable"}
    sent |= headers or {}
    data = raw if raw is not None else json.dumps(chat_body() if body is None else body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(emulator.base_url + path, data=data, headers=sent) as response,
    ):
        received = bytearray()
        try:
            async for chunk in response.content.iter_any():
                received += chunk
        except aiohttp.ClientPayloadError as exc:
            return Answer(response.status, response.headers, bytes(received), exc)
        return Answer(response.status, response.headers, bytes(received))


def frame(number: int, data: str, *, event: str = "result", status: int = 200) -> str:
    return f"id:{number}\nevent:{event}\n:HTTP_STATUS/{status}\ndata:{data}\n\n"


# -- frames ----------------------------------------------------------------


async def test_simple_reply_is_byte_exact(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(Reply(text=["春眠", "不觉晓"], request_id="rid-1"))
    answer = await post(dashscope_emulator)
    usage = '"usage":{{"input_tokens":1,"output_tokens":{0},"total_tokens":{1}}}'
    tail = ',"request_id":"rid-1"}'
    assert answer.body.decode() == (
        frame(
            1,
            '{"output":{"choices":[{"message":{"content":"春眠","role":"assistant"},'
            '"finish_reason":"null"}]},' + usage.format(2, 3) + tail,
        )
        + frame(
            2,
            '{"output":{"choices":[{"message":{"content":"不觉晓","role":"assistant"},'
            '"finish_reason":"null"}]},' + usage.format(5, 6) + tail,
        )
        + frame(
            3,
            '{"output":{"choices":[{"message":{"content":"","role":"assistant"},'
            '"finish_reason":"stop"}]},' + usage.format(5, 6) + tail,
        )
    )
    assert answer.status == 200
    assert answer.headers["Content-Type"] == SSE_TYPE
    assert answer.headers["X-Request-Id"] == "rid-1"
    assert answer.headers["Transfer-Encoding"] == "chunked"


async def test_default_reply_echoes_the_last_user_message(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    answer = await post(dashscope_emulator, chat_body("ping"))
    choices = answer.choices()
    assert "".join(str(c["message"]["content"]) for c in choices) == "Hello! You said: ping"  # type: ignore[index]
    assert len(choices) == 3  # 6 tokens, three a frame, and the finishing frame
    assert choices[-1]["finish_reason"] == "stop"
    request_ids = {f["request_id"] for f in answer.frames()}
    assert request_ids == {answer.headers["X-Request-Id"]}


async def test_cumulative_frames_repeat_the_whole_answer(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    for incremental in (False, None):
        dashscope_emulator.enqueue(Reply(text=["a", "b", "c"], final_text="!"))
        answer = await post(dashscope_emulator, chat_body(incremental=incremental))
        contents = [c["message"]["content"] for c in answer.choices()]  # type: ignore[index]
        assert contents == ["a", "ab", "abc", "abc!"]


async def test_incremental_frames_hold_only_new_text(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(Reply(text=["a", "b", "c"], final_text="!"))
    answer = await post(dashscope_emulator)
    contents = [c["message"]["content"] for c in answer.choices()]  # type: ignore[index]
    assert contents == ["a", "b", "c", "!"]
    assert [c["finish_reason"] for c in answer.choices()] == ["null", "null", "null", "stop"]
    assert [f["usage"]["output_tokens"] for f in answer.frames()] == [1, 2, 3, 4]  # type: ignore[index]


async def test_tool_call_fragments(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(
        Reply(
            tool_calls=[
                ToolCallScript("get_weather", ['{"city": "', '杭州"}'], id="call_a"),
                ToolCallScript("get_time", "{}"),
            ]
        )
    )
    choices = (await post(dashscope_emulator)).choices()
    calls = [c["message"]["tool_calls"][0] for c in choices[:-1]]  # type: ignore[index]
    assert calls[0] == {
        "index": 0,
        "id": "call_a",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "'},
    }
    assert calls[1] == {
        "index": 0,
        "id": "",
        "type": "function",
        "function": {"arguments": '杭州"}'},
    }
    assert calls[2]["index"] == 1
    assert calls[2]["id"].startswith("call_")
    assert calls[2]["function"] == {"name": "get_time", "arguments": "{}"}
    assert choices[-1]["finish_reason"] == "tool_calls"
    assert "tool_calls" not in choices[-1]["message"]  # type: ignore[operator]


async def test_cumulative_tool_calls_are_snapshots(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(
        Reply(tool_calls=[ToolCallScript("f", ["{", '"a":1', "}"], id="call_f")])
    )
    answer = await post(dashscope_emulator, chat_body(incremental=False))
    snapshots = [c["message"]["tool_calls"][0]["function"] for c in answer.choices()]  # type: ignore[index]
    assert [s["arguments"] for s in snapshots] == ["{", '{"a":1', '{"a":1}', '{"a":1}']
    assert all(s["name"] == "f" for s in snapshots)


async def test_thinking_comes_first_and_counts_reasoning_tokens(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    dashscope_emulator.enqueue(Reply(thinking=["想", "一想"], text=["好"]))
    answer = await post(dashscope_emulator)
    messages = [c["message"] for c in answer.choices()]
    assert messages[0] == {"content": "", "reasoning_content": "想", "role": "assistant"}
    assert messages[1]["reasoning_content"] == "一想"  # type: ignore[index]
    assert messages[2] == {"content": "好", "reasoning_content": "", "role": "assistant"}
    usage = [f["usage"] for f in answer.frames()]
    assert [u["output_tokens_details"]["reasoning_tokens"] for u in usage] == [1, 3, 3, 3]  # type: ignore[index]
    assert usage[-1]["output_tokens"] == 4  # type: ignore[index]


async def test_two_choices_interleave_and_finish_separately(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    dashscope_emulator.enqueue(Reply(text=["x", "y"], choices=2))
    choices = (await post(dashscope_emulator)).choices()
    assert [c["index"] for c in choices] == [0, 1, 0, 1, 0, 1]
    assert [c["finish_reason"] for c in choices[-2:]] == ["stop", "stop"]
    assert all(c["finish_reason"] == "null" for c in choices[:-2])


async def test_fixed_usage_ends_exactly(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(Reply(text=["abc"], usage=(100, 7)))
    frames = (await post(dashscope_emulator)).frames()
    assert frames[-1]["usage"] == {"input_tokens": 100, "output_tokens": 7, "total_tokens": 107}
    assert all(f["usage"]["input_tokens"] == 100 for f in frames)  # type: ignore[index]


async def test_finish_reason_none_ends_cleanly_without_finish_frame(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    dashscope_emulator.enqueue(Reply(text=["a", "b"], finish_reason=None))
    answer = await post(dashscope_emulator)
    assert answer.error is None
    assert [c["finish_reason"] for c in answer.choices()] == ["null", "null"]


async def test_multimodal_route_sends_content_parts(dashscope_emulator: DashScopeEmulator) -> None:
    body = chat_body()
    body["input"] = {"messages": [{"role": "user", "content": [{"image": "x"}, {"text": "看"}]}]}
    answer = await post(dashscope_emulator, body, path=VL_PATH)
    contents = [c["message"]["content"] for c in answer.choices()]  # type: ignore[index]
    assert contents[-1] == []
    assert "".join(part[0]["text"] for part in contents[:-1]) == "Hello! You said: 看"


async def test_keepalive_and_crlf_rendering(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(Reply(text=["a"], keepalive=True, line_ending="\r\n"))
    body = (await post(dashscope_emulator)).body
    assert body.startswith(b":keepalive\r\n\r\nid:1\r\nevent:result\r\n:HTTP_STATUS/200\r\ndata:{")
    assert b"\n\n" not in body.replace(b"\r\n", b"")


async def test_a_large_frame_and_many_frames(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(Reply(text=["界" * (4 << 20)]), Reply(text=["ab"] * 2000))
    big = await post(dashscope_emulator)
    assert len(big.choices()[0]["message"]["content"]) == 4 << 20  # type: ignore[index]
    many = await post(dashscope_emulator)
    assert len(many.frames()) == 2001


# -- non-stream, errors ------------------------------------------------------


async def test_non_stream_reply_is_one_json_body(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(Reply(text=["a", "b"], thinking=["t"], request_id="rid-2"))
    answer = await post(dashscope_emulator, stream=False)
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["X-DashScope-Finished"] == "true"
    assert json.loads(answer.body) == {
        "output": {
            "choices": [
                {
                    "finish_reason": "stop",
                    "message": {"content": "ab", "reasoning_content": "t", "role": "assistant"},
                }
            ]
        },
        "usage": {
            "input_tokens": 1,
            "output_tokens": 3,
            "total_tokens": 4,
            "output_tokens_details": {"reasoning_tokens": 1},
        },
        "request_id": "rid-2",
    }


async def test_non_stream_error_event_is_an_http_error(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    error = ErrorEvent("Throttling", "slow", status=429)
    dashscope_emulator.enqueue(Reply(text=["a"], error_event=error, request_id="r"))
    answer = await post(dashscope_emulator, stream=False)
    assert answer.status == 429
    assert json.loads(answer.body) == {"code": "Throttling", "message": "slow", "request_id": "r"}


async def test_accept_header_alone_turns_streaming_on(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    answer = await post(dashscope_emulator, stream=False, headers={"Accept": "text/event-stream"})
    assert answer.headers["Content-Type"] == SSE_TYPE
    assert len(answer.frames()) == 3


async def test_unknown_path_is_404(dashscope_emulator: DashScopeEmulator) -> None:
    answer = await post(dashscope_emulator, path="/services/aigc/unknown")
    assert answer.status == 404
    assert dashscope_emulator.requests[0].path == "/api/v1/services/aigc/unknown"


async def test_http_error_json_with_retry_after(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(
        http_error(429, "Throttling.RateQuota", "slow down", retry_after=3, request_id="r9")
    )
    answer = await post(dashscope_emulator)
    assert answer.status == 429
    assert answer.headers["Retry-After"] == "3"
    assert answer.headers["X-Request-Id"] == "r9"
    assert answer.headers["Content-Type"] == "application/json"
    assert json.loads(answer.body) == {
        "code": "Throttling.RateQuota",
        "message": "slow down",
        "request_id": "r9",
    }


async def test_http_error_html_empty_and_sse_bodies(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(
        http_error(502, body="html"),
        http_error(503, body="empty", retry_after=0.5),
        http_error(400, "Arrearage", "Access denied.", body="sse", request_id="r1"),
    )
    html = await post(dashscope_emulator)
    assert (html.status, html.headers["Content-Type"]) == (502, "text/html")
    assert b"<h1>502 Bad Gateway</h1>" in html.body
    empty = await post(dashscope_emulator)
    assert (empty.status, empty.body, empty.headers["Retry-After"]) == (503, b"", "0.5")
    sse = await post(dashscope_emulator)
    assert (sse.status, sse.headers["Content-Type"]) == (400, SSE_TYPE)
    assert sse.body.decode() == frame(
        1,
        '{"code":"Arrearage","message":"Access denied.","request_id":"r1"}',
        event="error",
        status=400,
    )


def test_http_error_defaults_and_bad_kind() -> None:
    reply = http_error(401)
    assert reply.raw_body is not None
    assert json.loads(reply.raw_body)["code"] == "InvalidApiKey"
    assert json.loads(reply.raw_body)["request_id"] == reply.request_id
    with pytest.raises(ValueError, match="body must be"):
        http_error(500, body="xml")


async def test_error_event_after_content(dashscope_emulator: DashScopeEmulator) -> None:
    error = ErrorEvent("Throttling.RateQuota", "slow", status=429, after_frames=1)
    dashscope_emulator.enqueue(Reply(text=["a", "b"], error_event=error, request_id="r"))
    answer = await post(dashscope_emulator)
    assert answer.status == 200
    assert answer.body.decode().endswith(
        frame(
            2,
            '{"code":"Throttling.RateQuota","message":"slow","request_id":"r"}',
            event="error",
            status=429,
        )
    )
    assert len(answer.frames()) == 2


async def test_error_event_with_spaces(dashscope_emulator: DashScopeEmulator) -> None:
    error = ErrorEvent("DataInspectionFailed", "no", space_after_colon=True)
    dashscope_emulator.enqueue(Reply(error_event=error))
    body = (await post(dashscope_emulator)).body.decode()
    assert body.startswith("id:1\nevent: error\n:HTTP_STATUS/400\ndata: {")


async def test_missing_or_empty_key_is_401(dashscope_emulator: DashScopeEmulator) -> None:
    for authorization in ("", "Bearer ", "Basic abc"):
        answer = await post(dashscope_emulator, headers={"Authorization": authorization})
        assert answer.status == 401
        error = json.loads(answer.body)
        assert (error["code"], error["message"]) == ("InvalidApiKey", "Invalid API-key provided.")
        assert error["request_id"]


async def test_bad_request_bodies_are_400(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(Reply(text=["kept for a good request"]))
    no_parameters = chat_body()
    del no_parameters["parameters"]
    answer = await post(dashscope_emulator, no_parameters)
    assert (answer.status, json.loads(answer.body)["code"]) == (400, "BadRequest.EmptyParameters")
    answer = await post(dashscope_emulator, raw=b"{not json")
    assert (answer.status, json.loads(answer.body)["code"]) == (400, "InvalidParameter")
    good = await post(dashscope_emulator)
    assert good.choices()[0]["message"]["content"] == "kept for a good request"  # type: ignore[index]


# -- faults ------------------------------------------------------------------


async def test_drop_after_frames_is_a_payload_error(dashscope_emulator: DashScopeEmulator) -> None:
    script = {"text": ["a", "b", "c"], "request_id": "rid"}
    dashscope_emulator.enqueue(Reply(**script), Reply(**script, drop_after_frames=2))  # type: ignore[arg-type]
    whole = await post(dashscope_emulator)
    dropped = await post(dashscope_emulator)
    assert isinstance(dropped.error, aiohttp.ClientPayloadError)
    assert len(dropped.frames()) == 2
    assert whole.body.startswith(dropped.body)
    assert dropped.body.endswith(b"\n\n")


async def test_non_stream_drop_comes_up_short(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(Reply(text=["abcdef"], drop_after_bytes=10))
    answer = await post(dashscope_emulator, stream=False)
    assert answer.body == b'{"output":'
    assert int(answer.headers["Content-Length"]) > 10
    assert isinstance(answer.error, aiohttp.ClientPayloadError)


async def test_drop_right_after_headers(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(Reply(text=["a"], drop_after_frames=0))
    answer = await post(dashscope_emulator)
    assert (answer.status, answer.body) == (200, b"")
    assert isinstance(answer.error, aiohttp.ClientPayloadError)


async def test_drop_after_bytes_cuts_mid_character(dashscope_emulator: DashScopeEmulator) -> None:
    script = {"text": ["春眠不觉晓"], "request_id": "rid"}
    dashscope_emulator.enqueue(Reply(**script))  # type: ignore[arg-type]
    whole = (await post(dashscope_emulator)).body
    cut = whole.index("春".encode()) + 1
    dashscope_emulator.enqueue(Reply(**script, drop_after_bytes=cut))  # type: ignore[arg-type]
    dropped = await post(dashscope_emulator)
    assert dropped.body == whole[:cut]
    assert isinstance(dropped.error, aiohttp.ClientPayloadError)


async def test_malformed_frame(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(Reply(text=["a", "b"], malformed_frame_at=1))
    body = (await post(dashscope_emulator)).body.decode()
    assert '\ndata:{"output": \n\nid:3\n' in body


async def test_chunk_sizes_and_drip_keep_the_bytes(dashscope_emulator: DashScopeEmulator) -> None:
    script = {"text": ["春眠", "不觉晓"], "request_id": "rid", "usage": (1, 1)}
    dashscope_emulator.enqueue(
        Reply(**script),  # type: ignore[arg-type]
        Reply(**script, chunk_sizes=[1, 7, 3]),  # type: ignore[arg-type]
        Reply(**script, drip_interval=0.0),  # type: ignore[arg-type]
    )
    plain, chunked, dripped = [(await post(dashscope_emulator)).body for _ in range(3)]
    assert chunked == plain
    assert dripped == plain


async def test_stall_and_first_byte_delay(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(
        Reply(text=["a", "b"], stall_after_frames=1, stall_seconds=0.3, first_byte_delay=0.2)
    )
    headers = {"Authorization": "Bearer k", "X-DashScope-SSE": "enable"}
    started = time.monotonic()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            dashscope_emulator.base_url + TEXT_PATH, json=chat_body(), headers=headers
        ) as response,
    ):
        assert time.monotonic() - started >= 0.18
        first = await response.content.readuntil(b"\n\n")
        stalled = time.monotonic()
        rest = await response.read()
    assert time.monotonic() - stalled >= 0.25
    assert b'"content":"a"' in first
    assert b'"content":"b"' in rest


async def test_frame_delay_paces_the_stream(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(Reply(text=["a", "b"], frame_delay=0.1))
    started = time.monotonic()
    answer = await post(dashscope_emulator)
    assert time.monotonic() - started >= 0.18  # two gaps between three frames
    assert len(answer.frames()) == 3


async def test_garbage_and_reset_before_status(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(
        Reply(garbage=b"SSH-2.0-OpenSSH\r\n\r\n"), Reply(reset_before_status=True)
    )
    with pytest.raises(aiohttp.ClientResponseError):
        await post(dashscope_emulator)
    with pytest.raises(aiohttp.ClientOSError):
        await post(dashscope_emulator)
    assert len(dashscope_emulator.requests) == 2
    assert (await post(dashscope_emulator)).status == 200  # the server lives on


async def test_endless_line_stops_when_the_client_leaves(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    dashscope_emulator.enqueue(Reply(endless=True))
    headers = {"Authorization": "Bearer k", "X-DashScope-SSE": "enable"}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            dashscope_emulator.base_url + TEXT_PATH, json=chat_body(), headers=headers
        ) as response:
            received = b""
            while len(received) < (1 << 20):
                received += await response.content.readany()
        assert received.startswith(b"data:aaaa")
        assert b"\n" not in received
    assert dashscope_emulator.wait_for_open_connections(0)
    assert (await post(dashscope_emulator)).status == 200


def test_reply_rejects_impossible_settings() -> None:
    with pytest.raises(ValueError, match="line_ending"):
        Reply(line_ending="\n\n")
    with pytest.raises(ValueError, match="chunk_sizes"):
        Reply(chunk_sizes=[4, 0])
    with pytest.raises(ValueError, match="choices"):
        Reply(choices=0)


# -- bookkeeping -----------------------------------------------------------


async def test_request_log(dashscope_emulator: DashScopeEmulator) -> None:
    await post(dashscope_emulator, headers={"X-DashScope-WorkSpace": "ws-1"})
    [request] = dashscope_emulator.requests
    assert isinstance(request, RecordedRequest)
    assert (request.method, request.path) == ("POST", "/api/v1" + TEXT_PATH)
    assert request.headers["x-dashscope-workspace"] == "ws-1"
    assert request.headers["authorization"] == "Bearer sk-emulator"
    assert request.json == chat_body()
    assert json.loads(request.body) == chat_body()


async def test_connection_counters(dashscope_emulator: DashScopeEmulator) -> None:
    headers = {"Authorization": "Bearer k"}
    url = dashscope_emulator.base_url + TEXT_PATH
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.post(url, json=chat_body(), headers=headers) as response:
                await response.read()
        assert dashscope_emulator.connections == 1  # keep-alive reuses the connection
        assert dashscope_emulator.wait_for_open_connections(1)
    assert dashscope_emulator.wait_for_open_connections(0)
    await post(dashscope_emulator)
    assert dashscope_emulator.connections == 2
    dashscope_emulator.reset()
    assert (dashscope_emulator.connections, dashscope_emulator.requests) == (0, [])


def test_fixture_in_a_sync_test(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(Reply(text=["sync"]))
    request = urllib.request.Request(
        dashscope_emulator.base_url + TEXT_PATH,
        data=json.dumps(chat_body()).encode(),
        headers={"Authorization": "Bearer k", "Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=5) as response:
        body = json.loads(response.read())
    assert body["output"]["choices"][0]["message"]["content"] == "sync"
    assert len(dashscope_emulator.requests) == 1  # reset before this test


async def test_enqueue_from_other_threads(dashscope_emulator: DashScopeEmulator) -> None:
    threads = [
        threading.Thread(target=dashscope_emulator.enqueue, args=(Reply(text=[str(n)]),))
        for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    texts = {(await post(dashscope_emulator)).choices()[0]["message"]["content"] for _ in range(4)}  # type: ignore[index]
    assert texts == {"0", "1", "2", "3"}


# -- lifecycle -----------------------------------------------------------------


def test_lifecycle() -> None:
    emulator = DashScopeEmulator()
    with pytest.raises(RuntimeError):
        _ = emulator.base_url
    emulator.stop()  # never started: nothing to do
    threads = threading.active_count()
    with DashScopeEmulator() as running:
        assert threading.active_count() == threads + 1
        assert running.base_url == f"http://127.0.0.1:{running.port}/api/v1"
        assert running.port > 0
        with pytest.raises(RuntimeError):
            running.start()
    running.stop()  # idempotent
    assert threading.active_count() == threads  # the server thread was joined


def test_start_on_a_busy_port_raises_and_leaves_no_thread() -> None:
    with DashScopeEmulator() as running:
        threads = threading.active_count()
        busy = DashScopeEmulator(port=running.port)
        with pytest.raises(OSError):
            busy.start()
        assert threading.active_count() == threads
        busy.stop()


async def test_stop_aborts_a_stalled_stream_quickly() -> None:
    emulator = DashScopeEmulator().start()
    emulator.enqueue(Reply(text=["a", "b"], stall_after_frames=1, stall_seconds=30))
    headers = {"Authorization": "Bearer k", "X-DashScope-SSE": "enable"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(emulator.base_url + TEXT_PATH, json=chat_body(), headers=headers) as resp,
    ):
        await resp.content.readuntil(b"\n\n")
        started = time.monotonic()
        emulator.stop()
        assert time.monotonic() - started < 2
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert emulator.open_connections == 0


def test_cli_serve_prints_the_address() -> None:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    process = subprocess.Popen(
        [sys.executable, "-m", "aiotongyi.testing", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("aiotongyi emulator listening on http://127.0.0.1:")
        assert line.rstrip().endswith("/api/v1 (api key: any)")
        url = line.split()[4]
        request = urllib.request.Request(
            url + TEXT_PATH,
            data=json.dumps(chat_body()).encode(),
            headers={"Authorization": "Bearer k"},
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(request, timeout=5) as response:
            assert json.loads(response.read())["output"]["choices"][0]["finish_reason"] == "stop"
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    assert stderr == ""
