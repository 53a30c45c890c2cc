"""DashScope embeddings and rerank as DB-GPT providers (``proxy/aiotongyi``, DB-GPT 0.7+).

:class:`TongyiEmbeddings` implements ``dbgpt.core.Embeddings`` and
:class:`TongyiRerankEmbeddings` implements ``dbgpt.core.RerankEmbeddings``,
both over one lazily created :class:`aiotongyi.TongyiLLMClient`: requests
are split at the model's limits and sent concurrently, failures raise typed
errors (never ``'NoneType' object is not subscriptable``), the key stays in
the instance, ``api_base`` is honoured.  Importing the package registers both
under the chat provider's key, so ``[[models.embeddings]]`` and
``[[models.rerankers]]`` entries with ``provider = "proxy/aiotongyi"`` load
them (see ``docs/embeddings.md``).

The sync methods, which the DB-GPT server calls from a thread pool, run on
the client's own loop thread: safe from many threads at once and from a
thread whose event loop is running.  The async methods run on the caller's
loop.
"""

import os
import re
import threading
from collections.abc import Sequence
from typing import Any

import aiotongyi
from aiotongyi._embeddings import DEFAULT_EMBEDDING_MODEL, DEFAULT_RERANK_MODEL

from ._params import (
    EMBEDDING_PARAMS,
    RERANK_PARAMS,
    TongyiEmbeddingDeployModelParameters,
    TongyiRerankDeployModelParameters,
)
from ._provider import native_base_url

# Older DB-GPT releases lack one interface or the other: the classes still work
# (duck-typed), and importing the chat provider must never fail because of them.
try:
    from dbgpt.core import Embeddings
except ImportError:  # pragma: no cover - very old DB-GPT
    Embeddings = object
try:
    from dbgpt.core import RerankEmbeddings
except ImportError:  # pragma: no cover - DB-GPT before rerank support
    RerankEmbeddings = object

# DB-GPT 0.7+ only: the embedding adapter registry.
try:
    from dbgpt.core import EmbeddingModelMetadata
    from dbgpt.model.adapter.base import register_embedding_adapter
except ImportError:  # DB-GPT 0.5/0.6: the classes work, nothing to register with
    register_embedding_adapter = None

__all__ = [
    "TongyiEmbeddingDeployModelParameters",
    "TongyiEmbeddings",
    "TongyiRerankDeployModelParameters",
    "TongyiRerankEmbeddings",
]

_ENV_REFERENCE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _resolve_key(value: str | None) -> str | None:
    """Expand ``${env:NAME}`` (and ``${env:NAME:-default}``); unset means no key."""
    if not value:
        return None
    match = _ENV_REFERENCE.fullmatch(value.strip())
    if match is None:
        return value
    return os.environ.get(match.group(1)) or match.group(2) or None


class _Core:
    """One lazily built aiotongyi client, shared by every thread and loop.

    DB-GPT's workers drop their models without closing them (``worker.stop()``):
    the client, garbage then, releases its connections and thread itself, with
    a ``ResourceWarning`` where warnings are shown.
    """

    def __init__(self, options: dict[str, Any]) -> None:
        aiotongyi.TongyiLLMClient(**options).close()  # bad settings fail here, not per call
        self._options = options
        self._client: aiotongyi.TongyiLLMClient | None = None
        self._lock = threading.Lock()

    def get(self) -> aiotongyi.TongyiLLMClient:
        client = self._client
        if client is None:
            with self._lock:
                client = self._client
                if client is None:
                    client = self._client = aiotongyi.TongyiLLMClient(**self._options)
        return client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _common_settings(parameters: Any) -> dict[str, Any]:
    """What both deploy-parameter classes carry: the model and how to reach it."""
    settings = {
        name: getattr(parameters, name, None)
        for name in ("api_key", "api_base", "api_region", "instruct", "http_proxy", "timeout")
    }
    return {"model": parameters.real_provider_model_name, **settings}


