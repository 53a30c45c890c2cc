"""Client adapters: one small class per client, all driven the same way.

An adapter opens a client (untimed), runs one streaming call per ``stream``/
``astream`` call and yields each frame's text: the delta in ``incremental``
mode, the whole text so far in ``cumulative`` (server-side snapshots) and
``merge`` (deltas on the wire, merged by the client library) modes.

Peers are optional: an adapter whose ``requires`` does not import is skipped,
never failed. Register another one with :func:`register`, from this module or a
file passed with ``--adapter-file``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

PROMPT = "请用中文写一段关于流式输出的介绍。"
NATIVE_PATH = "/services/aigc/text-generation/generation"
ALL_MODES = frozenset({"incremental", "cumulative", "merge"})


@dataclass(frozen=True)
class Target:
    """Where and how an adapter connects; the knob prefix is in the base URLs."""

    native_base: str  # .../api/v1
    compat_base: str  # .../compatible-mode/v1
    api_key: str = "sk-fake"
    model: str = "qwen-plus"
    max_connections: int = 1  # concurrency the adapter must allow
    sdk_limits: bool = False  # keep the library's own pool limits


class Adapter:
    """Fields common to both kinds; subclass SyncAdapter or AsyncAdapter."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    is_async: ClassVar[bool] = True
    requires: ClassVar[tuple[str, ...]] = ()
    modes: ClassVar[frozenset[str]] = frozenset({"incremental"})
    bridge: ClassVar[bool] = False  # a sync bridge over an async client (S5 family)
    twin: ClassVar[str | None] = None  # the same library's other path, for S5's xasync

    def __init__(self, target: Target) -> None:
        self.target = target

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": PROMPT}]

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this adapter cannot run here, or None."""
        for module in cls.requires:
            if importlib.util.find_spec(module) is None:
                return f"{module} not installed"
        return None


class SyncAdapter(Adapter):
    """A blocking client."""

    is_async = False

    def open(self) -> None:
        """Build the client (not timed)."""

    def stream(self, mode: str) -> Iterator[str]:
        """One streaming call."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the client."""


class AsyncAdapter(Adapter):
    """An asyncio client."""

    async def aopen(self) -> None:
        """Build the client (not timed)."""

    def astream(self, mode: str) -> AsyncIterator[str]:
        """One streaming call."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Release the client."""


ADAPTERS: dict[str, type[Adapter]] = {}
A = TypeVar("A", bound=type[Adapter])


def register(cls: A) -> A:
    """Class decorator: make an adapter selectable by its ``name``."""
    ADAPTERS[cls.name] = cls
    return cls


# ---------------------------------------------------------------- raw ----
def _native_body(model: str, mode: str, messages: list[dict[str, str]]) -> bytes:
    parameters = {"result_format": "message", "incremental_output": mode != "cumulative"}
    body = {"model": model, "input": {"messages": messages}, "parameters": parameters}
    return json.dumps(body, ensure_ascii=False).encode()


