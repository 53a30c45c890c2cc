"""The official SDK's private parts the oracle needs, in one place.

The conformance suite reproduces exactly what dashscope 2.0.2 does, and some of
that lives in its private functions and module state: the stream aggregator its
``ChatStream.get_final_message()`` uses, the settings its tests must isolate,
and the per-loop session cache whose leak is one of its bugs.  These are the
SDK's internals, not aiotongyi's (ruff's SLF001 is waived for this file only).
"""

from __future__ import annotations

import asyncio
from typing import Any

import dashscope
from dashscope.api_entities import aio_session
from dashscope.v2.resources.chat import completions as v2_completions

__all__ = ["aggregate", "legacy_aio_session", "restore_settings", "saved_settings"]


def aggregate(chunks: list[Any], cumulative: bool) -> Any:
    """Exactly what ``ChatStream.get_final_message()`` does with the same chunks."""
    if cumulative:
        return v2_completions._final_from_cumulative(chunks)
    return v2_completions._aggregate(chunks)


def saved_settings() -> dict[str, Any]:
    return dict(dashscope.settings._explicit)


def restore_settings(saved: dict[str, Any]) -> None:
    dashscope.settings._explicit.clear()
    dashscope.settings._explicit.update(saved)


def legacy_aio_session(loop: asyncio.AbstractEventLoop) -> Any:
    """The legacy async API's shared session for ``loop``, if it made one."""
    return aio_session._aio_sessions.get(loop)
