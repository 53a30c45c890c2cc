"""``TongyiLLMClient``: the async API, the sync bridge and the connection pools behind them."""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import weakref
from collections.abc import Generator, Mapping, Sequence
from concurrent.futures import Executor
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp

from ._config import (
    DEFAULT_MODEL,
    check_header_value,
    mask_key,
    proxy_from_environment,
    resolve_api_key,
    resolve_base_url,
    user_agent,
)
from ._exceptions import APIConnectionError, AuthenticationError
from ._hooks import CallObserver, Hooks, observer_factory
from ._models import ModelOutput, Timeout
from ._ratelimit import RateLimiter
from ._request import GenerateParams, PreparedRequest, RequestLike, prepare_request
from ._stream import Stream
from ._sync import LoopThread, Prefetcher
from ._transport import Pool

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["TongyiLLMClient"]

logger = logging.getLogger("aiotongyi")

# Clients not closed yet, so that exit can release pools on idle loops (a
# script that used loop.run_until_complete and never closed anything).
_open_clients: weakref.WeakSet[TongyiLLMClient] = weakref.WeakSet()


@atexit.register
def _release_open_clients() -> None:
    for client in list(_open_clients):
        client._release_at_exit()


_MISSING_KEY = (
    "no DashScope API key: pass api_key= or set the DASHSCOPE_API_KEY environment variable"
)