@register
class RawAiohttp(AsyncAdapter):
    """The ratio baseline, exactly as the shared harness defines it."""

    name = "raw-aiohttp"
    description = "baseline: aiohttp POST, response.content lines, json.loads of data: lines"
    requires = ("aiohttp",)
    modes = ALL_MODES

    async def aopen(self) -> None:
        import aiohttp

        limit = 100 if self.target.sdk_limits else max(100, self.target.max_connections)
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit))
        self.url = self.target.native_base + NATIVE_PATH
        self.headers = {
            "Authorization": f"Bearer {self.target.api_key}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "X-DashScope-SSE": "enable",
        }

    async def astream(self, mode: str) -> AsyncIterator[str]:
        body = _native_body(self.target.model, mode, self.messages)
        loads = json.loads
        acc = ""
        async with self.session.post(self.url, data=body, headers=self.headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {await resp.text()}")
            async for line in resp.content:
                if line.startswith(b"data:"):
                    text = loads(line[5:])["output"]["choices"][0]["message"]["content"]
                    if mode == "merge":
                        acc += text
                        text = acc
                    yield text

    async def aclose(self) -> None:
        await self.session.close()


@register
class RawAiohttpAny(RawAiohttp):
    """A tighter bound: chunks split on blank lines, no per-line reads."""

    name = "raw-aiohttp-any"
    description = "tighter bound: iter_any() + split on blank lines (informational)"

    async def astream(self, mode: str) -> AsyncIterator[str]:
        body = _native_body(self.target.model, mode, self.messages)
        loads = json.loads
        acc = ""
        async with self.session.post(self.url, data=body, headers=self.headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {await resp.text()}")
            buf = b""
            async for data in resp.content.iter_any():
                buf += data
                if b"\n\n" not in buf:
                    continue
                *events, buf = buf.split(b"\n\n")
                for event in events:
                    i = event.rfind(b"\ndata:")  # native events end with their data: line
                    if i < 0:
                        continue
                    text = loads(event[i + 6 :])["output"]["choices"][0]["message"]["content"]
                    if mode == "merge":
                        acc += text
                        text = acc
                    yield text


# ----------------------------------------------------------- aiotongyi ----
def _tongyi_params(mode: str) -> dict[str, Any]:
    # cumulative: the service's own snapshots; incremental and merge read the same
    # incremental wire, merge reads the client's cumulative ``text``
    return {"extra_body": {"incremental_output": False}} if mode == "cumulative" else {}


def _tongyi_client(target: Target) -> Any:
    from aiotongyi import TongyiLLMClient

    kwargs: dict[str, Any] = {}
    if not target.sdk_limits:
        kwargs["max_connections"] = max(100, target.max_connections)
    return TongyiLLMClient(
        model="qwen-turbo", api_key=target.api_key, base_url=target.native_base, **kwargs
    )


def _tongyi_unavailable() -> str | None:
    try:
        from aiotongyi import TongyiLLMClient  # noqa: F401
    except ImportError as exc:
        return f"aiotongyi not importable ({exc})"
    return None


@register
class AioTongyi(AsyncAdapter):
    """aiotongyi's async path, through the public API only."""

    name = "aiotongyi"
    description = "aiotongyi: TongyiLLMClient.generate_stream (async)"
    requires = ("aiotongyi",)
    modes = ALL_MODES
    twin = "aiotongyi-sync"

    @classmethod
    def unavailable(cls) -> str | None:
        return _tongyi_unavailable()

    async def aopen(self) -> None:
        self.client = _tongyi_client(self.target)

    async def astream(self, mode: str) -> AsyncIterator[str]:
        stream = self.client.generate_stream(PROMPT, **_tongyi_params(mode))
        if mode == "incremental":
            async for out in stream:
                yield out.delta
        else:
            async for out in stream:
                yield out.text

    async def aclose(self) -> None:
        await self.client.aclose()


@register
class AioTongyiSync(SyncAdapter):
    """aiotongyi's sync bridge (S5 family only)."""

    name = "aiotongyi-sync"
    description = "aiotongyi: TongyiLLMClient.sync_generate_stream (loop thread)"
    requires = ("aiotongyi",)
    modes = ALL_MODES
    bridge = True
    twin = "aiotongyi"

    @classmethod
    def unavailable(cls) -> str | None:
        return _tongyi_unavailable()

    def open(self) -> None:
        self.client = _tongyi_client(self.target)

    def stream(self, mode: str) -> Iterator[str]:
        outputs = self.client.sync_generate_stream(PROMPT, **_tongyi_params(mode))
        if mode == "incremental":
            for out in outputs:
                yield out.delta
        else:
            for out in outputs:
                yield out.text

    def close(self) -> None:
        self.client.close()


# ------------------------------------------------------ dashscope 1.x ----
def _legacy_kwargs(adapter: Adapter, mode: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "model": adapter.target.model,
        "messages": adapter.messages,
        "stream": True,
        "result_format": "message",
        "api_key": adapter.target.api_key,
    }
    if mode != "cumulative":  # cumulative: omitted, the service default
        kwargs["incremental_output"] = mode == "incremental"  # False: SDK-side merge
    return kwargs


def _legacy_text(response: Any) -> str:
    if response.status_code != 200:
        raise RuntimeError(f"status {response.status_code}: {response.code} {response.message}")
    return str(response.output.choices[0].message.content)


@register
class LegacySync(SyncAdapter):
    """dashscope 1.x API, requests."""

    name = "ds-legacy-sync"
    description = "dashscope Generation.call(stream=True) (requests)"
    requires = ("dashscope",)
    modes = ALL_MODES
    twin = "ds-legacy-aio"

    def open(self) -> None:
        import dashscope

        dashscope.base_http_api_url = self.target.native_base
        self.call: Callable[..., Any] = dashscope.Generation.call

    def stream(self, mode: str) -> Iterator[str]:
        for response in self.call(**_legacy_kwargs(self, mode)):
            yield _legacy_text(response)


@register
class LegacyAio(AsyncAdapter):
    """dashscope 1.x API, aiohttp."""

    name = "ds-legacy-aio"
    description = "dashscope AioGeneration.call(stream=True) (aiohttp)"
    requires = ("dashscope",)
    modes = ALL_MODES
    twin = "ds-legacy-sync"

    async def aopen(self) -> None:
        import dashscope

        dashscope.base_http_api_url = self.target.native_base
        self.call: Callable[..., Any] = dashscope.AioGeneration.call
        self.session = None
        # the SDK's shared session has aiohttp's default pool of 100
        if self.target.max_connections > 100 and not self.target.sdk_limits:
            import aiohttp

            connector = aiohttp.TCPConnector(limit=self.target.max_connections)
            self.session = aiohttp.ClientSession(connector=connector, trust_env=True)

    async def astream(self, mode: str) -> AsyncIterator[str]:
        kwargs = _legacy_kwargs(self, mode)
        if self.session is not None:
            kwargs["session"] = self.session
        async for response in await self.call(**kwargs):
            yield _legacy_text(response)

    async def aclose(self) -> None:
        if self.session is not None:
            await self.session.close()
        from dashscope.api_entities.aio_session import close_shared_aio_session

        await close_shared_aio_session()


# ------------------------------------------------------ dashscope 2.x ----
def _v2_kwargs(adapter: Adapter, mode: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "model": adapter.target.model,
        "messages": adapter.messages,
        "stream": True,
    }
    if mode == "cumulative":
        kwargs["parameters"] = {"incremental_output": False}  # server-side snapshots
    elif mode == "merge":
        kwargs["incremental_output"] = False  # incremental wire, SDK-side merge
    return kwargs


def _v2_limits(target: Target) -> None:
    # dashscope v2 reads its pool size from the environment only
    if target.max_connections > 100 and not target.sdk_limits:
        os.environ["DASHSCOPE_HTTP_MAX_CONNECTIONS"] = str(target.max_connections)
        os.environ["DASHSCOPE_HTTP_MAX_KEEPALIVE_CONNECTIONS"] = str(target.max_connections)


def _chunk_text(chunk: Any) -> str | None:
    return (chunk.choices[0].delta.content or "") if chunk.choices else None


@register
class V2Async(AsyncAdapter):
    """dashscope 2.x AsyncClient, native protocol, httpx."""

    name = "ds-v2-async"
    description = "dashscope AsyncClient().chat.completions.create(stream=True) (httpx)"
    requires = ("dashscope",)
    modes = ALL_MODES
    twin = "ds-v2-sync"

    async def aopen(self) -> None:
        import dashscope

        _v2_limits(self.target)
        self.client = dashscope.AsyncClient(
            api_key=self.target.api_key, base_url=self.target.native_base, protocol="native"
        )

    async def astream(self, mode: str) -> AsyncIterator[str]:
        stream = await self.client.chat.completions.create(**_v2_kwargs(self, mode))
        async for chunk in stream:
            if (text := _chunk_text(chunk)) is not None:
                yield text

    async def aclose(self) -> None:
        await self.client.aclose()


@register
class V2Sync(SyncAdapter):
    """dashscope 2.x Client, native protocol, httpx."""

    name = "ds-v2-sync"
    description = "dashscope Client().chat.completions.create(stream=True) (httpx)"
    requires = ("dashscope",)
    modes = ALL_MODES
    twin = "ds-v2-async"

    def open(self) -> None:
        import dashscope

        _v2_limits(self.target)
        self.client = dashscope.Client(
            api_key=self.target.api_key, base_url=self.target.native_base, protocol="native"
        )

    def stream(self, mode: str) -> Iterator[str]:
        for chunk in self.client.chat.completions.create(**_v2_kwargs(self, mode)):
            if (text := _chunk_text(chunk)) is not None:
                yield text

    def close(self) -> None:
        self.client.close()


# ------------------------------------------------------------- openai ----
@register
class OpenAIAsync(AsyncAdapter):
    """openai-python on the compatible endpoint."""

    name = "openai-async"
    description = "openai AsyncOpenAI(base_url=.../compatible-mode/v1), stream=True"
    requires = ("openai",)
    twin = "openai-sync"

    async def aopen(self) -> None:
        openai = importlib.import_module("openai")
        kwargs: dict[str, Any] = {}
        if self.target.max_connections > 1000 and not self.target.sdk_limits:
            n = self.target.max_connections  # openai's default pool is 1000
            limits = type(openai.DEFAULT_CONNECTION_LIMITS)(
                max_connections=n, max_keepalive_connections=n
            )
            kwargs["http_client"] = openai.DefaultAsyncHttpxClient(limits=limits)
        self.client = openai.AsyncOpenAI(
            api_key=self.target.api_key, base_url=self.target.compat_base, **kwargs
        )

    async def astream(self, mode: str) -> AsyncIterator[str]:
        stream = await self.client.chat.completions.create(
            model=self.target.model, messages=self.messages, stream=True
        )
        async for chunk in stream:
            if (text := _chunk_text(chunk)) is not None:
                yield text

    async def aclose(self) -> None:
        await self.client.close()


@register
class OpenAISync(SyncAdapter):
    """openai-python's blocking client (not in the default set)."""

    name = "openai-sync"
    description = "openai OpenAI(base_url=.../compatible-mode/v1), stream=True (extra)"
    requires = ("openai",)
    twin = "openai-async"

    def open(self) -> None:
        openai = importlib.import_module("openai")
        self.client = openai.OpenAI(api_key=self.target.api_key, base_url=self.target.compat_base)

    def stream(self, mode: str) -> Iterator[str]:
        for chunk in self.client.chat.completions.create(
            model=self.target.model, messages=self.messages, stream=True
        ):
            if (text := _chunk_text(chunk)) is not None:
                yield text

    def close(self) -> None:
        self.client.close()


BASELINE = "raw-aiohttp"
DEFAULT_CLIENTS = (
    "raw-aiohttp",
    "raw-aiohttp-any",
    "aiotongyi",
    "aiotongyi-sync",
    "ds-legacy-sync",
    "ds-legacy-aio",
    "ds-v2-async",
    "ds-v2-sync",
    "openai-async",
)
# --quick leaves out the peers' sync clients: the full run has them, CI wants it short
QUICK_CLIENTS = tuple(c for c in DEFAULT_CLIENTS if c not in ("ds-legacy-sync", "ds-v2-sync"))


def load_adapter_file(path: str) -> None:
    """Run a Python file that registers more adapters."""
    spec = importlib.util.spec_from_file_location(
        "benchmarks_adapter_" + str(abs(hash(path))), path
    )
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load adapters from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
