"""``TongyiLLMClient``: DB-GPT's ``ProxyLLMClient`` over one aiotongyi client.

DB-GPT requests go to the core as they are (it reads ``to_common_messages()``,
``model``, ``temperature``, ``top_p``, ``max_new_tokens`` and ``stop``); this
class adds only what the core cannot know: the message converter, the
provider's ``enable_thinking`` and the shape of DB-GPT's outputs.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncGenerator, Iterator, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import aclosing, closing
from typing import Any

from dbgpt.core import MessageConverter, ModelMetadata, ModelOutput, ModelRequest
from dbgpt.model.proxy.base import ProxyLLMClient

import aiotongyi

from ._outputs import OutputConverter, error_output
from ._params import CHAT_PARAMS
from ._provider import atongyi_generate_stream, native_base_url

__all__ = ["TongyiLLMClient"]

logger = logging.getLogger("aiotongyi.integrations.dbgpt")

_DEFAULT_MODEL = "qwen-turbo"
_DEFAULT_ALIAS = "tongyi_proxyllm"
_DEFAULT_CONTEXT_LENGTH = 4096
# Not configuration: rebuilt on unpickling.
_RUNTIME_STATE = ("executor", "_core")


class TongyiLLMClient(ProxyLLMClient):  # type: ignore[misc]  # DB-GPT ships no type hints
    """DB-GPT's Tongyi proxy client, on aiotongyi's native DashScope streaming.

    The first six parameters keep the order and defaults of DB-GPT's original
    client; the rest are keyword-only.

    :param model: the DashScope model id (``"qwen-turbo"`` when empty).
    :param api_key: else ``DASHSCOPE_API_KEY``; kept on this instance only.
    :param api_region: ``"cn-beijing"``, ``"ap-southeast-1"`` (``"intl"``),
        ``"us-east-1"`` or ``"cn-hongkong"``.
    :param model_alias: the DB-GPT model name that means ``model``.
    :param context_length: reported through :meth:`models` (``None`` -> 4096).
    :param executor: DB-GPT's executor; when given, the sync bridge's loop
        thread also runs in it (it then needs at least two workers).
    :param api_base: DB-GPT's name for ``base_url``; an OpenAI-compatible
        ``.../compatible-mode/v1`` URL is mapped to ``.../api/v1``.
    :param base_url: a native ``.../api/v1`` base URL (beats ``api_base``).
    :param proxy: an explicit HTTP(S) proxy URL.
    :param timeout: an :class:`aiotongyi.Timeout`, a number (total seconds) or ``None``.
    :param max_retries: retries before the first content frame.
    :param headers: extra HTTP headers.
    :param enable_thinking: sent as ``enable_thinking`` when not ``None``.
    :param include_thinking: put reasoning into outputs (DB-GPT 0.7+ only).
    :param proxy_tokenizer: a DB-GPT ``ProxyTokenizer`` for :meth:`count_token`.
    :param kwargs: other DB-GPT options (``api_type``, ``openai_kwargs``, ...), ignored.
    :raises ValueError: for an unknown region or bad values.
    """

    def __init__(
        self,
        model: str | None = None,
        api_key: str | None = None,
        api_region: str | None = None,
        model_alias: str | None = _DEFAULT_ALIAS,
        context_length: int | None = _DEFAULT_CONTEXT_LENGTH,
        executor: Executor | None = None,
        *,
        api_base: str | None = None,
        base_url: str | None = None,
        proxy: str | None = None,
        timeout: aiotongyi.Timeout | float | None = None,
        max_retries: int = 2,
        headers: Mapping[str, str] | None = None,
        enable_thinking: bool | None = None,
        include_thinking: bool = True,
        proxy_tokenizer: object | None = None,
        **kwargs: object,
    ) -> None:
        if kwargs:
            logger.debug("TongyiLLMClient ignores DB-GPT options: %s", sorted(kwargs))
        model = model or _DEFAULT_MODEL
        model_alias = model_alias or _DEFAULT_ALIAS
        context_length = _DEFAULT_CONTEXT_LENGTH if context_length is None else context_length
        super().__init__(
            model_names=[model, model_alias], context_length=context_length, executor=executor
        )
        self._proxy_tokenizer = proxy_tokenizer
        self._include_thinking = include_thinking
        # Per call, what a DB-GPT request does not carry (None is not sent).
        self._params: aiotongyi.GenerateParams = {"enable_thinking": enable_thinking}
        self._executor_given = executor is not None
        self._config: dict[str, Any] = {
            "model": model,
            "api_key": api_key or os.environ.get("DASHSCOPE_API_KEY") or None,
            "api_region": api_region,
            "model_alias": model_alias,
            "context_length": context_length,
            "base_url": native_base_url(base_url or api_base),
            "timeout": timeout,
            "max_retries": max_retries,
            "headers": dict(headers) if headers else None,
            "proxy": proxy,
        }
        # Built now so a bad region or value fails here, not on the first request.
        self._core = self._new_core()
        # Pin the resolved URL so a copy in another process talks to the same host.
        self._config.update(base_url=self._core.base_url, api_region=None)

    @classmethod
    def new_client(
        cls,
        model_params: object,
        default_executor: Executor | None = None,
    ) -> TongyiLLMClient:
        """Build a client from DB-GPT's model parameters.

        Reads a 0.5/0.6 ``ProxyModelParameters`` (``proxyllm_backend``,
        ``proxy_api_key``, ``proxy_api_base``, ``model_name``,
        ``max_context_size``, ``http_proxy``, and ``proxy_api_region`` when
        present) or a 0.7+ deploy-parameters object (``real_provider_model_name``,
        ``name``, ``api_key``, ``api_base``, ``api_region``, ``context_length``,
        ``http_proxy``, ``timeout``, ``enable_thinking``).
        """

        def read(name: str) -> object:
            return getattr(model_params, name, None)

        if hasattr(model_params, "proxyllm_backend"):  # DB-GPT 0.5/0.6
            return cls(
                model=_optional_str(read("proxyllm_backend")),
                api_key=_optional_str(read("proxy_api_key")),
                api_region=_optional_str(read("proxy_api_region")),
                model_alias=_optional_str(read("model_name")),
                context_length=_optional_int(read("max_context_size")),
                executor=default_executor,
                api_base=_optional_str(read("proxy_api_base")),
                proxy=_optional_str(read("http_proxy")),
            )
        timeout = read("timeout")
        return cls(
            model=_optional_str(read("real_provider_model_name")),
            api_key=cls._resolve_key(_optional_str(read("api_key"))),
            api_region=_optional_str(read("api_region")),
            model_alias=_optional_str(read("name")),
            context_length=_optional_int(read("context_length")),
            executor=default_executor,
            api_base=_optional_str(read("api_base")),
            proxy=_optional_str(read("http_proxy")),
            timeout=float(timeout) if isinstance(timeout, (int, float)) else None,
            enable_thinking=_optional_bool(read("enable_thinking")),
        )

    @classmethod
    def _resolve_key(cls, value: str | None) -> str | None:
        """Expand ``${env:NAME}``; an unset variable means no key (reported per request)."""
        resolve = getattr(cls, "_resolve_env_vars", None)  # DB-GPT 0.7+
        if value is None or resolve is None:
            return value
        try:
            resolved = resolve(value)
        except ValueError:
            logger.warning("the API key's environment variable is not set")
            return None
        return resolved if isinstance(resolved, str) and resolved else None

    @classmethod
    def param_class(cls) -> type:
        """The deploy-parameters class of the ``proxy/aiotongyi`` provider (DB-GPT 0.7+)."""
        if CHAT_PARAMS is None:
            raise NotImplementedError("deploy parameters need DB-GPT 0.7 or newer")
        return CHAT_PARAMS

    @classmethod
    def generate_stream_function(cls) -> object:
        """:func:`atongyi_generate_stream`: DB-GPT 0.7+ then takes its async path."""
        return atongyi_generate_stream

    @property
    def default_model(self) -> str:
        """The DashScope model id sent when a request names none (or the alias)."""
        return self._core.default_model

    @property
    def base_url(self) -> str:
        """The resolved native ``.../api/v1`` base URL."""
        return self._core.base_url

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self.default_model!r}, "
            f"model_alias={self._config['model_alias']!r}, base_url={self.base_url!r})"
        )

    # -- pickling: configuration only ------------------------------------------

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        for name in _RUNTIME_STATE:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.executor = ThreadPoolExecutor()
        self._executor_given = False
        self._core = self._new_core()

    def _new_core(self) -> aiotongyi.TongyiLLMClient:
        """The aiotongyi client underneath (it connects and starts threads on first use)."""
        return aiotongyi.TongyiLLMClient(
            **self._config, executor=self.executor if self._executor_given else None
        )

    # -- generation -------------------------------------------------------------

    def _request(
        self, request: ModelRequest, message_converter: MessageConverter | None
    ) -> ModelRequest:
        """The request the core reads, after DB-GPT's message converter if one is given."""
        if message_converter is None:
            return request
        # Not the base class's local_covert_message: it raises TypeError.
        metadata = ModelMetadata(model=self.default_model, context_length=self.context_length)
        request = request.copy()
        request.messages = message_converter.convert(request.get_messages(), metadata)
        return request

    def sync_generate_stream(
        self,
        request: ModelRequest,
        message_converter: MessageConverter | None = None,
    ) -> Iterator[ModelOutput]:
        """Stream DB-GPT outputs from synchronous code (any thread, one ``next()`` at a time).

        Consecutive ``next()`` calls may come from different threads.  A failure
        yields one error output and ends the stream; closing the generator
        closes the HTTP response.
        """
        converter = OutputConverter(self._include_thinking)
        try:
            request = self._request(request, message_converter)
            with closing(self._core.sync_generate_stream(request, **self._params)) as outputs:
                for output in outputs:
                    yield from converter.convert(output)
        except Exception as exc:
            yield error_output(exc)

    async def generate_stream(
        self,
        request: ModelRequest,
        message_converter: MessageConverter | None = None,
    ) -> AsyncGenerator[ModelOutput, None]:
        """Stream DB-GPT outputs on the running event loop (any loop, several in turn).

        A failure yields one error output and ends the stream; closing or
        cancelling it closes the HTTP response.
        """
        converter = OutputConverter(self._include_thinking)
        try:
            request = self._request(request, message_converter)
            async with self._core.generate_stream(request, **self._params) as outputs:
                async for output in outputs:
                    for converted in converter.convert(output):
                        yield converted
        except Exception as exc:
            yield error_output(exc)

    async def generate(
        self,
        request: ModelRequest,
        message_converter: MessageConverter | None = None,
    ) -> ModelOutput:
        """The last output of :meth:`generate_stream` (the error output on failure).

        Always streams on the wire: thinking models are stream-only.
        """
        last: ModelOutput | None = None
        async with aclosing(self.generate_stream(request, message_converter)) as outputs:
            async for last in outputs:  # noqa: B007
                pass
        assert last is not None  # a stream ends with a finish or an error output
        return last

    async def models(self) -> list[ModelMetadata]:
        """One ``ModelMetadata`` per name (model id and alias)."""
        return [
            ModelMetadata(model=name, context_length=self.context_length)
            for name in self.model_names
        ]

    async def count_token(self, model: str, prompt: str) -> int:
        """Tokens in ``prompt`` by the given ``proxy_tokenizer``; ``-1`` without one or on error.

        DB-GPT's default tokenizer downloads tiktoken encodings, so none is assumed.
        """
        tokenizer = self._proxy_tokenizer
        if tokenizer is None:
            return -1
        try:
            if tokenizer.support_async():  # type: ignore[attr-defined]
                counts = await tokenizer.count_token_async(model, [prompt])  # type: ignore[attr-defined]
            else:
                counts = await asyncio.get_running_loop().run_in_executor(
                    self.executor,
                    tokenizer.count_token,  # type: ignore[attr-defined]
                    model,
                    [prompt],
                )
            return int(counts[0])
        except Exception as exc:
            logger.debug("count_token failed: %s", type(exc).__name__)
            return -1

    # -- lifecycle --------------------------------------------------------------

    def close(self) -> None:
        """Release connections and the sync bridge's loop thread (idempotent)."""
        self._core.close()

    async def aclose(self) -> None:
        """Release connections and the sync bridge's loop thread (idempotent)."""
        await self._core.aclose()


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _optional_bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None
