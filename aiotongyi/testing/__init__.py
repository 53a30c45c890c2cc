"""A local DashScope emulator for testing code that talks to DashScope.

``DashScopeEmulator`` serves the native chat protocol (streaming and not), and
the embedding and rerank endpoints, on 127.0.0.1 from a thread of its own;
``Reply`` scripts each answer and its faults. With nothing scripted, the
answer follows the request (tools, JSON, thinking, limits); ``count_tokens`` is
the token rule of its usage counts. Its ``uploads`` (an ``UploadStorage``) is
the temporary storage that local media are uploaded to; ``UploadFault`` scripts
upload failures. With aiotongyi installed, pytest gets a ``dashscope_emulator``
fixture automatically. See ``docs/testing.md``.

This package imports nothing from the rest of aiotongyi.
"""

from __future__ import annotations

from ._emulator import DashScopeEmulator, RecordedRequest
from ._infer import count_tokens
from ._script import ErrorEvent, Reply, ToolCallScript, http_error
from ._upload import RecordedUpload, UploadFault, UploadStorage

__all__ = [
    "DashScopeEmulator",
    "ErrorEvent",
    "RecordedRequest",
    "RecordedUpload",
    "Reply",
    "ToolCallScript",
    "UploadFault",
    "UploadStorage",
    "count_tokens",
    "http_error",
]

for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
