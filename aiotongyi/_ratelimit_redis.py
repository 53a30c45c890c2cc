"""The rate limiter's Redis backend: one budget shared by every process (``aiotongyi[redis]``).

Each decision is one Lua script, so it is atomic in Redis, and it reads the
clock with Redis' ``TIME``, so machines with skewed clocks still agree.  The
counts of a model are one hash of sub-window fields that expires when idle;
its adaptive state (the factor a 429 shrinks) is a second hash.
"""

from __future__ import annotations

import asyncio
import logging
import math
import weakref
from collections.abc import AsyncGenerator, Coroutine
from typing import TYPE_CHECKING, Any

from ._ratelimit import MIN_FACTOR, RECOVERY_PER_WINDOW, SHRINK

if TYPE_CHECKING:
    import redis.asyncio

__all__ = ["RedisRateLimitBackend"]

logger = logging.getLogger("aiotongyi")

_MISSING = "the Redis rate-limit backend needs redis-py: pip install 'aiotongyi[redis]'"

_CLOCK = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
"""

_ACQUIRE = (
    _CLOCK
    + """
local rlim = tonumber(ARGV[1])
local tlim = tonumber(ARGV[2])
local tokens = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local width = window / n
local st = redis.call('HMGET', KEYS[2], 'factor', 'at', 'pause')
local factor = tonumber(st[1]) or 1
local at = tonumber(st[2]) or 0
local pause = tonumber(st[3]) or 0
if now < pause then return {-1, math.ceil(pause - now)} end
if factor < 1 then factor = math.min(1, factor + RECOVERY * (now - at) / window) end
local slot = math.floor(now / width)
local lo = tonumber(redis.call('HGET', KEYS[1], 'lo') or slot)
if slot - n - lo > n + 1 then
  redis.call('DEL', KEYS[1])
else
  for j = lo, slot - n - 1 do redis.call('HDEL', KEYS[1], 'r' .. j, 't' .. j) end