class TongyiLLMClient:
    """An asyncio client for DashScope's native streaming chat API.

    The first six parameters keep the order of DB-GPT's original Tongyi
    client; the rest are keyword-only.

    :param model: default model (``"qwen-turbo"`` when ``None``).
    :param api_key: else the ``DASHSCOPE_API_KEY`` environment variable.
    :param api_region: ``"cn-beijing"``, ``"ap-southeast-1"`` (alias ``"intl"``),
        ``"us-east-1"`` or ``"cn-hongkong"``.
    :param model_alias: a name that means "the default model" in requests.
    :param context_length: reported to frameworks; not enforced.
    :param executor: where the sync bridge's loop thread runs (it holds one
        worker until :meth:`close`); a private daemon thread when ``None``.
    :param base_url: ``.../api/v1`` of any other endpoint (beats ``api_region``).
    :param timeout: a :class:`Timeout`, a number (total seconds) or ``None``.
    :param max_retries: retries before the first content frame only.
    :param session: a caller-owned ``aiohttp.ClientSession`` (never closed here,
        usable only on its own loop).
    :param headers: extra HTTP headers for every request.
    :param proxy: an explicit HTTP(S) proxy URL; else the usual proxy variables.
    :param max_connections: connection pool size per event loop.
    :param telemetry: OpenTelemetry spans and metrics (``aiotongyi[otel]``):
        ``None`` reads ``AIOTONGYI_TELEMETRY`` (``1``/``true``).
    :param tracer_provider: instead of the global tracer provider.
    :param meter_provider: instead of the global meter provider.
    :param rate_limit: a :class:`RateLimiter` (may be shared by several clients).
    :param hooks: a :class:`Hooks` or a sequence of them, called for every call.
    :raises ValueError: for an unknown region, a compatible-mode URL or bad values.
    """

    def __init__(
        self,
        model: str | None = None,
        api_key: str | None = None,
        api_region: str | None = None,
        model_alias: str | None = "tongyi_proxyllm",
        context_length: int | None = 4096,
        executor: Executor | None = None,
        *,
        base_url: str | None = None,
        timeout: Timeout | float | None = None,
        max_retries: int = 2,
        session: aiohttp.ClientSession | None = None,
        headers: Mapping[str, str] | None = None,
        proxy: str | None = None,
        max_connections: int = 1000,
        # -- telemetry, hooks and rate limits (issue 19) --
        telemetry: bool | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        rate_limit: RateLimiter | None = None,
        hooks: Hooks | Sequence[Hooks] | None = None,
    ) -> None:
        if model is not None and not isinstance(model, str):
            raise ValueError(f"model must be a string, not {type(model).__name__}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an integer >= 0, not {max_retries!r}")
        if (
            isinstance(max_connections, bool)
            or not isinstance(max_connections, int)
            or max_connections < 1
        ):
            raise ValueError(f"max_connections must be an integer >= 1, not {max_connections!r}")
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise ValueError("session must be an aiohttp.ClientSession")
        self._model = model or DEFAULT_MODEL
        self.model_alias = model_alias
        self.context_length = 4096 if context_length is None else context_length
        self.executor = executor
        self.api_region = api_region if base_url is None else None
        self._base_url = resolve_base_url(base_url, api_region)
        self._api_key = resolve_api_key(api_key)
        self.timeout = Timeout.coerce(timeout)
        self.max_retries = max_retries
        self.max_connections = max_connections
        if proxy is not None:
            check_header_value("proxy", proxy)
        self._proxy = proxy if proxy is not None else proxy_from_environment(self._base_url)
        self._headers = self._build_headers(headers)
        self._session = session
        self._pools: dict[asyncio.AbstractEventLoop, Pool] = {}
        self._pools_lock = threading.Lock()
        self._loop_thread = LoopThread(executor)
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        # -- telemetry, hooks and rate limits (issue 19): None when nothing observes calls --
        self._observe = observer_factory(
            base_url=self._base_url,
            hooks=hooks,
            telemetry=telemetry,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            rate_limit=rate_limit,
        )
        _open_clients.add(self)

    def _build_headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "X-DashScope-SSE": "enable",
            "User-Agent": user_agent(),
        }
        for name, value in (extra or {}).items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise ValueError("headers must map str to str")
            check_header_value(f"header name {name!r}", name)
            check_header_value(f"header {name!r}", value)
            headers[name] = value
        if self._api_key is not None:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    # -- properties -------------------------------------------------------------

    @property
    def default_model(self) -> str:
        """The DashScope model sent when a request names none (or names the alias)."""
        return self._model

    @property
    def base_url(self) -> str:
        """The resolved ``.../api/v1`` base URL."""
        return self._base_url

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`aclose` or :meth:`close` has been called."""
        return self._closed

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self._model!r}, api_region={self.api_region!r}, "
            f"base_url={self._base_url!r}, api_key={mask_key(self._api_key)})"
        )

    @classmethod
    def new_client(
        cls, model_params: Any, default_executor: Executor | None = None
    ) -> TongyiLLMClient:
        """Build a client from DB-GPT-style model parameters (the seed's factory).

        Reads ``proxyllm_backend``, ``proxy_api_key``, ``proxy_api_region``,
        ``model_name``, ``max_context_size`` and ``proxy_api_base`` when present.
        """

        def read(name: str) -> Any:
            return getattr(model_params, name, None)

        return cls(
            model=read("proxyllm_backend"),
            api_key=read("proxy_api_key"),
            api_region=read("proxy_api_region"),
            model_alias=read("model_name") or "tongyi_proxyllm",
            context_length=read("max_context_size") or 4096,
            executor=default_executor,
            base_url=read("proxy_api_base"),
        )

    # -- async API --------------------------------------------------------------

    def generate_stream(self, request: RequestLike, **params: Unpack[GenerateParams]) -> Stream:
        """Stream a chat answer: ``async with client.generate_stream(...) as s: async for ...``.

        :param request: a :class:`ModelRequest`, a prompt, a list of messages or
            an object with ``to_common_messages()``.
        :param params: generation parameters; ``None`` values are not sent.
        :raises ValueError: for bad parameters or messages (nothing is sent).
        :raises AuthenticationError: when no API key is configured.
        :raises RuntimeError: when the client is closed.
        """
        prepared = self._prepare(request, params)
        return Stream(self, prepared, None if self._observe is None else self._observe(prepared))

    async def generate(self, request: RequestLike, **params: Unpack[GenerateParams]) -> ModelOutput:
        """The final :class:`ModelOutput` of a call (streamed on the wire underneath)."""
        last: ModelOutput | None = None
        async with self.generate_stream(request, **params) as stream:
            async for output in stream:
                last = output
        assert last is not None  # a complete stream always ends with a finish frame
        return last

    async def generate_json(self, request: RequestLike, **params: Unpack[GenerateParams]) -> object:
        """The answer parsed as JSON; asks for ``response_format={"type": "json_object"}``
        unless another ``response_format`` is given.

        DashScope's JSON mode needs the word "json" somewhere in the messages.

        :raises JSONOutputError: when the answer is not valid JSON (``partial`` holds it).
        """
        if params.get("response_format") is None:
            params["response_format"] = {"type": "json_object"}
        output = await self.generate(request, **params)
        return output.parse_json()

    async def aclose(self) -> None:
        """Close every connection pool and stop the sync bridge's thread (idempotent)."""
        self._closed = True
        running = asyncio.get_running_loop()
        for pool in self._take_pools():
            if pool.loop.is_closed():
                pool.close_dead()
            elif pool.loop is running:
                await pool.aclose()
            elif pool.loop.is_running():
                closing = asyncio.run_coroutine_threadsafe(pool.aclose(), pool.loop)
                await asyncio.wrap_future(closing)
            else:  # an idle loop cannot be run from inside this one: close it at exit
                with self._pools_lock:
                    self._pools[pool.loop] = pool
        if not self._pools:
            _open_clients.discard(self)
        if self._loop_thread.is_running:
            await asyncio.get_running_loop().run_in_executor(None, self._loop_thread.stop)

    async def __aenter__(self) -> TongyiLLMClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- sync API ---------------------------------------------------------------

    def sync_generate_stream(
        self, request: RequestLike, **params: Unpack[GenerateParams]
    ) -> Generator[ModelOutput, None, None]:
        """Stream a chat answer from synchronous code (any thread).

        Returns a plain generator; closing it (or leaving a ``for`` loop and
        dropping it) closes the HTTP response.  Raises the same errors as
        :meth:`generate_stream`.
        """
        self._check_sync_use()
        prepared = self._prepare(request, params)
        return self._iterate_sync(prepared)

    def sync_generate(self, request: RequestLike, **params: Unpack[GenerateParams]) -> ModelOutput:
        """The final :class:`ModelOutput` of a call, from synchronous code."""
        self._check_sync_use()
        last: ModelOutput | None = None
        for last in self._iterate_sync(self._prepare(request, params)):  # noqa: B007
            pass
        assert last is not None  # a complete stream always ends with a finish frame
        return last

    def close(self) -> None:
        """Close every connection pool and stop the loop thread (idempotent)."""
        self._closed = True
        _open_clients.discard(self)
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for pool in self._take_pools():
            if pool.loop.is_closed():
                pool.close_dead()
            elif pool.loop is running:
                # Inside a coroutine we cannot wait: let that loop finish the job.
                task = pool.loop.create_task(pool.aclose())
                self._closing.add(task)  # the loop keeps only a weak reference
                task.add_done_callback(self._closing.discard)
            elif pool.loop.is_running():
                asyncio.run_coroutine_threadsafe(pool.aclose(), pool.loop).result(timeout=10)
            elif running is None:  # an idle loop (loop.run_until_complete scripts)
                pool.loop.run_until_complete(pool.aclose())
        self._loop_thread.stop(timeout=10)

    def __enter__(self) -> TongyiLLMClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals --------------------------------------------------------------

    def _prepare(self, request: RequestLike, params: Mapping[str, Any]) -> PreparedRequest:
        if self._closed:
            raise RuntimeError("this TongyiLLMClient is closed; create a new one")
        prepared = prepare_request(
            request, params, default_model=self._model, model_alias=self.model_alias
        )
        if self._api_key is None:
            raise AuthenticationError(_MISSING_KEY, status_code=401, code="MissingApiKey")
        return prepared

    def _url(self, path: str) -> str:
        return self._base_url + path

    def _check_sync_use(self) -> None:
        if self._session is not None:
            raise RuntimeError(
                "a client given session= can only be used on that session's event loop; "
                "the sync API runs on the client's own loop thread"
            )
        if self._loop_thread.in_loop_thread():
            raise RuntimeError("the sync API cannot be called from the client's own loop thread")

    def _iterate_sync(self, prepared: PreparedRequest) -> Generator[ModelOutput, None, None]:
        portal = self._loop_thread.portal()
        # The observer is made here: it captures this thread's context (the span's parent).
        observer = None if self._observe is None else self._observe(prepared)
        stream: Stream = portal.call(self._open_stream, prepared, observer)
        assert self._loop_thread.loop is not None
        prefetcher = Prefetcher(self._loop_thread.loop, stream._iter_batches())
        try:
            yield from prefetcher
        finally:
            # On break, close(), KeyboardInterrupt or garbage collection alike.
            if not self._loop_thread.in_loop_thread():
                prefetcher.close()

    async def _open_stream(
        self, prepared: PreparedRequest, observer: CallObserver | None = None
    ) -> Stream:
        return Stream(self, prepared, observer)

    async def _acquire_pool(self) -> Pool:
        """This loop's pool, created on first use; the caller's session if one was given."""
        if self._closed:
            raise APIConnectionError("the client was closed before the stream started")
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is not None and not pool.is_closed:
            return pool
        if self._session is not None:
            if getattr(self._session, "_loop", loop) is not loop:
                raise RuntimeError(
                    "the session= given to this client belongs to another event loop"
                )
            pool = Pool(loop, self._session, owns_session=False, on_closed=self._forget_pool)
        else:
            self._close_dead_pools()
            pool = await Pool.create(self.max_connections, self._forget_pool)
        with self._pools_lock:
            self._pools[loop] = pool
        return pool

    def _close_dead_pools(self) -> None:
        with self._pools_lock:
            dead = [pool for pool in self._pools.values() if pool.loop.is_closed()]
        for pool in dead:
            pool.close_dead()
            self._forget_pool(pool)

    def _release_at_exit(self) -> None:
        """Interpreter exit: close pools on loops that are idle or already closed."""
        for pool in self._take_pools():
            if pool.loop.is_closed():
                pool.close_dead()
            elif not pool.loop.is_running():
                try:
                    pool.loop.run_until_complete(pool.aclose())
                except Exception:  # exiting anyway; never print a traceback here
                    logger.debug("closing a pool at exit failed", exc_info=True)

    def _forget_pool(self, pool: Pool) -> None:
        with self._pools_lock:
            if self._pools.get(pool.loop) is pool:
                del self._pools[pool.loop]

    def _take_pools(self) -> list[Pool]:
        with self._pools_lock:
            pools = list(self._pools.values())
            self._pools.clear()
        return pools
