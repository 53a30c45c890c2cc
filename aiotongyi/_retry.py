"""The retry policy: which failures are worth another attempt, and how long to wait (pure)."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping

from ._exceptions import APIConnectionError, APIError, TongyiError

__all__ = ["MAX_BACKOFF", "retry_delay", "should_retry"]

MAX_BACKOFF = 8.0
_RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
# No short wait fixes these, whatever their status says (PROTOCOL.md).
_FINAL_CODES = frozenset(
    {
        "Arrearage",
        "Throttling.AllocationQuota",
        "AllocationQuota.FreeTierOnly",
        "CommodityNotPurchased",
        "PrepaidBillOverdue",
        "PostpaidBillOverdue",
        "AccessDenied.Unpurchased",
        "Model.AccessDenied",
        "InternalError.Algo.InvalidParameter",
    }
)


def should_retry(error: TongyiError) -> bool:
    """Whether ``error``, raised before any content, deserves another attempt."""
    if isinstance(error, APIError):
        return error.code not in _FINAL_CODES and error.status_code in _RETRYABLE_STATUSES
    return isinstance(error, APIConnectionError)


def retry_delay(attempt: int, headers: Mapping[str, str] | None, jitter: float) -> float:
    """Seconds before attempt ``attempt + 1``: the server's Retry-After, capped, else backoff.

    :param attempt: how many attempts have failed so far, minus one (0 for the first).
    :param jitter: a number in [0, 1): the fraction of the 25 % jitter to add.
    """
    asked = _retry_after(headers) if headers else None
    if asked is not None and asked >= 0:
        return min(asked, MAX_BACKOFF)
    base = min(0.5 * 2.0**attempt, MAX_BACKOFF)
    return base + base * 0.25 * jitter


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms``, else ``Retry-After`` in seconds or as an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return float(millis) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        return float(email.utils.mktime_tz(parsed) - time.time())
