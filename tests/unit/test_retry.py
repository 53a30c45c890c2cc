"""The retry policy."""

from __future__ import annotations

import email.utils
import time

import pytest

from aiotongyi import (
    APIConnectionError,
    APITimeoutError,
    ProtocolError,
    StreamInterruptedError,
)
from aiotongyi._errors import api_error
from aiotongyi._retry import MAX_BACKOFF, MIN_DELAY, retry_delay, should_retry


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(status: int) -> None:
    assert should_retry(api_error(status, "Whatever", "m", None))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried(status: int) -> None:
    assert not should_retry(api_error(status, "Whatever", "m", None))


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (429, "Throttling.AllocationQuota"),
        (429, "PrepaidBillOverdue"),
        (429, "PostpaidBillOverdue"),
        (429, "CommodityNotPurchased"),
        (400, "Arrearage"),
        (403, "AllocationQuota.FreeTierOnly"),
        (500, "InternalError.Algo.InvalidParameter"),
    ],
)
def test_exhausted_quota_and_billing_are_not_retried(status: int, code: str) -> None:
    assert not should_retry(api_error(status, code, "m", None))


def test_connection_failures_and_timeouts_are_retried() -> None:
    assert should_retry(APIConnectionError("x"))
    assert should_retry(APITimeoutError("x"))


def test_protocol_errors_and_interruptions_are_not_retried() -> None:
    assert not should_retry(ProtocolError("x"))
    assert not should_retry(StreamInterruptedError("x"))


def test_backoff_doubles_up_to_the_cap_with_bounded_jitter() -> None:
    assert retry_delay(0, None, 0.0) == 0.5
    assert retry_delay(1, None, 0.0) == 1.0
    assert retry_delay(10, None, 0.0) == MAX_BACKOFF
    assert retry_delay(0, None, 0.999) < 0.5 * 1.25


def test_retry_after_is_honoured_and_capped() -> None:
    assert retry_delay(0, {"retry-after": "2"}, 0.5) == 2.0
    assert retry_delay(0, {"retry-after-ms": "150"}, 0.5) == 0.15
    assert retry_delay(0, {"retry-after": "120"}, 0.5) == MAX_BACKOFF
    assert retry_delay(0, {"retry-after": "soon"}, 0.0) == 0.5


def test_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 3, usegmt=True)
    assert 1.0 < retry_delay(0, {"retry-after": when}, 0.0) <= 3.0


def test_a_zero_or_tiny_retry_after_still_waits() -> None:
    # Retry-After: 0 is no advice: the usual backoff applies, never a busy loop.
    assert retry_delay(0, {"retry-after": "0"}, 0.0) == 0.5
    assert retry_delay(5, {"retry-after": "0"}, 0.0) == MAX_BACKOFF
    assert retry_delay(0, {"retry-after-ms": "1"}, 0.0) == MIN_DELAY
    assert retry_delay(0, {"retry-after": "-3"}, 0.0) == 0.5
    assert retry_delay(0, {"retry-after": "nan"}, 0.0) == 0.5
    assert all(retry_delay(a, None, j) >= MIN_DELAY for a in range(5) for j in (0.0, 0.9))


def test_a_retry_after_above_the_cap_is_not_retried() -> None:
    error = api_error(429, "Throttling.RateQuota", "slow down", None)
    error.headers = {"Retry-After": "30"}
    assert not should_retry(error)
    error.headers = {"Retry-After": str(MAX_BACKOFF)}
    assert should_retry(error)
    error.headers = {"retry-after-ms": "60000"}
    assert not should_retry(error)


@pytest.mark.parametrize("code", ["Throttling", "Throttling.RateQuota", "Throttling.BurstRate"])
def test_per_minute_throttling_is_retried(code: str) -> None:
    assert should_retry(api_error(429, code, "m", None))
    assert should_retry(api_error(None, code, "m", None))  # inferred 429, in a 200 stream
