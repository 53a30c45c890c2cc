"""``TongyiLLMClient``: the public calls and their validation; resources live in ``_lifecycle``."""

from __future__ import annotations

import weakref
from collections.abc import Generator, Mapping, Sequence
from concurrent.futures import Executor
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import aiohttp

from . import _embed_call
from ._config import (
    DEFAULT_MODEL,
    WORKSPACE_HEADER,
    check_header_name,
    check_header_value,
    check_proxy_url,
    mask_key,
    proxy_from_environment,
    resolve_api_key,
    resolve_base_url,
    resolve_workspace,
    user_agent,
)
from ._context import CallContext, CallOptions
from ._embeddings import EmbeddingResult, RerankResult
from ._exceptions import AuthenticationError
from ._hooks import Hooks
from ._lifecycle import ClientState, Resources
from ._models import ModelOutput, Timeout
from ._observe import observer_factory
from ._ratelimit import RateLimiter
from ._request import PreparedRequest, RequestLike, prepare_request
from ._retry import RetryPolicy
from ._sessions import SessionRegistry
from ._stream import Stream
from ._sync import LoopThread, pump
from ._transport import SecretHeaders

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ._context import CallParams

__all__ = ["TongyiLLMClient"]

_T = TypeVar("_T")

_MISSING_KEY = (
    "no DashScope API key: pass api_key= or set the DASHSCOPE_API_KEY environment variable"
)
_CALL_OPTIONS = frozenset(CallOptions.__annotations__)


