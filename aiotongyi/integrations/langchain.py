"""aiotongyi as a LangChain chat model: :class:`ChatTongyi`.

Named as langchain-community's ``ChatTongyi`` so that migrating is changing the
import line. Async calls stream on aiotongyi's async client
(:meth:`aiotongyi.TongyiLLMClient.generate_stream`), sync calls on its sync
bridge (:meth:`aiotongyi.TongyiLLMClient.sync_generate_stream`); both get
aiotongyi's retries, timeouts and typed errors, which pass through unchanged.
Needs the ``aiotongyi[langchain]`` extra (``langchain-core`` 1.x). See
``docs/langchain.md``.
"""

from __future__ import annotations

import json
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import closing
from operator import itemgetter
from typing import Any, Literal, cast

from aiotongyi import GenerateParams, ModelOutput, Timeout, TongyiLLMClient, Usage

try:
    from langchain_core.callbacks import (
        AsyncCallbackManagerForLLMRun,
        CallbackManagerForLLMRun,
    )
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import LangSmithParams, LanguageModelInput
    from langchain_core.language_models.chat_models import (
        BaseChatModel,
        agenerate_from_stream,
        generate_from_stream,
    )
    from langchain_core.messages import (
        AIMessage,
        AIMessageChunk,
        BaseMessage,
        ChatMessage,
        FunctionMessage,
        HumanMessage,
        InvalidToolCall,
        SystemMessage,
        ToolCall,
        ToolMessage,
    )
    from langchain_core.messages.ai import InputTokenDetails, OutputTokenDetails, UsageMetadata
    from langchain_core.messages.tool import invalid_tool_call, tool_call, tool_call_chunk
    from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
    from langchain_core.output_parsers.base import OutputParserLike
    from langchain_core.output_parsers.openai_tools import (
        JsonOutputKeyToolsParser,
        PydanticToolsParser,
    )
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
    from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
    from langchain_core.tools import BaseTool
    from langchain_core.utils import secret_from_env
    from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
    from langchain_core.utils.pydantic import is_basemodel_subclass
    from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, field_validator
except ImportError as exc:  # pragma: no cover - exercised where langchain-core is absent
    # A ModuleNotFoundError naming the missing module, for tools that check which one.
    raise ModuleNotFoundError(
        "aiotongyi.integrations.langchain needs langchain-core: pip install 'aiotongyi[langchain]'",
        name=exc.name,
    ) from exc

__all__ = ["ChatTongyi", "DashScopeEmbeddings"]

logger = logging.getLogger("aiotongyi")

PROVIDER = "tongyi"
# Parameters aiotongyi's generate calls take by name; anything else in
# model_kwargs goes to the request's parameters through extra_body.
_NAMED = GenerateParams.__required_keys__ | GenerateParams.__optional_keys__
_FORCING = ("any", "required")


class ChatTongyi(BaseChatModel):
    """A LangChain chat model for DashScope (Tongyi / Qwen) on aiotongyi.

    ``ChatTongyi(model="qwen-plus", temperature=0.3)``; every field below is
    also a constructor keyword. One aiotongyi client per instance, created on
    first use.

    :param model: the DashScope model (alias ``model_name``).
    :param temperature: sampling temperature, sent when not ``None``.
    :param max_tokens: the answer's token limit.
    :param top_p: nucleus sampling; not sent unless set.
    :param stop: stop sequences (a call's ``stop=`` wins).
    :param timeout: seconds for the whole call, or an :class:`aiotongyi.Timeout`.
    :param max_retries: retries before the first content frame.
    :param api_key: else env ``DASHSCOPE_API_KEY`` (alias ``dashscope_api_key``).
    :param base_url: ``.../api/v1`` of another endpoint (beats ``api_region``).
    :param api_region: a DashScope region such as ``"ap-southeast-1"``.
    :param streaming: make ``invoke`` stream (callbacks get each token).
    :param model_kwargs: any other request parameter (``enable_thinking``,
        ``seed``, ``top_k``, ...); names aiotongyi does not know go to the
        request's ``parameters`` as they are.
    :raises ValueError: for a bad ``timeout`` or ``max_retries`` (pydantic's
        ``ValidationError``); at the first call, for a bad region or base URL.
    """

    model: str = Field(default="qwen-turbo", alias="model_name")
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: list[str] | str | None = Field(default=None, alias="stop_sequences")
    timeout: float | Timeout | None = Field(default=None, alias="request_timeout")
    max_retries: int = Field(default=2, ge=0)
    api_key: SecretStr | None = Field(
        default_factory=secret_from_env("DASHSCOPE_API_KEY", default=None),
        alias="dashscope_api_key",
    )
    base_url: str | None = None
    api_region: str | None = None
    streaming: bool = False
    model_kwargs: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    @field_validator("timeout")
    @classmethod
    def _check_timeout(cls, value: float | Timeout | None) -> float | Timeout | None:
        Timeout.coerce(value)  # a ValueError now rather than at the first call
        return value

    _client: TongyiLLMClient | None = PrivateAttr(default=None)
    _client_owner: weakref.ref[ChatTongyi] | None = PrivateAttr(default=None)
    _client_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    # -- LangChain's descriptive hooks ----------------------------------------------

    @property
    def _llm_type(self) -> str:
        return PROVIDER

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "stop": self.stop,
            **self.model_kwargs,
        }

    @property
    def lc_secrets(self) -> dict[str, str]:
        return {"api_key": "DASHSCOPE_API_KEY"}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider=PROVIDER,
            ls_model_name=kwargs.get("model") or self.model,
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        if temperature is not None:
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        stops = _stop_list(stop or self.stop)
        if stops:
            params["ls_stop"] = stops
        return params

    # -- the client -----------------------------------------------------------------

    @property
    def client(self) -> TongyiLLMClient:
        """The aiotongyi client behind this model (created on first use)."""
        with self._client_lock:
            # A copy (model_copy) inherits private attributes: it gets a client of its
            # own, so that the original's going does not close the copy's.
            owner = self._client_owner() if self._client_owner is not None else None
            if self._client is None or owner is not self:
                key = self.api_key.get_secret_value() if self.api_key is not None else None
                self._client = TongyiLLMClient(
                    model=self.model,
                    api_key=key,
                    api_region=self.api_region,
                    base_url=self.base_url,
                    timeout=self.timeout,
                    max_retries=self.max_retries,
                )
                self._client_owner = weakref.ref(self)
                weakref.finalize(self, _close_later, self._client)
            return self._client

    def _request(
        self, messages: Sequence[BaseMessage], stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The DashScope messages and aiotongyi keyword parameters of one call."""
        params: dict[str, Any] = {
            "model": self.model,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
        }
        params.update(self.model_kwargs)
        params.update(kwargs)
        stops = stop if stop is not None else params.get("stop", self.stop)
        params["stop"] = _stop_list(stops) or None
        extra: dict[str, Any] = dict(params.pop("extra_body", None) or {})
        # DashScope has no "required"; forcing among several tools is sent as is.
        if params.get("tool_choice") in _FORCING:
            extra["tool_choice"] = "required"
            del params["tool_choice"]
        for name in [name for name in params if name not in _NAMED]:
            extra[name] = params.pop(name)
        if extra:
            params["extra_body"] = extra
        return [_to_dashscope(message) for message in messages], params

    # -- generation -----------------------------------------------------------------

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        request, params = self._request(messages, stop, kwargs)
        chunks = _Chunks()
        with closing(self.client.sync_generate_stream(request, **params)) as stream:
            for output in stream:
                chunk = chunks.feed(output)
                if chunk is None:
                    continue
                if run_manager is not None:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        request, params = self._request(messages, stop, kwargs)
        chunks = _Chunks()
        async with self.client.generate_stream(request, **params) as stream:
            async for output in stream:
                chunk = chunks.feed(output)
                if chunk is None:
                    continue
                if run_manager is not None:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))
        request, params = self._request(messages, stop, kwargs)
        finals: dict[int, ModelOutput] = {}
        with closing(self.client.sync_generate_stream(request, **params)) as stream:
            for output in stream:
                finals[output.index] = output
        return _result(finals)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))
        request, params = self._request(messages, stop, kwargs)
        finals: dict[int, ModelOutput] = {}
        async with self.client.generate_stream(request, **params) as stream:
            async for output in stream:
                finals[output.index] = output
        return _result(finals)

    # -- tools and structured output ------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[Mapping[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | bool | Mapping[str, Any] | None = None,
        parallel_tool_calls: bool | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """This model with tools: LangChain tools, pydantic models, functions or dicts.

        :param tool_choice: ``"auto"``, ``"none"``, a tool's name (forces it),
            ``"any"``/``"required"``/``True`` (forces a call: the tool itself
            when there is one, else ``"required"``, which only some models
            accept), or DashScope's ``{"type": "function", ...}`` mapping.
        :param parallel_tool_calls: let the model call several tools at once.
        :param strict: passed to each function definition.
        :raises ValueError: for a ``tool_choice`` naming no bound tool.
        """
        formatted = [convert_to_openai_tool(tool, strict=strict) for tool in tools]
        names = [tool["function"]["name"] for tool in formatted]
        choice = _tool_choice(tool_choice, names)
        if choice is not None:
            kwargs["tool_choice"] = choice
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return self.bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: Mapping[str, Any] | type | None = None,
        *,
        method: Literal["function_calling", "json_mode", "json_schema"] = "function_calling",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """This model answering with instances of ``schema``.

        :param schema: a pydantic model class, a ``TypedDict``, a JSON schema
            or an OpenAI-style function definition.
        :param method: ``"function_calling"`` (a forced tool call; the
            default, supported by every Qwen model that calls tools),
            ``"json_schema"`` (``response_format`` json_schema) or
            ``"json_mode"`` (``response_format`` json_object; the prompt must
            ask for JSON and name the keys).
        :param include_raw: return ``{"raw", "parsed", "parsing_error"}``.
        :param strict: ask the service to keep to the schema.
        :raises ValueError: for an unknown method, other keywords, or no schema
            where the method needs one.
        """
        if kwargs:
            raise ValueError(f"unsupported arguments: {', '.join(sorted(kwargs))}")
        pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
        traced = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
        parser: OutputParserLike[Any]
        if method == "function_calling":
            if schema is None:
                raise ValueError("method='function_calling' needs a schema")
            name = convert_to_openai_tool(schema)["function"]["name"]
            llm = self.bind_tools(
                [cast(Any, schema)],
                tool_choice=name,
                parallel_tool_calls=False,
                strict=strict,
                ls_structured_output_format=traced,
            )
            if pydantic:
                parser = PydanticToolsParser(tools=[cast(Any, schema)], first_tool_only=True)
            else:
                parser = JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        elif method in ("json_mode", "json_schema"):
            if method == "json_mode":
                response_format: dict[str, Any] = {"type": "json_object"}
            else:
                if schema is None:
                    raise ValueError("method='json_schema' needs a schema")
                response_format = {"type": "json_schema", "json_schema": _json_schema(schema)}
                if strict is not None:
                    response_format["json_schema"]["strict"] = strict
            llm = self.bind(response_format=response_format, ls_structured_output_format=traced)
            if pydantic:
                parser = PydanticOutputParser(pydantic_object=cast(Any, schema))
            else:
                parser = JsonOutputParser()
        else:
            raise ValueError(
                f"method must be 'function_calling', 'json_mode' or 'json_schema', not {method!r}"
            )
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=llm) | parsed.with_fallbacks(
            [unparsed], exception_key="parsing_error"
        )


class DashScopeEmbeddings(BaseModel, Embeddings):
    """LangChain embeddings for DashScope on aiotongyi (langchain-community's name).

    Lists longer than the model's per-request limit (10 texts for v3/v4, 25 for
    v1/v2) are split and the parts sent concurrently by
    :meth:`aiotongyi.TongyiLLMClient.embed`; vectors come back in input order.
    Documents are embedded with ``text_type="document"``, queries with ``"query"``.

    :param model: the embedding model (alias ``model_name``).
    :param dimension: the vector size (v3/v4 only; checked against known models).
    :param instruct: a task instruction for queries (v4, English).
    :param api_key: else env ``DASHSCOPE_API_KEY`` (alias ``dashscope_api_key``).
    :param base_url: ``.../api/v1`` of another endpoint (beats ``api_region``).
    :param api_region: a DashScope region such as ``"ap-southeast-1"``.
    :param timeout: seconds for a whole call, or an :class:`aiotongyi.Timeout`.
    :param max_retries: retries of each failed part.
    """

    model: str = Field(default="text-embedding-v4", alias="model_name")
    dimension: int | None = None
    instruct: str | None = None
    api_key: SecretStr | None = Field(
        default_factory=secret_from_env("DASHSCOPE_API_KEY", default=None),
        alias="dashscope_api_key",
    )
    base_url: str | None = None
    api_region: str | None = None
    timeout: float | Timeout | None = None
    max_retries: int = Field(default=2, ge=0)

    model_config = ConfigDict(populate_by_name=True, arbitrary_types_allowed=True)

    _client: TongyiLLMClient | None = PrivateAttr(default=None)
    _client_owner: weakref.ref[DashScopeEmbeddings] | None = PrivateAttr(default=None)
    _client_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @property
    def client(self) -> TongyiLLMClient:
        """The aiotongyi client behind these embeddings (created on first use)."""
        with self._client_lock:
            owner = self._client_owner() if self._client_owner is not None else None
            if self._client is None or owner is not self:
                key = self.api_key.get_secret_value() if self.api_key is not None else None
                self._client = TongyiLLMClient(
                    api_key=key,
                    api_region=self.api_region,
                    base_url=self.base_url,
                    timeout=self.timeout,
                    max_retries=self.max_retries,
                )
                self._client_owner = weakref.ref(self)
                weakref.finalize(self, _close_later, self._client)
            return self._client

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """One vector per text, in order (``text_type="document"``)."""
        if not texts:
            return []
        result = self.client.sync_embed(
            texts, model=self.model, dimension=self.dimension, text_type="document"
        )
        return [list(vector) for vector in result.vectors]

    def embed_query(self, text: str) -> list[float]:
        """The vector of one query (``text_type="query"``, with ``instruct`` when set)."""
        result = self.client.sync_embed(
            text,
            model=self.model,
            dimension=self.dimension,
            text_type="query",
            instruct=self.instruct,
        )
        return list(result.vectors[0])

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """:meth:`embed_documents` on aiotongyi's async client."""
        if not texts:
            return []
        result = await self.client.embed(
            texts, model=self.model, dimension=self.dimension, text_type="document"
        )
        return [list(vector) for vector in result.vectors]

    async def aembed_query(self, text: str) -> list[float]:
        """:meth:`embed_query` on aiotongyi's async client."""
        result = await self.client.embed(
            text,
            model=self.model,
            dimension=self.dimension,
            text_type="query",
            instruct=self.instruct,
        )
        return list(result.vectors[0])


def _close_later(client: TongyiLLMClient) -> None:
    """Close a dropped model's client, on a thread of its own: closing waits for the
    client's loop thread, which must not happen on whatever thread the GC runs."""
    try:
        threading.Thread(
            target=_close_quietly, args=(client,), name="aiotongyi-langchain-close", daemon=True
        ).start()
    except RuntimeError:  # interpreter shutdown: aiotongyi's exit hooks release the rest
        pass


def _close_quietly(client: TongyiLLMClient) -> None:
    try:
        client.close()
    except Exception:  # a loop ending meanwhile; its own shutdown closes that pool
        logger.debug("closing a dropped ChatTongyi's client failed", exc_info=True)


# -- requests -----------------------------------------------------------------------


def _stop_list(stop: object) -> list[str]:
    if isinstance(stop, str):
        return [stop]
    if isinstance(stop, Sequence):
        return [item for item in stop if isinstance(item, str)]
    return []


def _tool_choice(
    choice: str | bool | Mapping[str, Any] | None, names: Sequence[str]
) -> str | dict[str, Any] | None:
    """LangChain's tool_choice values in DashScope's terms."""
    if choice is None or choice == "auto":
        return None if choice is None else "auto"
    if choice is False or choice == "none":
        return "none"
    if choice is True or choice in _FORCING:
        if len(names) == 1:
            return {"type": "function", "function": {"name": names[0]}}
        return "required"
    if isinstance(choice, str):
        if choice not in names:
            raise ValueError(f"tool_choice {choice!r} names none of the tools: {', '.join(names)}")
        return {"type": "function", "function": {"name": choice}}
    if isinstance(choice, Mapping):
        return dict(choice)
    raise ValueError(f"tool_choice must be a str, a bool or a mapping, not {choice!r}")


def _json_schema(schema: Mapping[str, Any] | type) -> dict[str, Any]:
    """DashScope's ``json_schema`` object: ``{"name", "description"?, "schema"}``."""
    converted = convert_to_json_schema(cast(Any, schema))
    body = dict(converted)
    name = body.pop("title", None) or "response"
    description = body.pop("description", None)
    spec: dict[str, Any] = {"name": name, "schema": body}
    if description:
        spec["description"] = description
    return spec


def _to_dashscope(message: BaseMessage) -> dict[str, Any]:
    """One LangChain message as a DashScope message."""
    if isinstance(message, SystemMessage):
        return {"role": "system", "content": message.text}
    if isinstance(message, HumanMessage):
        return {"role": "user", "content": _user_content(message.content)}
    if isinstance(message, AIMessage):
        converted: dict[str, Any] = {"role": "assistant", "content": message.text}
        if message.tool_calls:
            converted["tool_calls"] = [
                {
                    "id": call["id"] or "",
                    "type": "function",
                    "function": {
                        "name": call["name"],
                        "arguments": json.dumps(call["args"], ensure_ascii=False),
                    },
                }
                for call in message.tool_calls
            ]
        if message.additional_kwargs.get("partial") is True:  # a prefix to continue
            converted["partial"] = True
        return converted
    if isinstance(message, ToolMessage):
        content = str(message.text)
        if not content and message.content:
            content = json.dumps(message.content, ensure_ascii=False)
        converted = {"role": "tool", "content": content, "tool_call_id": message.tool_call_id}
        if message.name:
            converted["name"] = message.name
        return converted
    if isinstance(message, FunctionMessage):  # the legacy shape of a tool result
        return {"role": "tool", "content": str(message.text), "name": message.name}
    if isinstance(message, ChatMessage):
        return {"role": message.role, "content": _user_content(message.content)}
    raise ValueError(f"ChatTongyi cannot send a {type(message).__name__}")


def _user_content(content: str | list[str | dict[Any, Any]]) -> str | list[dict[str, Any]]:
    """A string, or DashScope content parts from LangChain / OpenAI-style blocks."""
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for block in content:
        if isinstance(block, str):
            parts.append({"text": block})
        elif block.get("type") == "text":
            parts.append({"text": block.get("text", "")})
        elif block.get("type") in ("image", "audio", "video") and (
            block.get("url") or block.get("base64")
        ):
            kind = block["type"]
            url = block.get("url") or f"data:{block.get('mime_type')};base64,{block['base64']}"
            parts.append({kind: url})
        else:  # OpenAI-style parts and DashScope's own ({"image": ...}) go as they are
            parts.append(dict(block))
    return parts


# -- answers ------------------------------------------------------------------------


class _Chunks:
    """Turns a stream's outputs into LangChain chunks (the first choice only)."""

    def __init__(self) -> None:
        self.arguments: dict[int, int] = {}  # tool-call index -> argument characters sent

    def feed(self, output: ModelOutput) -> ChatGenerationChunk | None:
        if output.index != 0:  # a stream has one generation in LangChain
            return None
        calls = []
        for call in output.tool_calls:
            sent = self.arguments.get(call.index)
            if sent is None:
                calls.append(
                    tool_call_chunk(
                        name=call.name, args=call.arguments, id=call.id, index=call.index
                    )
                )
            elif len(call.arguments) > sent:
                calls.append(tool_call_chunk(args=call.arguments[sent:], index=call.index))
            self.arguments[call.index] = len(call.arguments)
        final = output.finish_reason is not None
        if not (output.delta or output.thinking_delta or calls or final):
            return None
        extra: dict[str, Any] = {}
        if output.thinking_delta:
            extra["reasoning_content"] = output.thinking_delta
        message = AIMessageChunk(
            content=output.delta,
            additional_kwargs=extra,
            tool_call_chunks=calls,
            usage_metadata=_usage(output.usage) if final else None,
            response_metadata=_metadata(output) if final else {},
        )
        info = {"finish_reason": output.finish_reason} if final else None
        return ChatGenerationChunk(message=message, generation_info=info)


def _result(finals: Mapping[int, ModelOutput]) -> ChatResult:
    generations = []
    for index in sorted(finals):
        output = finals[index]
        calls: list[ToolCall] = []
        invalid: list[InvalidToolCall] = []
        for call in output.tool_calls:
            try:
                arguments = json.loads(call.arguments or "{}")
            except ValueError as exc:
                invalid.append(
                    invalid_tool_call(
                        name=call.name,
                        args=call.arguments,
                        id=call.id,
                        error=f"arguments are not JSON: {exc}",
                    )
                )
                continue
            if not isinstance(arguments, dict):
                invalid.append(
                    invalid_tool_call(
                        name=call.name,
                        args=call.arguments,
                        id=call.id,
                        error="arguments are not a JSON object",
                    )
                )
                continue
            calls.append(tool_call(name=call.name, args=arguments, id=call.id))
        extra: dict[str, Any] = {}
        if output.thinking:
            extra["reasoning_content"] = output.thinking
        message = AIMessage(
            content=output.text,
            additional_kwargs=extra,
            tool_calls=calls,
            invalid_tool_calls=invalid,
            usage_metadata=_usage(output.usage),
            response_metadata=_metadata(output),
        )
        generations.append(
            ChatGeneration(message=message, generation_info={"finish_reason": output.finish_reason})
        )
    return ChatResult(generations=generations)


def _usage(usage: Usage | None) -> UsageMetadata | None:
    if usage is None:
        return None
    metadata: dict[str, Any] = {
        "input_tokens": usage.prompt_tokens,
        "output_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }
    inputs = InputTokenDetails()
    if usage.cached_tokens is not None:
        inputs["cache_read"] = usage.cached_tokens
    created = getattr(usage, "cache_creation_input_tokens", None)  # newer aiotongyi
    if isinstance(created, int):
        inputs["cache_creation"] = created
    if inputs:
        metadata["input_token_details"] = inputs
    if usage.reasoning_tokens is not None:
        metadata["output_token_details"] = OutputTokenDetails(reasoning=usage.reasoning_tokens)
    return cast(UsageMetadata, metadata)


def _metadata(output: ModelOutput) -> dict[str, Any]:
    return {
        "model_name": output.model,
        "model_provider": PROVIDER,
        "finish_reason": output.finish_reason,
        "request_id": output.request_id,
    }
