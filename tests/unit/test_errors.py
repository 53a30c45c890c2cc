"""Error payloads and bodies become the documented classes."""

from __future__ import annotations

import pytest

from aiotongyi import (
    APIError,
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    RateLimitError,
    ServerError,
    TongyiError,
)
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
