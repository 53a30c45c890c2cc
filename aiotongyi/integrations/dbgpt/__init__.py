"""aiotongyi as a DB-GPT model provider.

A drop-in replacement for DB-GPT's ``dbgpt.model.proxy.llms.tongyi`` client:

* DB-GPT 0.5.x-0.6.x: set ``TONGYI_PROXYLLM_LLM_CLIENT_CLASS`` to
  ``aiotongyi.integrations.dbgpt.TongyiLLMClient``; the worker's own
  ``tongyi_generate_stream`` (or ours, same signature) drives
  :meth:`TongyiLLMClient.sync_generate_stream` from worker threads.
* DB-GPT 0.7+: importing this module registers the ``proxy/aiotongyi``
  provider (:class:`TongyiAioDeployModelParameters`), served on the async path
  by :func:`atongyi_generate_stream`.  DB-GPT only scans its own packages, so
  point a config ``[[hooks]]`` entry at :func:`config_hook` to import it.

Outputs are DB-GPT's own ``ModelOutput``: cumulative ``text``, ``error_code`` 0,
a ``usage`` dict and ``finish_reason``; a failure ends the stream with exactly
one error output (``-1`` and ``"code:message"`` for an :class:`aiotongyi.APIError`,
``1`` otherwise), never an exception.
"""

# No ``from __future__ import annotations`` here: DB-GPT 0.8's config loader
# reads the deploy-parameters dataclass annotations at run time.

import asyncio
import dataclasses
import logging
import os
import threading
from collections.abc import AsyncGenerator, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import aclosing, closing
from typing import Optional

import anyio

import aiotongyi

try:
    from dbgpt.core import (
        MessageConverter,
        ModelMetadata,
        ModelOutput,
        ModelRequest,
        ModelRequestContext,
    )
    from dbgpt.model.proxy.base import ProxyLLMClient
except ImportError as _exc:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "aiotongyi.integrations.dbgpt needs DB-GPT: install it with pip install 'aiotongyi[dbgpt]'"
    ) from _exc

# DB-GPT 0.7+ only: provider registration and content parts (for reasoning).
try:
    from dbgpt.core.interface.parameter import LLMDeployModelParameters
    from dbgpt.model.proxy.base import register_proxy_model_adapter
except ImportError:  # DB-GPT 0.5/0.6
    LLMDeployModelParameters = None
    register_proxy_model_adapter = None
try:
    from dbgpt.core.interface.media import MediaContent
except ImportError:  # DB-GPT 0.5/0.6: no place for reasoning in an output
    MediaContent = None

__all__ = [
    "PROVIDER",
    "TongyiAioDeployModelParameters",
    "TongyiLLMClient",
    "atongyi_generate_stream",
    "config_hook",
    "tongyi_generate_stream",
]

logger = logging.getLogger(__name__)

#: The provider name of ``[[models.llms]]`` entries served by this module (0.7+).
PROVIDER = "proxy/aiotongyi"

_DEFAULT_MODEL = "qwen-turbo"
_DEFAULT_ALIAS = "tongyi_proxyllm"
_DEFAULT_CONTEXT_LENGTH = 4096
_COMPATIBLE_SUFFIX = "/compatible-mode/v1"
_NATIVE_SUFFIX = "/api/v1"
_CAN_CARRY_THINKING = MediaContent is not None and hasattr(ModelOutput, "build")
_REQUEST_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelRequest))
_CONTEXT_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelRequestContext))
# Not configuration: rebuilt on unpickling and on first use.
_RUNTIME_STATE = ("executor", "_core_client", "_core_lock")


def _native_base_url(url: str | None) -> str | None:
    """Map DB-GPT's OpenAI-compatible endpoint to the native one on the same host."""
    if not url:
        return None
    url = url.rstrip("/")
    if url.endswith(_COMPATIBLE_SUFFIX):
        return url[: -len(_COMPATIBLE_SUFFIX)] + _NATIVE_SUFFIX
    return url


def _error_output(exc: BaseException) -> ModelOutput:
    """The one output that reports a failed call (the key never reaches it)."""
    reported = aiotongyi.ModelOutput.from_error(exc)
    logger.warning("Tongyi generation failed: %s", reported.text)
    return ModelOutput(text=reported.text, error_code=reported.error_code)


def _success_output(
    text: str, thinking: str, finish_reason: str | None, usage: dict[str, int] | None
) -> ModelOutput:
    if thinking and _CAN_CARRY_THINKING:
        # ModelOutput.build(text, thinking) would leave out the text part while
        # only reasoning has arrived, and `.text` would then raise: keep an
        # (empty) text part so every caller can read it.
        return ModelOutput(
            error_code=0,
            content=[MediaContent.build_thinking(thinking), MediaContent.build_text(text)],
            finish_reason=finish_reason,
            usage=usage,
        )
    return ModelOutput(text=text, error_code=0, finish_reason=finish_reason, usage=usage)


class _OutputConverter:
    """aiotongyi outputs -> DB-GPT outputs for one stream (skips frames that add nothing)."""

    __slots__ = ("_include_thinking", "_usage")

    def __init__(self, include_thinking: bool) -> None:
        self._include_thinking = include_thinking and _CAN_CARRY_THINKING
        self._usage: dict[str, int] | None = None

    def convert(self, output: aiotongyi.ModelOutput) -> ModelOutput | None:
        if output.usage is not None:
            self._usage = output.usage.to_dict()
        adds_thinking = self._include_thinking and bool(output.thinking_delta)
        if not output.delta and not adds_thinking and output.finish_reason is None:
            return None
        thinking = output.thinking if self._include_thinking else ""
        usage = dict(self._usage) if self._usage is not None else None  # one dict per output
        return _success_output(output.text, thinking, output.finish_reason, usage)


@dataclasses.dataclass(frozen=True)
class _Call:
    """One request, mapped from a DB-GPT ``ModelRequest`` to aiotongyi's arguments."""

    messages: Sequence[Mapping[str, object]]
    model: str
    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    stop: str | Sequence[str] | None
    enable_thinking: bool | None

    def params(self) -> "aiotongyi.GenerateParams":
        """The keyword parameters of aiotongyi's generate calls (``None`` is not sent)."""
        return {
            "model": self.model,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "stop": self.stop,
            "enable_thinking": self.enable_thinking,
        }


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
        self._model = model
        self._model_alias = model_alias
        self._api_key = api_key or os.environ.get("DASHSCOPE_API_KEY") or None
        self._api_region = api_region
        self._base_url = _native_base_url(base_url or api_base)
        self._proxy = proxy
        self._timeout = timeout
        self._max_retries = max_retries
        self._headers = dict(headers) if headers else None
        self._enable_thinking = enable_thinking
        self._include_thinking = include_thinking
        self._executor_given = executor is not None
        self._core_lock = threading.Lock()
        self._core_client: aiotongyi.TongyiLLMClient | None = None
        # Built now so a bad region or value fails here, not on the first request;
        # pin the resolved URL so a copy in another process talks to the same host.
        self._base_url = self._core().base_url
        self._api_region = None

    @classmethod
    def new_client(
        cls,
        model_params: object,
        default_executor: Executor | None = None,
    ) -> "TongyiLLMClient":
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
        if _PARAMS_CLASS is None:
            raise NotImplementedError("deploy parameters need DB-GPT 0.7 or newer")
        return _PARAMS_CLASS

    @classmethod
    def generate_stream_function(cls) -> object:
        """:func:`atongyi_generate_stream`: DB-GPT 0.7+ then takes its async path."""
        return atongyi_generate_stream

    @property
    def default_model(self) -> str:
        """The DashScope model id sent when a request names none (or the alias)."""
        return self._model

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={self._model!r}, model_alias={self._model_alias!r}, "
            f"base_url={self._base_url!r})"
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
        self._core_lock = threading.Lock()
        self._core_client = None

    # -- the aiotongyi client underneath -----------------------------------------

    def _core(self) -> aiotongyi.TongyiLLMClient:
        client = self._core_client
        if client is None:
            with self._core_lock:
                client = self._core_client
                if client is None:
                    client = aiotongyi.TongyiLLMClient(
                        model=self._model,
                        api_key=self._api_key,
                        api_region=self._api_region,
                        model_alias=self._model_alias,
                        context_length=self.context_length,
                        executor=self.executor if self._executor_given else None,
                        base_url=self._base_url,
                        timeout=self._timeout,
                        max_retries=self._max_retries,
                        headers=self._headers,
                        proxy=self._proxy,
                    )
                    self._core_client = client
        return client

    def _call(self, request: ModelRequest, message_converter: MessageConverter | None) -> _Call:
        if message_converter is not None:
            # Not the base class's local_covert_message: it raises TypeError.
            metadata = ModelMetadata(model=self.default_model, context_length=self.context_length)
            request = request.copy()
            request.messages = message_converter.convert(request.get_messages(), metadata)
        model = getattr(request, "model", None)
        if not model or model == self._model_alias:
            model = self._model
        return _Call(
            messages=request.to_common_messages(),
            model=model,
            temperature=getattr(request, "temperature", None),
            top_p=getattr(request, "top_p", None),
            max_tokens=getattr(request, "max_new_tokens", None),
            stop=getattr(request, "stop", None),
            enable_thinking=self._enable_thinking,
        )

    # -- generation -------------------------------------------------------------

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
        try:
            call = self._call(request, message_converter)
            outputs = self._core().sync_generate_stream(call.messages, **call.params())
        except Exception as exc:
            yield _error_output(exc)
            return
        converter = _OutputConverter(self._include_thinking)
        try:
            while True:
                try:
                    output = next(outputs)
                except StopIteration:
                    return
                except Exception as exc:
                    yield _error_output(exc)
                    return
                converted = converter.convert(output)
                if converted is not None:
                    yield converted
        finally:
            outputs.close()  # closes the HTTP response

    async def generate_stream(
        self,
        request: ModelRequest,
        message_converter: MessageConverter | None = None,
    ) -> AsyncGenerator[ModelOutput, None]:
        """Stream DB-GPT outputs on the running event loop (any loop, several in turn).

        A failure yields one error output and ends the stream; closing or
        cancelling it closes the HTTP response.
        """
        try:
            call = self._call(request, message_converter)
            stream = self._core().generate_stream(call.messages, **call.params())
        except Exception as exc:
            yield _error_output(exc)
            return
        converter = _OutputConverter(self._include_thinking)
        try:
            while True:
                try:
                    output = await stream.__anext__()
                except StopAsyncIteration:
                    return
                except Exception as exc:
                    yield _error_output(exc)
                    return
                converted = converter.convert(output)
                if converted is not None:
                    yield converted
        finally:
            # Shielded: a cancelled caller must still release the connection.
            with anyio.CancelScope(shield=True):
                await stream.aclose()

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
            async for output in outputs:
                last = output
        if last is None:  # unreachable: a stream ends with a finish or an error output
            return _error_output(RuntimeError("the stream produced no output"))
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
        client = self._core_client
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Release connections and the sync bridge's loop thread (idempotent)."""
        client = self._core_client
        if client is not None:
            await client.aclose()


def _optional_str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _optional_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _optional_bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _build_request(client: TongyiLLMClient, params: Mapping[str, object]) -> ModelRequest:
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
        client.default_model,
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
        yield _error_output(exc)
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
        yield _error_output(exc)
        return
    async with aclosing(client.generate_stream(request)) as outputs:
        async for output in outputs:
            yield output


def config_hook(config: dict[str, object], **params: object) -> dict[str, object]:
    """A DB-GPT 0.8 config hook: returns the section unchanged.

    Naming it in ``[[hooks]]`` (``path = "aiotongyi.integrations.dbgpt.config_hook"``)
    imports this module, which registers the ``proxy/aiotongyi`` provider before
    DB-GPT parses ``[[models.llms]]``.
    """
    return config


_PARAMS_CLASS: type | None = None

if LLMDeployModelParameters is not None and register_proxy_model_adapter is not None:
    # typing.Optional, not `X | None`: DB-GPT 0.8's loader only understands
    # typing.Union (a `str | None` field fails with "Unsupported parameter type").
    @dataclasses.dataclass
    class TongyiAioDeployModelParameters(LLMDeployModelParameters):  # type: ignore[misc]
        """Deploy parameters of the ``proxy/aiotongyi`` provider (DB-GPT 0.7+)."""

        provider: str = PROVIDER
        api_key: Optional[str] = dataclasses.field(  # noqa: UP045
            default="${env:DASHSCOPE_API_KEY}",
            metadata={"help": "The DashScope API key.", "tags": "privacy"},
        )
        api_base: Optional[str] = dataclasses.field(  # noqa: UP045
            default=None,
            metadata={"help": "A native DashScope base URL ending in /api/v1."},
        )
        api_region: Optional[str] = dataclasses.field(  # noqa: UP045
            default=None,
            metadata={
                "help": "cn-beijing, ap-southeast-1 (intl), us-east-1 or cn-hongkong.",
            },
        )
        http_proxy: Optional[str] = dataclasses.field(  # noqa: UP045
            default=None, metadata={"help": "An HTTP(S) proxy URL."}
        )
        timeout: Optional[float] = dataclasses.field(  # noqa: UP045
            default=None, metadata={"help": "Total seconds per request (no limit when unset)."}
        )
        enable_thinking: Optional[bool] = dataclasses.field(  # noqa: UP045
            default=None, metadata={"help": "Ask hybrid thinking models to reason (or not)."}
        )
        concurrency: Optional[int] = dataclasses.field(  # noqa: UP045
            default=100, metadata={"help": "Model concurrency limit."}
        )

    _PARAMS_CLASS = TongyiAioDeployModelParameters
    register_proxy_model_adapter(
        TongyiLLMClient,
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
else:  # DB-GPT 0.5/0.6: no provider registry; the name stays importable
    TongyiAioDeployModelParameters = None  # type: ignore[misc, assignment]

# Embeddings and rerank register under the same provider key (DB-GPT 0.7+).
from . import embeddings as embeddings  # noqa: E402
