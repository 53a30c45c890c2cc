"""aiotongyi: an asyncio-native streaming client for Alibaba DashScope (Tongyi / Qwen).

``TongyiLLMClient`` streams chat answers as immutable ``ModelOutput`` objects,
from async code (``generate_stream``, ``generate``) or sync code
(``sync_generate_stream``, ``sync_generate``); every failure raises a
``TongyiError`` subclass.  ``aiotongyi.testing`` ships a DashScope emulator.
"""

from ._client import TongyiLLMClient
from ._config import configure_logging as _configure_logging
from ._embeddings import EmbeddingResult, RerankItem, RerankResult, SparseValue
from ._exceptions import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    JSONOutputError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
    TongyiError,
)
from ._hooks import CallInfo, Hooks
from ._models import (
    ModelOutput,
    ModelRequest,
    SearchInfo,
    SearchResult,
    Timeout,
    TokenLogprob,
    ToolCall,
    TopLogprob,
    Usage,
)
from ._ratelimit import InMemoryRateLimitBackend, RateLimitBackend, RateLimiter, Reservation
from ._ratelimit_redis import RedisRateLimitBackend
from ._request import GenerateParams
from ._retry import RetryPolicy
from ._stream import Stream
from ._tools import Tool, run_tool_calls, sync_run_tool_calls, tool
from ._version import __version__

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "CallInfo",
    "EmbeddingResult",
    "GenerateParams",
    "Hooks",
    "InMemoryRateLimitBackend",
    "JSONOutputError",
    "ModelOutput",
    "ModelRequest",
    "NotFoundError",
    "ProtocolError",
    "RateLimitBackend",
    "RateLimitError",
    "RateLimiter",
    "RedisRateLimitBackend",
    "RerankItem",
    "RerankResult",
    "Reservation",
    "RetryPolicy",
    "SearchInfo",
    "SearchResult",
    "ServerError",
    "SparseValue",
    "Stream",
    "StreamInterruptedError",
    "Timeout",
    "TokenLogprob",
    "TongyiError",
    "TongyiLLMClient",
    "Tool",
    "ToolCall",
    "TopLogprob",
    "Usage",
    "__version__",
    "run_tool_calls",
    "sync_run_tool_calls",
    "tool",
]

# AIOTONGYI_LOG=debug|info|warning: a stderr handler on the "aiotongyi" logger.
_configure_logging()

# Tracebacks and reprs say aiotongyi.X, not aiotongyi._module.X.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj
