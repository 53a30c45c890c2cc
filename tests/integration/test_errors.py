"""Errors, timeouts and retries, each injected by the emulator."""

from __future__ import annotations

import logging
import time

import pytest

from aiotongyi import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
    Timeout,
    TongyiError,
    TongyiLLMClient,
)
from aiotongyi.testing import DashScopeEmulator, ErrorEvent, Reply, http_error

from ..conftest import make_client


@pytest.fixture
async def fast_client(dashscope_emulator: DashScopeEmulator) -> TongyiLLMClient:
    """A client whose backoff is short: retries wait 0.5 s, 1 s by default."""
    client = make_client(dashscope_emulator, max_retries=2)
    yield client  # type: ignore[misc]
    await client.aclose()


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "InvalidParameter", BadRequestError),
        (401, "InvalidApiKey", AuthenticationError),
        (403, "AccessDenied", AuthenticationError),
        (404, "ModelNotFound", NotFoundError),
    ],
)
@pytest.mark.parametrize("body", ["json", "sse"])
async def test_client_errors_map_to_their_class_and_are_not_retried(
    client: TongyiLLMClient,
    dashscope_emulator: DashScopeEmulator,
    status: int,
    code: str,
    cls: type[APIError],
    body: str,
) -> None:
    dashscope_emulator.enqueue(http_error(status, code, "nope", body=body, request_id="rid-e"))
    with pytest.raises(cls) as info:
        await client.generate("x")
    error = info.value
    assert (error.status_code, error.code, error.message, error.request_id) == (
        status,
        code,
        "nope",
        "rid-e",
    )
    assert error.partial is None
    assert len(dashscope_emulator.requests) == 1


