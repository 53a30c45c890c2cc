"""A client-side limiter for DashScope's per-model quota: requests and tokens per minute.

The algorithm is a sliding window counted in ``slots`` sub-windows: a request
is admitted when the requests and tokens of the last ``slots + 1`` sub-windows
(a little more than one window, so it errs on the safe side) leave room for
it; otherwise it waits until the oldest sub-windows expire.  Any window of
``window`` seconds, aligned or sliding, then sees at most the limit, whatever
the server's own window is.  The state lives in a backend: in this process
(:class:`InMemoryRateLimitBackend`, the default) or in Redis
(:class:`~aiotongyi.RedisRateLimitBackend`), shared by every process.

A 429 from the service shrinks the limits of that model by 30 % (at most once
per sub-window) and pauses it for the server's ``Retry-After`` (else one
sub-window); the limits grow back by 10 % of the configured value per window
without a 429.  So a limit set too high still converges to what the account
really has.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from ._exceptions import RateLimitError

if TYPE_CHECKING:
    from ._callinfo import CallInfo

__all__ = [
    "InMemoryRateLimitBackend",
    "RateLimitBackend",
    "RateLimiter",
    "Reservation",
    "admit",
]

SHRINK = 0.7
MIN_FACTOR = 0.2
RECOVERY_PER_WINDOW = 0.1
_BYTES_PER_TOKEN = 3


class RateLimitBackend(Protocol):
    """Where a :class:`RateLimiter` keeps its counts (implement it for another store).

    ``key`` names one model's budget.  ``acquire`` admits a request of
    ``tokens`` tokens and returns its slot (an opaque int for ``adjust``) and
    ``0.0``, or ``None`` and the seconds to wait before asking again.  ``adjust``
    and ``throttle`` may return an awaitable (the limiter schedules it).
    """

    async def acquire(
        self,
        key: str,
        requests_limit: int | None,
        tokens_limit: int | None,
        tokens: int,
        window: float,
        slots: int,
    ) -> tuple[int | None, float]: ...

    def adjust(
        self, key: str, slot: int, tokens_delta: int, window: float, slots: int
    ) -> Awaitable[None] | None: ...

    def throttle(
        self, key: str, pause: float | None, window: float, slots: int
    ) -> Awaitable[None] | None: ...


def admit(
    counts: Sequence[tuple[int, int]],
    requests_limit: float | None,
    tokens_limit: float | None,
    tokens: int,
) -> int:
    """How many of the oldest sub-windows must expire before a request fits (0: it fits now).

    :param counts: (requests, tokens) of the counted sub-windows, oldest first.
    :param tokens: the request's estimate; one larger than the whole limit is
        admitted into an empty window (it could never fit otherwise).
    """
    if tokens_limit is not None:
        tokens = min(tokens, math.floor(tokens_limit))
    used_requests = sum(c[0] for c in counts)
    used_tokens = sum(c[1] for c in counts)
    for expired in range(len(counts) + 1):
        if expired:
            used_requests -= counts[expired - 1][0]
            used_tokens -= counts[expired - 1][1]
        if (requests_limit is None or used_requests + 1 <= requests_limit) and (
            tokens_limit is None or used_tokens + tokens <= tokens_limit
        ):
            return expired
    return len(counts)  # a limit below one request: wait a whole window


def current_factor(factor: float, throttled_at: float, now: float, window: float) -> float:
    """The budget factor after linear recovery since the last 429."""
    if factor >= 1.0:
        return 1.0
    return min(1.0, factor + RECOVERY_PER_WINDOW * (now - throttled_at) / window)


class _Budget:
    __slots__ = ("counts", "factor", "paused_until", "throttled_at")

    def __init__(self) -> None:
        self.counts: dict[int, list[int]] = {}
        self.factor = 1.0
        self.throttled_at = -math.inf
        self.paused_until = 0.0


class InMemoryRateLimitBackend:
    """The budget in this process (shared by the clients and threads that share the limiter)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._budgets: dict[str, _Budget] = {}

    async def acquire(
        self,
        key: str,
        requests_limit: int | None,
        tokens_limit: int | None,
        tokens: int,
        window: float,
        slots: int,
    ) -> tuple[int | None, float]:
        width = window / slots
        with self._lock:
            now = time.monotonic()
            budget = self._budgets.setdefault(key, _Budget())
            if now < budget.paused_until:
                return None, budget.paused_until - now
            slot = math.floor(now / width)
            counts = budget.counts
            for old in [s for s in counts if s < slot - slots]:
                del counts[old]
            window_counts = [
                (c[0], c[1]) for c in (counts.get(s) for s in range(slot - slots, slot + 1)) if c
            ]
            offsets = [s for s in range(slot - slots, slot + 1) if s in counts]
            factor = current_factor(budget.factor, budget.throttled_at, now, window)
            expired = admit(
                window_counts,
                None if requests_limit is None else max(requests_limit * factor, 1),
                None if tokens_limit is None else tokens_limit * factor,
                tokens,
            )
            if expired == 0:
                entry = counts.setdefault(slot, [0, 0])
                entry[0] += 1
                entry[1] += tokens
                return slot, 0.0
            free_at = (offsets[expired - 1] + slots + 1) * width if offsets else now + width
            return None, max(free_at - now, 0.001)

    def adjust(self, key: str, slot: int, tokens_delta: int, window: float, slots: int) -> None:
        with self._lock:
            budget = self._budgets.get(key)
            entry = None if budget is None else budget.counts.get(slot)
            if entry is not None:
                entry[1] = max(entry[1] + tokens_delta, 0)

    def throttle(self, key: str, pause: float | None, window: float, slots: int) -> None:
        width = window / slots
        with self._lock:
            now = time.monotonic()
            budget = self._budgets.setdefault(key, _Budget())
            if now - budget.throttled_at >= width:
                factor = current_factor(budget.factor, budget.throttled_at, now, window)
                budget.factor = max(MIN_FACTOR, factor * SHRINK)
                budget.throttled_at = now
            budget.paused_until = max(budget.paused_until, now + (pause or width))


