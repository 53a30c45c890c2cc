"""The retry policy: which failures are worth another attempt, and how long to wait (pure).

Waits follow ``min(0.5 * 2**attempt, 8)`` s plus up to 25 % jitter, or the
server's ``Retry-After``/``retry-after-ms`` when it asks for a positive wait;
no wait is ever shorter than :data:`MIN_DELAY` (a ``Retry-After: 0`` storm
would otherwise become a busy loop).  A server that asks for more than
:data:`MAX_BACKOFF` is not retried at all: retrying sooner than it asked
would only meet the same 429, so the caller gets the error (with its
``headers``) at once and can decide when to call again.
"""

from __future__ import annotations

import copy
import email.utils
import math
import time
from collections.abc import Mapping

from ._exceptions import APIConnectionError, APIError, TongyiError

__all__ = ["MAX_BACKOFF", "MIN_DELAY", "RetryPolicy", "retry_after", "retry_delay", "should_retry"]

#: The longest wait between attempts; a longer Retry-After is not retried.
MAX_BACKOFF = 8.0
#: The shortest wait between attempts, whatever the server says.
MIN_DELAY = 0.1
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
        if error.code in _FINAL_CODES or error.status_code not in _RETRYABLE_STATUSES:
            return False
        asked = retry_after(error.headers) if error.headers else None
        return asked is None or asked <= MAX_BACKOFF
    return isinstance(error, APIConnectionError)


def retry_delay(attempt: int, headers: Mapping[str, str] | None, jitter: float) -> float:
    """Seconds before attempt ``attempt + 1``: the server's positive Retry-After, else backoff.

    Never less than :data:`MIN_DELAY` nor more than :data:`MAX_BACKOFF` (a
    longer Retry-After makes :func:`should_retry` decline instead).

    :param attempt: how many attempts have failed so far, minus one (0 for the first).
    :param jitter: a number in [0, 1): the fraction of the 25 % jitter to add.
    """
    asked = retry_after(headers) if headers else None
    if asked is not None and asked > 0:  # 0 or a past date: no advice, back off as usual
        return min(max(asked, MIN_DELAY), MAX_BACKOFF)
    base = min(0.5 * 2.0**attempt, MAX_BACKOFF)
    return max(base + base * 0.25 * jitter, MIN_DELAY)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """``retry-after-ms``, else ``Retry-After`` in seconds or as an HTTP date."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            delay = float(millis) / 1000
        except ValueError:
            pass
        else:
            if math.isfinite(delay):
                return delay
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = email.utils.parsedate_tz(value)
            if parsed is None:
                return None
            return float(email.utils.mktime_tz(parsed) - time.time())
        except (ValueError, OverflowError):  # a date no calendar has
            return None
    return seconds if math.isfinite(seconds) else None


class RetryPolicy:
    """When a call is tried again, and how long it waits first (before any content only).

    Subclass it and override :meth:`delay` or :meth:`should_retry` to change the
    backoff or what is retried (also the seam tests use to skip the waits).

    :param max_retries: attempts after the first one.
    """

    def __init__(self, max_retries: int = 2) -> None:
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, not {max_retries!r}")
        self.max_retries = max_retries

    def should_retry(self, error: TongyiError) -> bool:
        """Whether ``error``, raised before any content, deserves another attempt."""
        return should_retry(error)

    def delay(self, attempt: int, headers: Mapping[str, str] | None, jitter: float) -> float:
        """Seconds to wait before attempt ``attempt + 2`` (``attempt`` counts failures from 0)."""
        return retry_delay(attempt, headers, jitter)

    def with_max_retries(self, max_retries: int) -> RetryPolicy:
        """A copy with another ``max_retries`` (same class, same behaviour)."""
        clone = copy.copy(self)
        clone.max_retries = RetryPolicy(max_retries).max_retries
        return clone

    def __repr__(self) -> str:
        return f"{type(self).__name__}(max_retries={self.max_retries})"