async def test_html_gateway_error_is_a_server_error_after_retries(
    fast_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(*[http_error(502, body="html", retry_after=0.01)] * 3)
    with pytest.raises(ServerError) as info:
        await fast_client.generate("x")
    assert info.value.status_code == 502
    assert info.value.code == ""
    assert "<" not in info.value.message
    assert len(dashscope_emulator.requests) == 3


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_transient_errors_are_retried_then_succeed(
    fast_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator, status: int
) -> None:
    dashscope_emulator.enqueue(
        http_error(status, "Throttling" if status == 429 else "InternalError", retry_after=0.01),
        Reply(text=["ok"]),
    )
    assert (await fast_client.generate("x")).text == "ok"
    assert len(dashscope_emulator.requests) == 2


async def test_retries_are_logged_with_the_request_id(
    fast_client: TongyiLLMClient,
    dashscope_emulator: DashScopeEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dashscope_emulator.enqueue(
        http_error(503, "ModelUnavailable", request_id="rid-503", retry_after=0.01), Reply()
    )
    with caplog.at_level(logging.DEBUG, logger="aiotongyi"):
        await fast_client.generate("x")
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 1
    assert "rid-503" in retries[0].getMessage()
    requests = [r for r in caplog.records if r.getMessage().startswith("POST")]
    assert len(requests) == 2


async def test_quota_exhaustion_is_not_retried(
    fast_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(http_error(429, "Throttling.AllocationQuota", "quota"))
    with pytest.raises(RateLimitError):
        await fast_client.generate("x")
    assert len(dashscope_emulator.requests) == 1


async def test_retry_gives_up_after_max_retries(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(*[http_error(500, "InternalError", retry_after=0)] * 5)
    async with make_client(dashscope_emulator, max_retries=1) as client:
        with pytest.raises(ServerError):
            await client.generate("x")
    assert len(dashscope_emulator.requests) == 2


async def test_in_stream_error_before_content_is_retried(
    fast_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(
        Reply(error_event=ErrorEvent("Throttling.RateQuota", "busy", status=429)),
        Reply(text=["fine"]),
    )
    assert (await fast_client.generate("x")).text == "fine"
    assert len(dashscope_emulator.requests) == 2


async def test_in_stream_error_after_content_raises_with_partial(
    fast_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(
        Reply(
            text=["一", "二", "三"],
            error_event=ErrorEvent(
                "DataInspectionFailed", "inappropriate", status=400, after_frames=2
            ),
        )
    )
    seen = []
    with pytest.raises(BadRequestError) as info:
        async for out in fast_client.generate_stream("x"):
            seen.append(out.text)
    assert seen == ["一", "一二"]
    assert info.value.code == "DataInspectionFailed"
    assert info.value.partial is not None
    assert info.value.partial.text == "一二"
    assert len(dashscope_emulator.requests) == 1


async def test_error_event_with_a_space_after_colons(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(
        Reply(
            text=["a"],
            error_event=ErrorEvent(
                "Throttling.RateQuota", "q", status=429, after_frames=1, space_after_colon=True
            ),
        )
    )
    with pytest.raises(RateLimitError) as info:
        await client.generate("x")
    assert info.value.status_code == 429


async def test_truncated_stream_after_content_is_interrupted(
    fast_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["a", "b"], finish_reason=None, request_id="rid-t"))
    with pytest.raises(StreamInterruptedError) as info:
        await fast_client.generate("x")
    assert info.value.partial is not None
    assert info.value.partial.text == "ab"
    assert info.value.request_id == "rid-t"
    assert len(dashscope_emulator.requests) == 1


async def test_drop_after_content_is_interrupted_with_partial(
    fast_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["a", "b", "c"], drop_after_frames=2))
    with pytest.raises(StreamInterruptedError) as info:
        await fast_client.generate("x")
    assert info.value.partial is not None
    assert info.value.partial.text == "ab"


async def test_drop_before_content_is_retried(
    fast_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(drop_after_frames=0), Reply(text=["ok"]))
    assert (await fast_client.generate("x")).text == "ok"
    assert len(dashscope_emulator.requests) == 2


async def test_empty_stream_is_a_connection_error_after_retries(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    dashscope_emulator.enqueue(*[Reply(raw_body=b": nothing here\n\n")] * 2)
    async with make_client(dashscope_emulator, max_retries=1) as client:
        with pytest.raises(APIConnectionError) as info:
            await client.generate("x")
    assert type(info.value) is APIConnectionError
    assert len(dashscope_emulator.requests) == 2


async def test_malformed_frame_is_a_protocol_error_never_retried(
    fast_client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(text=["a", "b"], malformed_frame_at=1))
    with pytest.raises(ProtocolError) as info:
        await fast_client.generate("x")
    assert info.value.partial is not None
    assert info.value.partial.text == "a"
    assert len(dashscope_emulator.requests) == 1


async def test_a_200_html_page_is_a_protocol_error(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(raw_body=b"<html>login</html>", content_type="text/html"))
    with pytest.raises(ProtocolError, match="text/html"):
        await client.generate("x")


async def test_idle_read_timeout_fires_within_read_plus_one_second(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    dashscope_emulator.enqueue(Reply(text=["a", "b"], stall_after_frames=1, stall_seconds=5))
    async with make_client(dashscope_emulator, timeout=Timeout(read=0.5)) as client:
        started = time.monotonic()
        with pytest.raises(APITimeoutError) as info:
            await client.generate("x")
        assert time.monotonic() - started < 1.5
    assert isinstance(info.value, TimeoutError)
    assert info.value.partial is not None
    assert info.value.partial.text == "a"


async def test_timeout_before_first_byte_is_retried(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    dashscope_emulator.enqueue(Reply(first_byte_delay=3), Reply(text=["late but fine"]))
    async with make_client(dashscope_emulator, timeout=Timeout(read=0.3)) as client:
        assert (await client.generate("x")).text == "late but fine"
    assert len(dashscope_emulator.requests) == 2


async def test_total_timeout_is_not_retried(dashscope_emulator: DashScopeEmulator) -> None:
    dashscope_emulator.enqueue(Reply(text=list("abcdefghij"), drip_interval=0.02))
    async with make_client(dashscope_emulator, timeout=Timeout(read=5, total=0.4)) as client:
        started = time.monotonic()
        with pytest.raises(APITimeoutError, match="total"):
            await client.generate("x")
        assert time.monotonic() - started < 1.4
    assert len(dashscope_emulator.requests) == 1


async def test_connection_refused_is_a_connection_error(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    client = TongyiLLMClient(api_key="k", base_url="http://127.0.0.1:9/api/v1", max_retries=1)
    async with client:
        with pytest.raises(APIConnectionError) as info:
            await client.generate("x")
    assert not isinstance(info.value, APITimeoutError)


def test_every_error_derives_from_the_root() -> None:
    for cls in (
        APIError,
        BadRequestError,
        AuthenticationError,
        NotFoundError,
        RateLimitError,
        ServerError,
        APIConnectionError,
        APITimeoutError,
        StreamInterruptedError,
        ProtocolError,
    ):
        assert issubclass(cls, TongyiError)


async def test_the_key_never_appears_in_errors_or_logs(
    dashscope_emulator: DashScopeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-very-secret-value-42"
    dashscope_emulator.enqueue(http_error(401, "InvalidApiKey", "Invalid API-key provided."))
    with caplog.at_level(logging.DEBUG):
        async with make_client(dashscope_emulator, api_key=secret) as client:
            with pytest.raises(AuthenticationError) as info:
                await client.generate("x")
            assert secret not in repr(client)
    assert secret not in str(info.value)
    assert secret not in repr(info.value)
    assert secret not in caplog.text