class Reservation:
    """Capacity held for one request; :meth:`settle` corrects it with the real usage."""

    __slots__ = ("_limiter", "_model", "_slot", "_tokens")

    def __init__(self, limiter: RateLimiter | None, model: str, slot: int, tokens: int) -> None:
        self._limiter = limiter
        self._model = model
        self._slot = slot
        self._tokens = tokens

    def settle(self, tokens: int | None) -> None:
        """Replace the estimate with ``tokens`` used (``None``: keep the estimate; idempotent)."""
        limiter, self._limiter = self._limiter, None
        if limiter is not None and tokens is not None and tokens != self._tokens:
            limiter.schedule(
                limiter.backend.adjust(
                    limiter.key(self._model),
                    self._slot,
                    tokens - self._tokens,
                    limiter.window,
                    limiter.slots,
                )
            )


class RateLimiter:
    """Waits before each request until the model's requests and tokens per minute allow it.

    Give one to ``TongyiLLMClient(rate_limit=...)``; several clients (and, with
    a Redis backend, several processes) may share it.

    :param requests_per_minute: default request budget per model (``None``: no limit).
    :param tokens_per_minute: default token budget per model (``None``: no limit).
    :param models: per-model ``(requests_per_minute, tokens_per_minute)``
        overriding the defaults.
    :param backend: where the counts live; an :class:`InMemoryRateLimitBackend` when ``None``.
    :param max_wait: the longest wait for capacity before :class:`~aiotongyi.RateLimitError`
        (also bounded by the call's total timeout).
    :param output_tokens: the output estimate of a request without ``max_tokens``.
    :param window: the quota window in seconds (DashScope's is a minute).
    :param slots: sub-windows per window (more: finer, costlier).
    :param namespace: prefix of the budget keys (separate accounts sharing a backend).
    :raises ValueError: for a limit below 1 or a bad window, slots or wait.
    """

    def __init__(
        self,
        requests_per_minute: int | None = None,
        tokens_per_minute: int | None = None,
        *,
        models: Mapping[str, tuple[int | None, int | None]] | None = None,
        backend: RateLimitBackend | None = None,
        max_wait: float = 60.0,
        output_tokens: int = 1024,
        window: float = 60.0,
        slots: int = 20,
        namespace: str = "default",
    ) -> None:
        self._defaults = _check_limits("default", (requests_per_minute, tokens_per_minute))
        self._models = {name: _check_limits(name, v) for name, v in (models or {}).items()}
        if not max_wait >= 0:
            raise ValueError(f"max_wait must be >= 0, not {max_wait!r}")
        if not window > 0:
            raise ValueError(f"window must be > 0, not {window!r}")
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ValueError(f"slots must be an integer >= 1, not {slots!r}")
        if isinstance(output_tokens, bool) or not isinstance(output_tokens, int):
            raise ValueError(f"output_tokens must be an integer, not {output_tokens!r}")
        self.backend: RateLimitBackend = backend or InMemoryRateLimitBackend()
        self.max_wait = max_wait
        self.output_tokens = output_tokens
        self.window = window
        self.slots = slots
        self.namespace = namespace
        self._tasks: set[asyncio.Future[None]] = set()
        self._queues: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, asyncio.Lock]
        ] = weakref.WeakKeyDictionary()

    def limits(self, model: str) -> tuple[int | None, int | None]:
        """``(requests_per_minute, tokens_per_minute)`` configured for ``model``."""
        return self._models.get(model, self._defaults)

    def key(self, model: str) -> str:
        """The backend key of ``model``'s budget."""
        return f"{self.namespace}:{model}"

    def estimate(self, call: CallInfo) -> int:
        """Tokens to reserve: the body's UTF-8 size / 3 (one CJK character, or about three
        Latin letters, per token: an overestimate for English) plus ``max_tokens``, else
        ``output_tokens``."""
        max_tokens = call.parameters.get("max_tokens")
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
            max_tokens = self.output_tokens
        return call.body_size // _BYTES_PER_TOKEN + max_tokens

    async def acquire(
        self, model: str, tokens: int, *, max_wait: float | None = None
    ) -> Reservation:
        """Wait until ``model``'s budget admits a request of ``tokens`` tokens.

        :param max_wait: a tighter bound than the limiter's own ``max_wait``.
        :raises RateLimitError: when the wait would exceed the bound.
        """
        requests_limit, tokens_limit = self.limits(model)
        if requests_limit is None and tokens_limit is None:
            return Reservation(None, model, 0, tokens)
        bound = self.max_wait if max_wait is None else min(self.max_wait, max_wait)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + bound
        key = self.key(model)
        # The waiters of one loop queue here, so only the head of the queue asks
        # the backend: no herd of polls at every sub-window boundary.
        locks = self._queues.setdefault(loop, {})
        queue = locks.get(key)
        if queue is None:
            queue = locks[key] = asyncio.Lock()
        try:
            await asyncio.wait_for(queue.acquire(), max(deadline - loop.time(), 0))
        except asyncio.TimeoutError:
            raise self._no_capacity(model, bound) from None
        try:
            while True:
                slot, wait = await self.backend.acquire(
                    key, requests_limit, tokens_limit, tokens, self.window, self.slots
                )
                if slot is not None:
                    return Reservation(self, model, slot, tokens)
                # Other processes wake at the same boundary: spread them a little.
                wait += random.random() * self.window / self.slots / 10
                if loop.time() + wait > deadline:
                    raise self._no_capacity(model, bound)
                await asyncio.sleep(wait)
        finally:
            queue.release()

    @staticmethod
    def _no_capacity(model: str, bound: float) -> RateLimitError:
        return RateLimitError(
            f"the client-side rate limit for {model!r} has no capacity within {bound:g} s",
            status_code=429,
            code="ClientRateLimit",
        )

    def throttled(self, model: str, retry_after: float | None = None) -> None:
        """The service answered 429 for ``model``: shrink its budget for a while."""
        if self.limits(model) != (None, None):
            self.schedule(
                self.backend.throttle(self.key(model), retry_after, self.window, self.slots)
            )

    def schedule(self, pending: Awaitable[None] | None) -> None:
        """Run a backend's awaitable update in the background (``None``: already done)."""
        if pending is not None:
            task = asyncio.ensure_future(pending)
            self._tasks.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._tasks.discard)

    def __repr__(self) -> str:
        return (
            f"RateLimiter(requests_per_minute={self._defaults[0]}, "
            f"tokens_per_minute={self._defaults[1]}, models={self._models!r}, "
            f"backend={type(self.backend).__name__})"
        )


def _check_limits(name: str, limits: object) -> tuple[int | None, int | None]:
    if not isinstance(limits, tuple) or len(limits) != 2:
        raise ValueError(f"limits of {name!r} must be (requests_per_minute, tokens_per_minute)")
    for value in limits:
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"limits of {name!r} must be integers or None, not {value!r}")
        if value is not None and value < 1:
            raise ValueError(f"limits of {name!r} must be >= 1, not {value!r}")
    return limits[0], limits[1]