end
local fields = {}
for j = slot - n, slot do
  fields[#fields + 1] = 'r' .. j
  fields[#fields + 1] = 't' .. j
end
local v = redis.call('HMGET', KEYS[1], unpack(fields))
local ur, ut = 0, 0
for k = 1, n + 1 do
  ur = ur + (tonumber(v[2 * k - 1]) or 0)
  ut = ut + (tonumber(v[2 * k]) or 0)
end
local rl = math.max(rlim * factor, 1)
local need = tokens
if tlim >= 0 and need > math.floor(tlim * factor) then need = math.floor(tlim * factor) end
for k = 0, n + 1 do
  if k > 0 then
    ur = ur - (tonumber(v[2 * k - 1]) or 0)
    ut = ut - (tonumber(v[2 * k]) or 0)
  end
  if (rlim < 0 or ur + 1 <= rl) and (tlim < 0 or ut + need <= tlim * factor) then
    if k > 0 then return {-1, math.ceil((slot + k) * width - now)} end
    redis.call('HINCRBY', KEYS[1], 'r' .. slot, 1)
    redis.call('HINCRBY', KEYS[1], 't' .. slot, tokens)
    redis.call('HSET', KEYS[1], 'lo', slot - n)
    redis.call('PEXPIRE', KEYS[1], math.ceil(window * 2))
    return {slot, 0}
  end
end
return {-1, math.ceil((slot + n + 2) * width - now)}
"""
).replace("RECOVERY", repr(RECOVERY_PER_WINDOW))

_ADJUST = (
    _CLOCK
    + """
local slot = tonumber(ARGV[1])
local width = tonumber(ARGV[3]) / tonumber(ARGV[4])
if slot < math.floor(now / width) - tonumber(ARGV[4]) then return 0 end
local field = 't' .. slot
local v = tonumber(redis.call('HGET', KEYS[1], field))
if v == nil then return 0 end
redis.call('HSET', KEYS[1], field, math.max(0, v + tonumber(ARGV[2])))
return 1
"""
)

_THROTTLE = (
    (
        _CLOCK
        + """
local pause = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local width = window / tonumber(ARGV[3])
local st = redis.call('HMGET', KEYS[1], 'factor', 'at', 'pause')
local factor = tonumber(st[1]) or 1
local at = tonumber(st[2])
local old = tonumber(st[3]) or 0
if at == nil or now - at >= width then
  if factor < 1 and at ~= nil then
    factor = math.min(1, factor + RECOVERY * (now - at) / window)
  end
  redis.call('HSET', KEYS[1], 'factor', tostring(math.max(MIN_FACTOR, factor * SHRINK)),
    'at', tostring(now))
end
if pause < 0 then pause = width end
redis.call('HSET', KEYS[1], 'pause', tostring(math.max(old, now + pause)))
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 12))
return 1
"""
    )
    .replace("RECOVERY", repr(RECOVERY_PER_WINDOW))
    .replace("MIN_FACTOR", repr(MIN_FACTOR))
    .replace("SHRINK", repr(SHRINK))
)


async def _close_with_loop(client: Any) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await client.aclose()


class RedisRateLimitBackend:
    """A :class:`~aiotongyi.RateLimiter` budget in Redis, shared by every process using it.

    :param url: a Redis URL (``redis://host:port/0``); the backend opens one
        redis-py asyncio client per event loop that uses it (the sync API's
        loop thread included).
    :param client: a ``redis.asyncio.Redis`` to use instead (only on its own loop).
    :param prefix: prefix of the Redis keys.
    :param max_connections: connections per event loop (with ``url``); more
        concurrent decisions wait for one.
    :raises ImportError: without redis-py (``aiotongyi[redis]``).
    :raises ValueError: when neither or both of ``url`` and ``client`` are given.

    When Redis cannot be reached, requests are let through (logged as a
    warning): the limiter never turns a Redis outage into failed calls.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        client: redis.asyncio.Redis | None = None,
        prefix: str = "aiotongyi:ratelimit:",
        max_connections: int = 16,
    ) -> None:
        try:
            import redis.asyncio  # noqa: F401 (fail at construction, not at the first call)
        except ImportError as exc:
            raise ImportError(_MISSING) from exc
        if (url is None) == (client is None):
            raise ValueError("give RedisRateLimitBackend either url= or client=")
        self._url = url
        self._client = client
        self._prefix = prefix
        self._max_connections = max_connections
        self._pending: set[asyncio.Future[None]] = set()
        self._clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[Any, AsyncGenerator[None, None]]
        ] = weakref.WeakKeyDictionary()

    async def _redis(self) -> Any:
        if self._client is not None:
            return self._client
        import redis.asyncio

        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            assert self._url is not None
            # Many concurrent calls queue for a few connections instead of
            # failing with "Too many connections".
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                self._url, max_connections=self._max_connections, timeout=None
            )
            client = redis.asyncio.Redis.from_pool(pool)
            # Finalised by loop.shutdown_asyncgens(), as asyncio.run and anyio
            # call it: a loop that ends (the sync API's thread) closes its client.
            guard = _close_with_loop(client)
            await guard.__anext__()
            entry = self._clients[loop] = (client, guard)
        return entry[0]

    def _keys(self, key: str) -> list[str]:
        # One hash tag per budget: both keys live on the same cluster node.
        return [f"{self._prefix}{{{key}}}:counts", f"{self._prefix}{{{key}}}:state"]

    async def _eval(self, script: str, keys: list[str], *args: float) -> Any:
        import redis

        try:
            return await (await self._redis()).eval(script, len(keys), *keys, *args)
        except redis.RedisError as exc:
            logger.warning("the Redis rate limiter is unreachable, letting a request pass: %s", exc)
            return None

    async def acquire(
        self,
        key: str,
        requests_limit: int | None,
        tokens_limit: int | None,
        tokens: int,
        window: float,
        slots: int,
    ) -> tuple[int | None, float]:
        """Admit a request of ``tokens`` or say how long to wait (one atomic script)."""
        reply = await self._eval(
            _ACQUIRE,
            self._keys(key),
            -1 if requests_limit is None else requests_limit,
            -1 if tokens_limit is None else tokens_limit,
            tokens,
            window * 1000,
            slots,
        )
        if reply is None:
            return -1, 0.0
        slot, wait_ms = int(reply[0]), int(reply[1])
        if slot >= 0:
            return slot, 0.0
        return None, max(wait_ms, 1) / 1000

    async def _adjust(self, key: str, slot: int, delta: int, window: float, slots: int) -> None:
        await self._eval(_ADJUST, self._keys(key)[:1], slot, delta, window * 1000, slots)

    def adjust(
        self, key: str, slot: int, tokens_delta: int, window: float, slots: int
    ) -> asyncio.Future[None] | None:
        """Correct a reservation's tokens (in the background)."""
        if slot < 0:
            return None
        return self._track(self._adjust(key, slot, tokens_delta, window, slots))

    async def _throttle(self, key: str, pause: float | None, window: float, slots: int) -> None:
        pause_ms = -1 if pause is None else max(math.ceil(pause * 1000), 0)
        await self._eval(_THROTTLE, self._keys(key)[1:], pause_ms, window * 1000, slots)

    def throttle(
        self, key: str, pause: float | None, window: float, slots: int
    ) -> asyncio.Future[None]:
        """Shrink the shared budget after a 429 (in the background)."""
        return self._track(self._throttle(key, pause, window, slots))

    def _track(self, update: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(update)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def aclose(self) -> None:
        """Finish the pending updates of this loop, then close the client this backend
        opened on it (call it on each loop that used it)."""
        loop = asyncio.get_running_loop()
        pending = [task for task in self._pending if task.get_loop() is loop]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        entry = self._clients.pop(loop, None)
        if entry is not None:
            await entry[1].aclose()

    def __repr__(self) -> str:
        return f"RedisRateLimitBackend(prefix={self._prefix!r})"
