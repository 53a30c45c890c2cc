"""Deploy parameters of the ``proxy/aiotongyi`` provider: chat, embeddings, rerank (0.7+).

On DB-GPT 0.5/0.6 (no deploy parameters) the names stay importable as ``None``.
"""

# No ``from __future__ import annotations`` here: DB-GPT 0.8's config loader
# reads the dataclass annotations at run time.  typing.Optional, not `X | None`:
# the loader only understands typing.Union (a `str | None` field fails with
# "Unsupported parameter type").

import dataclasses
from typing import Any, Optional

try:
    from dbgpt.core.interface.parameter import (
        EmbeddingDeployModelParameters,
        LLMDeployModelParameters,
        RerankerDeployModelParameters,
    )
except ImportError:  # DB-GPT 0.5/0.6
    EmbeddingDeployModelParameters = None
    LLMDeployModelParameters = None
    RerankerDeployModelParameters = None

__all__ = [
    "CHAT_PARAMS",
    "EMBEDDING_PARAMS",
    "PROVIDER",
    "RERANK_PARAMS",
    "TongyiAioDeployModelParameters",
    "TongyiEmbeddingDeployModelParameters",
    "TongyiRerankDeployModelParameters",
]

#: The provider name of the ``[[models.*]]`` entries served by this package (0.7+).
PROVIDER = "proxy/aiotongyi"

CHAT_PARAMS: Optional[type] = None  # noqa: UP045
EMBEDDING_PARAMS: Optional[type] = None  # noqa: UP045
RERANK_PARAMS: Optional[type] = None  # noqa: UP045


def _key_field() -> Any:
    return dataclasses.field(
        default="${env:DASHSCOPE_API_KEY}",
        metadata={"help": "The DashScope API key.", "tags": "privacy"},
    )


def _field(help_text: str, default: Any = None) -> Any:
    return dataclasses.field(default=default, metadata={"help": help_text})


if LLMDeployModelParameters is not None:

    @dataclasses.dataclass
    class TongyiAioDeployModelParameters(LLMDeployModelParameters):  # type: ignore[misc]
        """Deploy parameters of the ``proxy/aiotongyi`` provider (DB-GPT 0.7+)."""

        provider: str = PROVIDER
        api_key: Optional[str] = _key_field()  # noqa: UP045
        api_base: Optional[str] = _field("A native DashScope base URL ending in /api/v1.")  # noqa: UP045
        api_region: Optional[str] = _field(  # noqa: UP045
            "cn-beijing, ap-southeast-1 (intl), us-east-1 or cn-hongkong."
        )
        http_proxy: Optional[str] = _field("An HTTP(S) proxy URL.")  # noqa: UP045
        timeout: Optional[float] = _field("Total seconds per request (no limit when unset).")  # noqa: UP045
        enable_thinking: Optional[bool] = _field(  # noqa: UP045
            "Ask hybrid thinking models to reason (or not)."
        )
        concurrency: Optional[int] = _field("Model concurrency limit.", default=100)  # noqa: UP045

    CHAT_PARAMS = TongyiAioDeployModelParameters
else:  # DB-GPT 0.5/0.6
    TongyiAioDeployModelParameters = None  # type: ignore[misc, assignment]

if EmbeddingDeployModelParameters is not None:

    @dataclasses.dataclass
    class TongyiEmbeddingDeployModelParameters(EmbeddingDeployModelParameters):  # type: ignore[misc]
        """``[[models.embeddings]]`` parameters of the ``proxy/aiotongyi`` provider."""

        provider: str = PROVIDER
        api_key: Optional[str] = _key_field()  # noqa: UP045
        api_base: Optional[str] = _field("A native DashScope base URL ending in /api/v1.")  # noqa: UP045
        api_region: Optional[str] = _field("cn-beijing, ap-southeast-1 (intl), us-east-1, ...")  # noqa: UP045
        backend: Optional[str] = _field("The DashScope model id, when name is an alias.")  # noqa: UP045
        dimension: Optional[int] = _field("Vector size (text-embedding-v3/v4).")  # noqa: UP045
        text_type: Optional[str] = _field("query or document, for every call.")  # noqa: UP045
        instruct: Optional[str] = _field("A task instruction (text-embedding-v4).")  # noqa: UP045
        http_proxy: Optional[str] = _field("An HTTP(S) proxy URL.")  # noqa: UP045
        timeout: Optional[float] = _field("Total seconds per call (no limit when unset).")  # noqa: UP045

        @property
        def real_provider_model_name(self) -> str:
            return self.backend or self.name

    @dataclasses.dataclass
    class TongyiRerankDeployModelParameters(RerankerDeployModelParameters):  # type: ignore[misc]
        """``[[models.rerankers]]`` parameters of the ``proxy/aiotongyi`` provider."""

        provider: str = PROVIDER
        api_key: Optional[str] = _key_field()  # noqa: UP045
        api_base: Optional[str] = _field("A native DashScope base URL ending in /api/v1.")  # noqa: UP045
        api_region: Optional[str] = _field("cn-beijing, ap-southeast-1 (intl), us-east-1, ...")  # noqa: UP045
        backend: Optional[str] = _field("The DashScope model id, when name is an alias.")  # noqa: UP045
        instruct: Optional[str] = _field("A task instruction (qwen3-rerank).")  # noqa: UP045
        http_proxy: Optional[str] = _field("An HTTP(S) proxy URL.")  # noqa: UP045
        timeout: Optional[float] = _field("Total seconds per call (no limit when unset).")  # noqa: UP045

        @property
        def real_provider_model_name(self) -> str:
            return self.backend or self.name

    EMBEDDING_PARAMS = TongyiEmbeddingDeployModelParameters
    RERANK_PARAMS = TongyiRerankDeployModelParameters
else:  # DB-GPT 0.5/0.6
    TongyiEmbeddingDeployModelParameters = None  # type: ignore[misc, assignment]
    TongyiRerankDeployModelParameters = None  # type: ignore[misc, assignment]
