"""Error payloads and bodies become the documented classes."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import pickle

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from aiotongyi import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    JSONOutputError,
    ModelOutput,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
    TongyiError,
)
from aiotongyi._accumulate import Accumulator
from aiotongyi._errors import api_error, error_from_http_body, infer_status


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, NotFoundError),
        (429, RateLimitError),
        (500, ServerError),
        (503, ServerError),
        (418, APIError),
    ],
)
def test_status_picks_the_class(status: int, cls: type[APIError]) -> None:
    error = api_error(status, "X", "m", "rid")
    assert type(error) is cls
    assert (error.status_code, error.code, error.message, error.request_id) == (
        status,
        "X",
        "m",
        "rid",
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("Throttling.RateQuota", 429),
        ("InvalidApiKey", 401),
        ("Model.AccessDenied", 403),
        ("ModelNotFound", 404),
        ("InternalError.Timeout", 500),
        ("SystemError", 500),
        ("ModelUnavailable", 503),
        ("InvalidParameter", 400),
        ("InternalError.Algo.InvalidParameter", 400),
    ],
)
def test_status_is_inferred_from_the_code(code: str, status: int) -> None:
    assert infer_status(code) == status
    assert api_error(None, code, "m", None).status_code == status


def test_algo_invalid_parameter_is_a_bad_request_whatever_its_status() -> None:
    error = api_error(500, "InternalError.Algo.InvalidParameter", "m", None)
    assert isinstance(error, BadRequestError)
    assert error.status_code == 400


def test_json_body() -> None:
    error = error_from_http_body(
        401,
        "application/json",
        b'{"code":"InvalidApiKey","message":"Invalid API-key provided.","request_id":"r1"}',
        "hdr",
    )
    assert isinstance(error, AuthenticationError)
    assert (error.code, error.message, error.request_id) == (
        "InvalidApiKey",
        "Invalid API-key provided.",
        "r1",
    )


def test_nested_error_and_msg_spelling() -> None:
    error = error_from_http_body(400, "application/json", b'{"error":{"code":"X","msg":"m"}}', "h")
    assert (error.code, error.message, error.request_id) == ("X", "m", "h")


def test_sse_error_body_uses_the_comment_status() -> None:
    body = b'id:1\nevent:error\n:HTTP_STATUS/400\ndata:{"code":"Arrearage","message":"pay"}\n'
    error = error_from_http_body(400, "text/event-stream;charset=UTF-8", body, None)
    assert isinstance(error, BadRequestError)
    assert error.code == "Arrearage"


def test_html_gateway_page_is_stripped_and_short() -> None:
    page = b"<html><head><style>x{}</style></head><body><h1>502 Bad Gateway</h1>" + (
        b"<p>nginx</p>" * 100
    )
    error = error_from_http_body(502, "text/html", page, None)
    assert isinstance(error, ServerError)
    assert error.code == ""
    assert error.message.startswith("502 Bad Gateway nginx")
    assert len(error.message) <= 200
    assert "<" not in error.message


def test_empty_body() -> None:
    error = error_from_http_body(503, "", b"", None)
    assert isinstance(error, ServerError)
    assert error.message == "HTTP 503"


def test_str_and_repr_are_informative() -> None:
    error = api_error(429, "Throttling", "slow down", "r1")
    assert str(error) == "429 Throttling: slow down (request_id=r1)"
    assert "RateLimitError" in repr(error)
    assert isinstance(error, TongyiError)


def deep_json(depth: int = 1500) -> bytes:
    """About 3 KB of JSON nested deeper than the interpreter's recursion limit."""
    return b"[" * depth + b"]" * depth


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "text/event-stream"])
def test_a_deeply_nested_error_body_is_the_status_class_with_its_text(content_type: str) -> None:
    body = deep_json()
    if content_type == "text/event-stream":
        body = b"event:error\ndata:" + body + b"\n\n"
    error = error_from_http_body(500, content_type, body, "rid")
    assert type(error) is ServerError
    assert error.status_code == 500
    assert error.message.startswith("[[[[")
    assert len(error.message) <= 200
    assert error.request_id == "rid"


def test_a_deeply_nested_message_field_is_kept_short() -> None:
    payload = b'{"code":"X","message":' + b"[" * 500 + b"]" * 500 + b"}"
    error = error_from_http_body(400, "application/json", payload, None)
    assert type(error) is BadRequestError
    assert len(error.message) <= 2000


def every_error() -> list[TongyiError]:
    partial = ModelOutput(text="half", delta="half", request_id="r", model="m")
    errors: list[TongyiError] = [
        cls("boom", request_id="r", partial=partial)
        for cls in (
            TongyiError,
            APIConnectionError,
            APITimeoutError,
            StreamInterruptedError,
            ProtocolError,
            JSONOutputError,
        )
    ]
    for status in (400, 401, 403, 404, 429, 500, 418):
        error = api_error(status, "Code", "no", "r", partial)
        error.headers = CIMultiDictProxy(CIMultiDict({"Retry-After": "1", "X-Request-Id": "r"}))
        errors.append(error)
    return errors


def facts(error: TongyiError) -> tuple[object, ...]:
    return (
        type(error),
        str(error),
        error.message,
        error.request_id,
        error.partial,
        getattr(error, "status_code", None),
        getattr(error, "code", None),
        getattr(error, "headers", None),
    )


@pytest.mark.parametrize("error", every_error(), ids=lambda e: type(e).__name__)
def test_every_error_round_trips_through_pickle(error: TongyiError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert facts(copy) == facts(error)
    if isinstance(error, APIError):
        assert type(error.headers) is dict
        assert error.headers == {"retry-after": "1", "x-request-id": "r"}


def test_errors_with_streamed_partials_pickle() -> None:
    accumulator = Accumulator("m", request_id="r")
    body = {"output": {"choices": [{"message": {"content": "abc"}, "finish_reason": "null"}]}}
    accumulator.add_frame(body)
    error = accumulator.interrupted()
    copy = pickle.loads(pickle.dumps(error))
    assert copy.partial is not None
    assert (copy.partial.text, copy.partial.raw) == ("abc", body)


def raise_rate_limit(status: int) -> None:
    error = api_error(status, "Throttling", "slow down", "r1")
    error.headers = CIMultiDictProxy(CIMultiDict({"Retry-After": "2"}))
    raise error


def test_errors_cross_a_process_pool() -> None:
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        with pytest.raises(RateLimitError) as caught:
            pool.submit(raise_rate_limit, 429).result(timeout=60)
    assert (caught.value.code, caught.value.request_id) == ("Throttling", "r1")
    assert caught.value.headers == {"retry-after": "2"}