def _client_options(
    api_key: str | None,
    api_base: str | None,
    api_region: str | None,
    http_proxy: str | None,
    timeout: float | None,
    max_retries: int,
) -> dict[str, Any]:
    # The key is resolved here and lives only in the client's headers.
    return {
        "api_key": _resolve_key(api_key),
        "api_region": api_region,
        "base_url": native_base_url(api_base),
        "proxy": http_proxy,
        "timeout": timeout,
        "max_retries": max_retries,
    }


class TongyiEmbeddings(Embeddings):  # type: ignore[misc]  # DB-GPT ships no type hints
    """DashScope text embeddings for DB-GPT (``text-embedding-v4`` by default).

    :param model: the DashScope model id.
    :param api_key: the key, or ``${env:NAME}``; else ``DASHSCOPE_API_KEY``.
    :param api_base: a native ``.../api/v1`` URL (a compatible-mode one is mapped).
    :param api_region: ``cn-beijing``, ``ap-southeast-1`` (``intl``), ...
    :param dimension: vector size (v3/v4).
    :param text_type: ``"query"`` or ``"document"`` for every call; when
        ``None``, :meth:`embed_query` sends ``"query"`` and the rest the
        service's default (``"document"``).
    :param instruct: a task instruction (v4).
    :param http_proxy: an explicit HTTP(S) proxy URL.
    :param timeout: total seconds per call.
    :param max_retries: retries per request for throttling and server errors.
    """

    def __init__(
        self,
        model: str = DEFAULT_EMBEDDING_MODEL,
        api_key: str | None = None,
        api_base: str | None = None,
        api_region: str | None = None,
        dimension: int | None = None,
        text_type: str | None = None,
        instruct: str | None = None,
        http_proxy: str | None = None,
        timeout: float | None = None,
        max_retries: int = 2,
    ) -> None:
        self.model = model
        self.dimension = dimension
        self.text_type = text_type
        self.instruct = instruct
        self._core = _Core(
            _client_options(api_key, api_base, api_region, http_proxy, timeout, max_retries)
        )

    @classmethod
    def param_class(cls) -> Any:
        """The deploy-parameters class of ``[[models.embeddings]]`` entries (0.7+)."""
        if EMBEDDING_PARAMS is None:
            raise NotImplementedError("deploy parameters need DB-GPT 0.7 or newer")
        return EMBEDDING_PARAMS

    @classmethod
    def from_parameters(cls, parameters: Any) -> "TongyiEmbeddings":
        """Build from DB-GPT deploy parameters (what the embedding worker calls)."""
        return cls(
            dimension=getattr(parameters, "dimension", None),
            text_type=getattr(parameters, "text_type", None),
            **_common_settings(parameters),
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, dimension={self.dimension!r})"

    def _kwargs(self, text_type: str | None) -> dict[str, Any]:
        return {
            "model": self.model,
            "dimension": self.dimension,
            "text_type": self.text_type or text_type,
            "instruct": self.instruct,
        }

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order (from any thread).

        :raises ValueError: for empty texts.
        :raises aiotongyi.TongyiError: when DashScope fails (``failed_inputs`` set).
        """
        if not texts:
            return []
        result = self._core.get().sync_embed(list(texts), **self._kwargs(None))
        return [list(vector) for vector in result.vectors]

    def embed_query(self, text: str) -> list[float]:
        """The vector of one query (``text_type="query"`` unless configured)."""
        result = self._core.get().sync_embed([text], **self._kwargs("query"))
        return list(result.vectors[0])

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """:meth:`embed_documents` on the running loop."""
        if not texts:
            return []
        result = await self._core.get().embed(list(texts), **self._kwargs(None))
        return [list(vector) for vector in result.vectors]

    async def aembed_query(self, text: str) -> list[float]:
        """:meth:`embed_query` on the running loop."""
        result = await self._core.get().embed([text], **self._kwargs("query"))
        return list(result.vectors[0])

    def close(self) -> None:
        """Release connections and the loop thread (a new call reopens them)."""
        self._core.close()

    async def aclose(self) -> None:
        """:meth:`close` from async code."""
        await self._core.aclose()


class TongyiRerankEmbeddings(RerankEmbeddings):  # type: ignore[misc]
    """DashScope text rerank for DB-GPT (``gte-rerank-v2`` by default).

    :meth:`predict` returns exactly one score per candidate, in candidate
    order (DB-GPT zips them onto its chunks); ``top_n`` is never sent.  An
    empty candidate, which DashScope would refuse, scores ``0.0`` (the
    bottom of gte-rerank's range) instead of failing the whole ranking.

    :param model: the DashScope model id.
    :param instruct: a task instruction (qwen3-rerank).
    Other parameters as :class:`TongyiEmbeddings`.
    """

    def __init__(
        self,
        model: str = DEFAULT_RERANK_MODEL,
        api_key: str | None = None,
        api_base: str | None = None,
        api_region: str | None = None,
        instruct: str | None = None,
        http_proxy: str | None = None,
        timeout: float | None = None,
        max_retries: int = 2,
    ) -> None:
        self.model = model
        self.instruct = instruct
        self._core = _Core(
            _client_options(api_key, api_base, api_region, http_proxy, timeout, max_retries)
        )

    @classmethod
    def param_class(cls) -> Any:
        """The deploy-parameters class of ``[[models.rerankers]]`` entries (0.7+)."""
        if RERANK_PARAMS is None:
            raise NotImplementedError("deploy parameters need DB-GPT 0.7 or newer")
        return RERANK_PARAMS

    @classmethod
    def from_parameters(cls, parameters: Any) -> "TongyiRerankEmbeddings":
        """Build from DB-GPT deploy parameters (what the reranker worker calls)."""
        return cls(**_common_settings(parameters))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"

    def predict(self, query: str, candidates: list[str]) -> list[float]:
        """One relevance score per candidate, in candidate order (from any thread)."""
        kept = _non_empty(candidates)
        if not kept:
            return [0.0] * len(candidates)
        result = self._core.get().sync_rerank(
            query, [candidates[i] for i in kept], model=self.model, instruct=self.instruct
        )
        return _scores(result, kept, len(candidates))

    async def apredict(self, query: str, candidates: list[str]) -> list[float]:
        """:meth:`predict` on the running loop."""
        kept = _non_empty(candidates)
        if not kept:
            return [0.0] * len(candidates)
        result = await self._core.get().rerank(
            query, [candidates[i] for i in kept], model=self.model, instruct=self.instruct
        )
        return _scores(result, kept, len(candidates))

    def close(self) -> None:
        """Release connections and the loop thread (a new call reopens them)."""
        self._core.close()

    async def aclose(self) -> None:
        """:meth:`close` from async code."""
        await self._core.aclose()


def _non_empty(candidates: Sequence[object]) -> list[int]:
    return [i for i, c in enumerate(candidates) if not isinstance(c, str) or c.strip()]


def _scores(result: aiotongyi.RerankResult, kept: list[int], total: int) -> list[float]:
    scores = [0.0] * total
    ranked = result.scores(len(kept))
    for position, score in zip(kept, ranked, strict=True):
        if score is None:  # no top_n is sent, so every document must come back
            raise aiotongyi.ProtocolError(
                f"the rerank reply left out candidate {position}",
                request_id=result.request_ids[0] if result.request_ids else None,
            )
        scores[position] = score
    return scores


if EMBEDDING_PARAMS is not None and register_embedding_adapter is not None:
    register_embedding_adapter(
        TongyiEmbeddings,
        supported_models=[
            EmbeddingModelMetadata(
                model=["text-embedding-v4", "text-embedding-v3"],
                dimension=1024,
                context_length=8192,
                description="DashScope text embeddings (via aiotongyi)",
            ),
        ],
    )
    register_embedding_adapter(
        TongyiRerankEmbeddings,
        supported_models=[
            EmbeddingModelMetadata(
                model=["gte-rerank-v2", "qwen3-rerank"],
                context_length=4000,
                description="DashScope text rerank (via aiotongyi)",
                is_reranker=True,
            ),
        ],
    )
