"""The worker-facing side: stream functions, the config hook, provider registration.

DB-GPT 0.7+ only registers providers; the stream functions also serve 0.5/0.6
workers and manual wiring.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator, Iterator, Mapping
from contextlib import aclosing, closing

from dbgpt.core import ModelMetadata, ModelOutput, ModelRequest, ModelRequestContext

from ._outputs import error_output
from ._params import CHAT_PARAMS

# DB-GPT 0.7+ only: provider registration.
try:
    from dbgpt.model.proxy.base import register_proxy_model_adapter
except ImportError:  # DB-GPT 0.5/0.6
    register_proxy_model_adapter = None

__all__ = [
    "atongyi_generate_stream",
    "config_hook",
    "native_base_url",
    "register",
    "tongyi_generate_stream",
]

_COMPATIBLE_SUFFIX = "/compatible-mode/v1"
_NATIVE_SUFFIX = "/api/v1"
_REQUEST_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelRequest))
_CONTEXT_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelRequestContext))


def native_base_url(url: str | None) -> str | None:
    """DB-GPT configs often carry the OpenAI-compatible URL: use the native one on that host."""
    if not url:
        return None
    url = url.rstrip("/")
    if url.endswith(_COMPATIBLE_SUFFIX):
        return url[: -len(_COMPATIBLE_SUFFIX)] + _NATIVE_SUFFIX
    return url


def _build_request(client: object, params: Mapping[str, object]) -> ModelRequest:
    """A streaming ``ModelRequest`` from a worker's params, as DB-GPT's own functions build it."""
    context = {
        "stream": True,
        "user_name": params.get("user_name"),
        "request_id": params.get("request_id"),
    }
    options = {
        "temperature": params.get("temperature"),
        "max_new_tokens": params.get("max_new_tokens"),
        "stop": params.get("stop"),
        "top_p": params.get("top_p"),  # DB-GPT 0.6.0+ only
    }
    return ModelRequest.build_request(
        client.default_model,  # type: ignore[attr-defined]
        messages=params["messages"],
        context=ModelRequestContext(**{k: v for k, v in context.items() if k in _CONTEXT_FIELDS}),
        **{k: v for k, v in options.items() if k in _REQUEST_FIELDS},
    )


def tongyi_generate_stream(
    model: object,
    tokenizer: object,
    params: Mapping[str, object],
    device: object,
    context_len: int = 2048,
) -> Iterator[ModelOutput]:
    """DB-GPT's worker stream function (sync), over ``model.proxy_llm_client``.

    Same signature as DB-GPT's ``tongyi_generate_stream``; reads ``messages``,
    ``temperature``, ``max_new_tokens``, ``stop``, ``top_p``, ``user_name``
    and ``request_id`` from ``params``.
    """
    client = model.proxy_llm_client  # type: ignore[attr-defined]
    try:
        request = _build_request(client, params)
    except Exception as exc:
        yield error_output(exc)
        return
    with closing(client.sync_generate_stream(request)) as outputs:
        yield from outputs


async def atongyi_generate_stream(
    model: object,
    tokenizer: object,
    params: Mapping[str, object],
    device: object,
    context_len: int = 2048,
) -> AsyncGenerator[ModelOutput, None]:
    """The async twin of :func:`tongyi_generate_stream` (DB-GPT 0.7+'s async path)."""
    client = model.proxy_llm_client  # type: ignore[attr-defined]
    try:
        request = _build_request(client, params)
    except Exception as exc:
        yield error_output(exc)
        return
    async with aclosing(client.generate_stream(request)) as outputs:
        async for output in outputs:
            yield output


def config_hook(config: dict[str, object], **params: object) -> dict[str, object]:
    """A DB-GPT 0.8 config hook: returns the section unchanged.

    Naming it in ``[[hooks]]`` (``path = "aiotongyi.integrations.dbgpt.config_hook"``)
    imports this package, which registers the ``proxy/aiotongyi`` provider before
    DB-GPT parses ``[[models.llms]]``.
    """
    return config


def register(client_class: type) -> None:
    """Register ``client_class`` as the ``proxy/aiotongyi`` provider (DB-GPT 0.7+ only)."""
    if CHAT_PARAMS is None or register_proxy_model_adapter is None:
        return
    register_proxy_model_adapter(
        client_class,
        supported_models=[
            ModelMetadata(
                model=["qwen-plus", "qwen-max", "qwen-turbo", "qwen-flash"],
                context_length=128 * 1024,
                description="Qwen by Alibaba Cloud DashScope (native API, via aiotongyi)",
            ),
            ModelMetadata(
                model=["qwen3-max", "qwq-plus", "deepseek-r1"],
                context_length=128 * 1024,
                description="Reasoning models on DashScope (streamed, via aiotongyi)",
            ),
        ],
    )