class TongyiLLMClient:
    """An asyncio client for DashScope's native streaming chat API.

    The first six parameters keep the order of DB-GPT's original Tongyi
    client; the rest are keyword-only.  Close it (``async with``, ``with``,
    :meth:`aclose`, :meth:`close`); one that becomes garbage unclosed releases
    its connections and thread itself, with a ``ResourceWarning``.

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
    :param retry_policy: a :class:`RetryPolicy` (its ``max_retries`` is replaced by
        ``max_retries``); subclass it to change backoff or what is retried.
    :param session: a caller-owned ``aiohttp.ClientSession`` (never closed here,
        usable only on its own loop).
    :param headers: extra HTTP headers for every request.
    :param proxy: an explicit HTTP(S) proxy URL; else the usual proxy variables.
    :param max_connections: connection pool size per event loop.
    :param workspace: a DashScope workspace id (else ``DASHSCOPE_WORKSPACE``).
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
        retry_policy: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        headers: Mapping[str, str] | None = None,
        proxy: str | None = None,
        max_connections: int = 1000,
        workspace: str | None = None,
        telemetry: bool | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        rate_limit: RateLimiter | None = None,
        hooks: Hooks | Sequence[Hooks] | None = None,
    ) -> None:
        if model is not None and not isinstance(model, str):
            raise ValueError(f"model must be a string, not {type(model).__name__}")
        if not _is_int(max_connections) or max_connections < 1:
            raise ValueError(f"max_connections must be an integer >= 1, not {max_connections!r}")
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise ValueError("session must be an aiohttp.ClientSession")
        self._model = model or DEFAULT_MODEL
        self.model_alias = model_alias
        self.context_length = 4096 if context_length is None else context_length
        self.executor = executor
        self.api_region = api_region if base_url is None else None
        self.max_connections = max_connections
        self._session = session
        self._resources = Resources(SessionRegistry(max_connections, session), LoopThread(executor))
        self._parent: TongyiLLMClient | None = None
        resolved_base_url = resolve_base_url(base_url, api_region)
        # None when nothing observes calls: then no hook code runs at all.
        self._observe = observer_factory(
            base_url=resolved_base_url,
            hooks=hooks,
            telemetry=telemetry,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            rate_limit=rate_limit,
        )
        self._configure(
            base_url=resolved_base_url,
            api_key=resolve_api_key(api_key),
            timeout=timeout,
            max_retries=max_retries,
            retry_policy=retry_policy or RetryPolicy(),
            headers=headers,
            proxy=proxy,
            workspace=resolve_workspace(workspace),
        )
        weakref.finalize(self, self._resources.release, repr(self))

    def _configure(
        self,
        *,
        base_url: str,
        api_key: str | None,
        timeout: Timeout | float | None,
        max_retries: int,
        retry_policy: RetryPolicy,
        headers: Mapping[str, str] | None,
        proxy: str | None,
        workspace: str | None,
    ) -> None:
        if proxy is not None:
            proxy = check_proxy_url(proxy)
        self._base_url = base_url
        self._api_key = api_key
        self.timeout = Timeout.coerce(timeout)
        self._retry = retry_policy.with_max_retries(max_retries)
        self._extra_headers = dict(headers or {})
        self._proxy = proxy if proxy is not None else proxy_from_environment(base_url)
        self._workspace = workspace or None
        self._context = CallContext(
            base_url=base_url,
            headers=_build_headers(api_key, headers, workspace),
            proxy=self._proxy,
            timeout=self.timeout,
            retry=self._retry,
            sessions=self._resources.sessions,
            owner=self,
            observe=self._observe,
        )

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
    def max_retries(self) -> int:
        """Retries before the first content frame."""
        return self._retry.max_retries

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`aclose` or :meth:`close` has been called (here or on the parent)."""
        return self._resources.state is not ClientState.OPEN

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

    def with_options(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: Timeout | float | None = None,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        proxy: str | None = None,
        workspace: str | None = None,
        session: aiohttp.ClientSession | None = None,
        max_connections: int | None = None,
        telemetry: bool | None = None,
        tracer_provider: Any = None,
        meter_provider: Any = None,
        rate_limit: RateLimiter | None = None,
        hooks: Hooks | Sequence[Hooks] | None = None,
    ) -> TongyiLLMClient:
        """A sibling client with some settings changed, sharing this one's connections.

        Takes the constructor's keyword-only settings and ``api_key``. The
        sibling uses the same connection pools and loop thread; closing this
        client (the parent) closes it too, and it keeps the parent alive.
        ``headers`` merge over the parent's. When any of ``telemetry``,
        ``tracer_provider``, ``meter_provider``, ``rate_limit`` or ``hooks`` is
        given, they replace the parent's observers (else the sibling shares them).

        :raises ValueError: for ``session`` or ``max_connections``, which belong to
            the shared pools (create a new client to change them), or bad values.
        """
        if session is not None or max_connections is not None:
            raise ValueError(
                "a sibling shares its parent's connection pools: session= and "
                "max_connections= need a new TongyiLLMClient"
            )
        sibling = object.__new__(type(self))
        sibling.__dict__.update(self.__dict__)
        sibling._parent = self._parent or self
        observing = (telemetry, tracer_provider, meter_provider, rate_limit, hooks)
        if any(value is not None for value in observing):
            sibling._observe = observer_factory(
                base_url=self._base_url if base_url is None else resolve_base_url(base_url, None),
                hooks=hooks,
                telemetry=telemetry,
                tracer_provider=tracer_provider,
                meter_provider=meter_provider,
                rate_limit=rate_limit,
            )
        sibling._configure(
            base_url=self._base_url if base_url is None else resolve_base_url(base_url, None),
            api_key=self._api_key if api_key is None else resolve_api_key(api_key),
            timeout=self.timeout if timeout is None else timeout,
            max_retries=self.max_retries if max_retries is None else max_retries,
            retry_policy=retry_policy or self._retry,
            headers={**self._extra_headers, **(headers or {})},
            proxy=self._proxy if proxy is None else proxy,
            workspace=self._workspace if workspace is None else resolve_workspace(workspace),
        )
        return sibling

    # -- async API --------------------------------------------------------------

    def generate_stream(self, request: RequestLike, **params: Unpack[CallParams]) -> Stream:
        """Stream a chat answer: ``async with client.generate_stream(...) as s: async for ...``.

        :param request: a :class:`ModelRequest`, a prompt, a list of messages or
            an object with ``to_common_messages()``.
        :param params: generation parameters (``None`` values are not sent) and the
            per-call options ``headers``, ``api_key``, ``max_retries``, ``workspace``
            and ``timeout``.
        :raises ValueError: for bad parameters or messages (nothing is sent).
        :raises AuthenticationError: when no API key is configured.
        :raises RuntimeError: when the client is closed.
        """
        context, prepared = self._prepare(request, params)
        observe = context.observe
        return Stream(context, prepared, None if observe is None else observe(prepared))

    async def generate(self, request: RequestLike, **params: Unpack[CallParams]) -> ModelOutput:
        """The final :class:`ModelOutput` of a call (streamed on the wire underneath)."""
        return await self.generate_stream(request, **params).final()

    @overload
    async def generate_json(
        self, request: RequestLike, *, schema: None = None, **params: Unpack[CallParams]
    ) -> object: ...
    @overload
    async def generate_json(
        self, request: RequestLike, *, schema: type[_T], **params: Unpack[CallParams]
    ) -> _T: ...
    async def generate_json(
        self, request: RequestLike, *, schema: Any = None, **params: Unpack[CallParams]
    ) -> Any:
        """The answer parsed as JSON, or as an instance of ``schema``.

        Without ``schema`` asks for ``response_format={"type": "json_object"}``
        (DashScope then needs the word "json" in the messages); with a pydantic
        model class, a dataclass or a ``TypedDict`` it sends the type's JSON
        Schema (``"json_schema"``) and converts the answer.  An explicit
        ``response_format`` is sent as given.

        :raises JSONOutputError: when the answer is not JSON or does not fit
            ``schema`` (``text`` and ``errors`` say how).
        :raises ValueError: when ``schema`` is not one of the types above.
        """
        from ._structured import json_params, parse_output

        output = await self.generate(request, **json_params(params, schema))
        return parse_output(output, schema)

    async def aclose(self) -> None:
        """Close every connection pool and stop the sync bridge's thread (idempotent).

        Calls still running end with ``APIConnectionError`` (before content) or
        ``StreamInterruptedError`` (after).
        """
        await self._resources.aclose()

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
        self, request: RequestLike, **params: Unpack[CallParams]
    ) -> Generator[ModelOutput, None, None]:
        """Stream a chat answer from synchronous code (any thread).

        Returns a plain generator; closing it (or leaving a ``for`` loop and
        dropping it) closes the HTTP response.  Raises the same errors as
        :meth:`generate_stream`.
        """
        self._check_sync_use()
        context, prepared = self._prepare(request, params)
        # Made here, in the calling thread: it captures this thread's context (the span's parent).
        observer = None if context.observe is None else context.observe(prepared)
        return pump(self._resources.loop_thread, lambda: Stream(context, prepared, observer))

    def sync_generate(self, request: RequestLike, **params: Unpack[CallParams]) -> ModelOutput:
        """The final :class:`ModelOutput` of a call, from synchronous code."""
        last: ModelOutput | None = None
        for last in self.sync_generate_stream(request, **params):  # noqa: B007
            pass
        assert last is not None  # a complete stream always ends with a finish frame
        return last

    @overload
    def sync_generate_json(
        self, request: RequestLike, *, schema: None = None, **params: Unpack[CallParams]
    ) -> object: ...
    @overload
    def sync_generate_json(
        self, request: RequestLike, *, schema: type[_T], **params: Unpack[CallParams]
    ) -> _T: ...
    def sync_generate_json(
        self, request: RequestLike, *, schema: Any = None, **params: Unpack[CallParams]
    ) -> Any:
        """:meth:`generate_json` from synchronous code."""
        from ._structured import json_params, parse_output

        output = self.sync_generate(request, **json_params(params, schema))
        return parse_output(output, schema)

    def close(self) -> None:
        """Close every connection pool and stop the loop thread (idempotent)."""
        self._resources.close()

    def __enter__(self) -> TongyiLLMClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- embeddings and rerank (the logic lives in _embed_call) ----------------

    async def embed(
        self,
        texts: str | Sequence[str],
        *,
        model: str | None = None,
        dimension: int | None = None,
        text_type: str | None = None,
        output_type: str | None = None,
        instruct: str | None = None,
        timeout: Timeout | float | None = None,
    ) -> EmbeddingResult:
        """Embed one text or many: one vector per text, in input order.

        Inputs over the model's per-request limit (10 texts for v3/v4, 25 for
        v1/v2) are split and the parts sent concurrently; failed parts are
        retried like chat requests.  See ``docs/embeddings.md``.

        :param texts: a str or a sequence of non-empty str.
        :param model: default ``"text-embedding-v4"``.
        :param dimension: vector size (v3/v4; checked against known models).
        :param text_type: ``"query"`` or ``"document"`` (the service's default).
        :param output_type: ``"dense"``, ``"sparse"`` or ``"dense&sparse"`` (v3/v4).
        :param instruct: a task instruction (v4, English).
        :param timeout: for the whole call, all parts and retries included.
        :raises ValueError: for bad texts or parameters (nothing is sent).
        :raises TongyiError: when a part fails; ``failed_inputs`` lists its texts.
        :raises RuntimeError: when the client is closed.
        """
        return await _embed_call.embed(
            self._json_context(),
            texts,
            model=model,
            dimension=dimension,
            text_type=text_type,
            output_type=output_type,
            instruct=instruct,
            timeout=timeout,
        )

    async def rerank(
        self,
        query: str,
        documents: str | Sequence[str],
        *,
        model: str | None = None,
        top_n: int | None = None,
        return_documents: bool | None = None,
        instruct: str | None = None,
        timeout: Timeout | float | None = None,
    ) -> RerankResult:
        """Rank documents by relevance to a query, best first.

        Documents over the model's per-request limits (count and estimated
        tokens) are split, ranked concurrently and merged by score: the same
        order and scores as one request; ``top_n`` applies to the merged list.

        :param query: a non-empty str.
        :param documents: a str or a sequence of non-empty str.
        :param model: default ``"gte-rerank-v2"``.
        :param top_n: keep the best ``top_n`` (>= 1); all when ``None``.
        :param return_documents: include each document's text in its item.
        :param instruct: a task instruction (qwen3-rerank, English).
        :param timeout: for the whole call, all parts and retries included.
        :raises ValueError: for bad inputs (nothing is sent).
        :raises TongyiError: when a part fails; ``failed_inputs`` lists its documents.
        :raises RuntimeError: when the client is closed.
        """
        return await _embed_call.rerank(
            self._json_context(),
            query,
            documents,
            model=model,
            top_n=top_n,
            return_documents=return_documents,
            instruct=instruct,
            timeout=timeout,
        )

    def sync_embed(
        self,
        texts: str | Sequence[str],
        *,
        model: str | None = None,
        dimension: int | None = None,
        text_type: str | None = None,
        output_type: str | None = None,
        instruct: str | None = None,
        timeout: Timeout | float | None = None,
    ) -> EmbeddingResult:
        """:meth:`embed` from synchronous code (any thread), on the client's loop thread."""
        self._check_sync_use()
        embedding = self.embed(
            texts,
            model=model,
            dimension=dimension,
            text_type=text_type,
            output_type=output_type,
            instruct=instruct,
            timeout=timeout,
        )
        return self._resources.loop_thread.run(embedding)

    def sync_rerank(
        self,
        query: str,
        documents: str | Sequence[str],
        *,
        model: str | None = None,
        top_n: int | None = None,
        return_documents: bool | None = None,
        instruct: str | None = None,
        timeout: Timeout | float | None = None,
    ) -> RerankResult:
        """:meth:`rerank` from synchronous code (any thread), on the client's loop thread."""
        self._check_sync_use()
        ranking = self.rerank(
            query,
            documents,
            model=model,
            top_n=top_n,
            return_documents=return_documents,
            instruct=instruct,
            timeout=timeout,
        )
        return self._resources.loop_thread.run(ranking)

    def _json_context(self) -> CallContext:
        if self.is_closed:
            raise RuntimeError("this TongyiLLMClient is closed; create a new one")
        if self._api_key is None:
            raise AuthenticationError(_MISSING_KEY, status_code=401, code="MissingApiKey")
        return self._context

    # -- internals --------------------------------------------------------------

    def _prepare(
        self, request: RequestLike, params: Mapping[str, Any]
    ) -> tuple[CallContext, PreparedRequest]:
        if self.is_closed:
            raise RuntimeError("this TongyiLLMClient is closed; create a new one")
        context = self._context
        api_key = self._api_key
        if not _CALL_OPTIONS.isdisjoint(params):
            options = {k: v for k, v in params.items() if k in _CALL_OPTIONS and v is not None}
            params = {k: v for k, v in params.items() if k not in _CALL_OPTIONS}
            if options:
                api_key = resolve_api_key(options.get("api_key", api_key))
                context = self._call_context(options, api_key)
        prepared = prepare_request(
            request, params, default_model=self._model, model_alias=self.model_alias
        )
        if api_key is None:
            raise AuthenticationError(_MISSING_KEY, status_code=401, code="MissingApiKey")
        return context, prepared

    def _call_context(self, options: Mapping[str, Any], api_key: str | None) -> CallContext:
        headers = options.get("headers")
        workspace = self._workspace
        if "workspace" in options:
            workspace = resolve_workspace(options["workspace"])
        if headers is not None and not isinstance(headers, Mapping):
            raise ValueError("headers must be a mapping of str to str")
        retry = self._retry
        if "max_retries" in options:
            retry = retry.with_max_retries(options["max_retries"])
        return self._context.replace(
            headers=_build_headers(api_key, {**self._extra_headers, **(headers or {})}, workspace),
            retry=retry,
        )

    def _check_sync_use(self) -> None:
        if self._session is not None:
            raise RuntimeError(
                "a client given session= can only be used on that session's event loop; "
                "the sync API runs on the client's own loop thread"
            )
        if self._resources.loop_thread.in_loop_thread():
            raise RuntimeError("the sync API cannot be called from the client's own loop thread")


def _build_headers(
    api_key: str | None, extra: Mapping[str, str] | None, workspace: str | None
) -> SecretHeaders:
    headers = SecretHeaders(
        {
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "X-DashScope-SSE": "enable",
            "User-Agent": user_agent(),
        }
    )
    if workspace:
        headers[WORKSPACE_HEADER] = workspace
    for name, value in (extra or {}).items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValueError("headers must map str to str")
        check_header_name(name)
        check_header_value(f"header {name!r}", value)
        headers[name] = value
    if api_key is not None:
        headers["Authorization"] = f"Bearer {api_key}"
    return headers


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
