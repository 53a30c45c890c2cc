"""aiotongyi: an asyncio-native streaming client for Alibaba DashScope (Tongyi / Qwen).

``TongyiLLMClient`` streams chat answers as immutable ``ModelOutput`` objects,
from async code (``generate_stream``, ``generate``) or sync code
(``sync_generate_stream``, ``sync_generate``); every failure raises a
``TongyiError`` subclass.  ``aiotongyi.testing`` ships a DashScope emulator.
"""

from ._client import TongyiLLMClient
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
from ._models import ModelOutput, ModelRequest, Timeout, ToolCall, Usage
from ._ratelimit import InMemoryRateLimitBackend, RateLimitBackend, RateLimiter, Reservation
from ._ratelimit_redis import RedisRateLimitBackend
from ._request import GenerateParams
from ._stream import Stream
from ._version import __version__

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "CallInfo",
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
    "Reservation",
    "ServerError",
    "Stream",
    "StreamInterruptedError",
    "Timeout",
    "TongyiError",
    "TongyiLLMClient",
    "ToolCall",
    "Usage",
    "__version__",
]

# Tracebacks and reprs say aiotongyi.X, not aiotongyi._module.X.
for _name in __all__:
    _obj = globals()[_name]
    if isinstance(_obj, type):
        _obj.__module__ = __name__
del _name, _obj
