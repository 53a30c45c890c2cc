"""The same call through the official SDK and through aiotongyi sends the same request.

For every row of ``CASES`` the request is captured from dashscope's v2 client
(respx, sync and async), from its legacy ``Generation.call`` (the emulator's
request log) and from aiotongyi (the emulator's request log). Method, path,
the headers that matter and the parsed JSON body must be equal; the only
relaxations are the ones ``_differences`` lists.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import dashscope
import httpx
import pytest
import respx
from aiohttp.abc import ResolveResult

from aiotongyi import APIConnectionError, TongyiLLMClient
from aiotongyi.testing import DashScopeEmulator, Reply

if TYPE_CHECKING:
    from aiohttp.abc import ResolveResult  # aiohttp >= 3.9; annotations only

from . import _sdk
from ._differences import DELIBERATE_DIFFERENCES, media_type, use

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "城市"}},
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a time zone.",
        "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}},
    },
}
SYSTEM = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
MULTI_TURN = [
    {"role": "system", "content": "You are a poet."},
    {"role": "user", "content": "写一句诗"},
    {"role": "assistant", "content": "春眠不觉晓"},
    {"role": "user", "content": "再来一句"},
]
TOOL_ROUND_TRIP = [
    {"role": "user", "content": "杭州天气怎么样？"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "index": 0,
                "id": "call_5b21e0",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "杭州"}'},
            }
        ],
    },
    {"role": "tool", "content": '{"temp": 21}', "tool_call_id": "call_5b21e0"},
]
IMAGE_MESSAGE = [
    {
        "role": "user",
        "content": [{"image": "https://example.com/cat.png"}, {"text": "What is this?"}],
    }
]
JSON_SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "answer",
        "schema": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
    },
}


@dataclass(frozen=True)
class Case:
    """One call, given in aiotongyi's terms; the SDK's arguments are derived."""

    id: str
    messages: object = "hi"
    params: Mapping[str, Any] = field(default_factory=dict)
    legacy: bool = True  # Generation.call can express it


def case(id: str, messages: object = "hi", legacy: bool = True, **params: Any) -> Case:
    return Case(id, messages, params, legacy)


CASES = [
    case("plain"),
    case("system-prompt", SYSTEM),
    case("multi-turn", MULTI_TURN),
    case("chinese", [{"role": "user", "content": "你好，请介绍一下杭州。"}]),
    case("emoji", [{"role": "user", "content": "Rate this 🚀🔥 (1-5) 👍🏽"}]),
    case("escapes", [{"role": "user", "content": 'quote " back\\slash\nnew\tline \u2028'}]),
    case("model-qwen-max", model="qwen-max"),
    case("model-qwen3-max", model="qwen3-max"),
    case("temperature-0", temperature=0),
    case("temperature-0.7", temperature=0.7),
    case("temperature-1.99", temperature=1.99),
    case("top-p", top_p=0.8),
    case("top-p-1", top_p=1.0),
    case("top-k-0", top_k=0),
    case("top-k-50", top_k=50),
    case("seed-0", seed=0),
    case("seed-42", seed=42),
    case("seed-max", seed=2**31 - 1),
    case("max-tokens-1", max_tokens=1),
    case("max-tokens-512", max_tokens=512),
    case("max-new-tokens-alias", max_new_tokens=256),
    case("stop-str", stop="END"),
    case("stop-list", stop=["\n\n", "Observation:"]),
    case("tools", tools=[WEATHER_TOOL]),
    case("tools-two-auto", tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="auto"),
    case("tool-choice-none", tools=[WEATHER_TOOL], tool_choice="none"),
    case(
        "tool-choice-function",
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    ),
    case("parallel-tool-calls", tools=[WEATHER_TOOL, TIME_TOOL], parallel_tool_calls=True),
    case("tool-round-trip", TOOL_ROUND_TRIP, tools=[WEATHER_TOOL]),
    case("enable-search", enable_search=True),
    case("enable-search-false", enable_search=False, legacy=False),
    case("thinking", enable_thinking=True, thinking_budget=1024),
    case("thinking-off", enable_thinking=False),
    case(
        "response-format-json",
        [{"role": "user", "content": "Answer in json: is the sky blue?"}],
        response_format={"type": "json_object"},
    ),
    case("response-format-text", response_format={"type": "text"}),
    case("response-format-schema", response_format=JSON_SCHEMA),
    case("presence-penalty", presence_penalty=1.5),
    case("presence-penalty-negative", presence_penalty=-2.0),
    case("repetition-penalty", repetition_penalty=1.05),
    case("n-2", n=2),
    case(
        "extra-body-search-options",
        enable_search=True,
        extra_body={"search_options": {"forced_search": True}},
    ),
    case("extra-body-logprobs", extra_body={"logprobs": True, "top_logprobs": 3}),
    case(
        "search-options",
        enable_search=True,
        search_options={
            "forced_search": True,
            "search_strategy": "max",
            "enable_source": True,
            "enable_citation": True,
            "citation_format": "[ref_<number>]",
        },
    ),
    case("logprobs", logprobs=True, top_logprobs=5),
    case("logprobs-no-top", logprobs=True, top_logprobs=0),
    case(
        "code-interpreter",
        model="qwen3-max",
        enable_code_interpreter=True,
        enable_thinking=True,
    ),
    case(
        "vl-high-resolution",
        IMAGE_MESSAGE,
        legacy=False,
        model="qwen-vl-max",
        vl_high_resolution_images=True,
    ),
    case(
        "translation-options",
        [{"role": "user", "content": "我看到这个视频后没有笑"}],
        model="qwen-mt-turbo",
        translation_options={"source_lang": "auto", "target_lang": "English"},
    ),
    case("multimodal-image", IMAGE_MESSAGE, legacy=False, model="qwen-vl-max"),
    case("multimodal-image-any-model", IMAGE_MESSAGE, legacy=False, model="qwen-plus"),
    case(
        "multimodal-audio",
        [{"role": "user", "content": [{"audio": "https://example.com/a.mp3"}, {"text": "转写"}]}],
        legacy=False,
        model="qwen-audio-turbo",
    ),
    case(
        "everything",
        SYSTEM,
        model="qwen-max",
        temperature=0.3,
        top_p=0.9,
        top_k=20,
        seed=7,
        max_tokens=100,
        stop=["END"],
        presence_penalty=0.5,
        repetition_penalty=1.1,
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        parallel_tool_calls=False,
        enable_search=True,
    ),
]


def _model(params: Mapping[str, Any]) -> str:
    return str(params.get("model", "qwen-plus"))


# First-class here, but only reachable through ``parameters=`` in v2's create().
V2_PARAMETERS_ONLY = ("enable_code_interpreter", "vl_high_resolution_images", "translation_options")


def _v2_kwargs(c: Case) -> dict[str, Any]:
    kwargs = {k: v for k, v in c.params.items() if k not in ("model", "extra_body")}
    if "max_new_tokens" in kwargs:
        kwargs["max_tokens"] = kwargs.pop("max_new_tokens")
    parameters = {k: kwargs.pop(k) for k in V2_PARAMETERS_ONLY if k in kwargs}
    parameters.update(c.params.get("extra_body", {}))
    if parameters:
        kwargs["parameters"] = parameters
    return {"model": _model(c.params), "messages": c.messages, "stream": True, **kwargs}


def _legacy_kwargs(c: Case) -> dict[str, Any]:
    kwargs = {k: v for k, v in c.params.items() if k not in ("model", "extra_body")}
    if "max_new_tokens" in kwargs:
        kwargs["max_tokens"] = kwargs.pop("max_new_tokens")
    kwargs.update(c.params.get("extra_body", {}))
    messages = c.messages
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    # aiotongyi always sends these two; legacy only when asked.
    use("always-message-incremental")
    return {
        "model": _model(c.params),
        "messages": messages,
        "api_key": _sdk.SDK_KEY,
        "stream": True,
        "result_format": "message",
        "incremental_output": True,
        **kwargs,
    }


@dataclass(frozen=True)
class Captured:
    method: str
    url: str
    headers: Mapping[str, str]  # lower-case names
    body: object


def _from_httpx(request: httpx.Request) -> Captured:
    return Captured(
        request.method,
        str(request.url),
        {k.lower(): v for k, v in request.headers.items()},
        json.loads(request.content),
    )


def _from_emulator(emu: DashScopeEmulator, index: int = -1) -> Captured:
    recorded = emu.requests[index]
    return Captured(
        recorded.method,
        emu.base_url.rsplit("/api/v1", 1)[0] + recorded.path,
        dict(recorded.headers),
        recorded.json,
    )


def _v2_capture(sdk_client: dashscope.Client, c: Case) -> Captured:
    t = _sdk.load_plain()
    with _sdk.sdk_router(_sdk.respond(t.body, headers=t.response_headers())) as route:
        sdk_client.chat.completions.create(**_v2_kwargs(c)).get_final_message()
    return _from_httpx(route.calls.last.request)


def _path(captured: Captured) -> str:
    return httpx.URL(captured.url).path


def _assert_same_request(mine: Captured, theirs: Captured, *, compare_accept: bool) -> None:
    assert mine.method == theirs.method == "POST"
    assert _path(mine) == _path(theirs)
    for name in ("authorization", "x-dashscope-sse"):
        assert mine.headers.get(name) == theirs.headers.get(name), name
    assert media_type(mine.headers.get("content-type")) == media_type(
        theirs.headers.get("content-type")
    )
    if compare_accept:
        assert mine.headers.get("accept") == theirs.headers.get("accept")
    else:
        use("accept-header")
        assert mine.headers.get("accept") == "text/event-stream"
    use("sdk-identification-headers")
    assert not any(name.startswith("x-dashscope-sdk") for name in mine.headers)
    assert "x-accel-buffering" not in mine.headers
    assert mine.body == theirs.body


@pytest.fixture
async def client(dashscope_emulator: DashScopeEmulator) -> AsyncIterator[TongyiLLMClient]:
    async with TongyiLLMClient(
        model="qwen-plus", api_key=_sdk.SDK_KEY, base_url=dashscope_emulator.base_url, max_retries=0
    ) as ours:
        yield ours


async def _ours_capture(client: TongyiLLMClient, emu: DashScopeEmulator, c: Case) -> Captured:
    # A scripted answer: the emulator would otherwise answer as the request asks
    # (cut by max_tokens, a tool call for tool_choice), and only the request matters here.
    emu.enqueue(Reply(text=["o", "k"], choices=int(c.params.get("n", 1))))
    out = await client.generate(c.messages, **c.params)  # type: ignore[arg-type]
    assert out.finish_reason == "stop"
    return _from_emulator(emu)


def test_table_is_big_enough() -> None:
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
async def test_same_request_as_the_sdk(
    sdk_client: dashscope.Client,
    client: TongyiLLMClient,
    dashscope_emulator: DashScopeEmulator,
    c: Case,
) -> None:
    emu = dashscope_emulator
    mine = await _ours_capture(client, emu, c)
    # The body is compact UTF-8 JSON: no escaped non-ASCII, no spaces.
    ours_raw = emu.requests[-1].body
    assert ours_raw == json.dumps(mine.body, ensure_ascii=False, separators=(",", ":")).encode()
    _assert_same_request(mine, _v2_capture(sdk_client, c), compare_accept=False)
    if not c.legacy:
        return
    with _sdk.legacy_base_url(emu.base_url):
        responses = list(_sdk.legacy_call(**_legacy_kwargs(c)))
    assert responses[-1].status_code == 200
    use("body-serialisation")
    assert emu.requests[-1].body != ours_raw  # same JSON value, other bytes
    _assert_same_request(mine, _from_emulator(emu), compare_accept=True)


async def test_same_request_as_sdk_v2_async(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    c = next(c for c in CASES if c.id == "everything")
    mine = await _ours_capture(client, dashscope_emulator, c)
    t = _sdk.load_plain()
    with _sdk.sdk_router(_sdk.respond(t.body, headers=t.response_headers())) as route:
        sdk = _sdk.v2_async_client()
        try:
            stream = await sdk.chat.completions.create(**_v2_kwargs(c))
            await stream.get_final_message()
        finally:
            await sdk.aclose()
    _assert_same_request(mine, _from_httpx(route.calls.last.request), compare_accept=False)


# ---- incremental_output: the SDK rewrites, aiotongyi does not -------------------------


async def test_incremental_output_false(
    sdk_client: dashscope.Client, client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    use("incremental-output-rewrite")
    await client.generate("hi", extra_body={"incremental_output": False})
    mine = _from_emulator(dashscope_emulator)
    assert mine.body["parameters"]["incremental_output"] is False  # type: ignore[index]
    # v2's escape hatch sends the same body...
    hatch = Case("hatch", params={"extra_body": {"incremental_output": False}})
    assert _v2_capture(sdk_client, hatch).body == mine.body
    # ...while its named flag is rewritten to true and merged client-side.
    t = _sdk.load_plain()
    with _sdk.sdk_router(_sdk.respond(t.body, headers=t.response_headers())) as route:
        sdk_client.chat.completions.create(
            model="qwen-plus", messages="hi", stream=True, incremental_output=False
        ).get_final_message()
    rewritten = json.loads(route.calls.last.request.content)
    assert rewritten["parameters"]["incremental_output"] is True


@pytest.mark.parametrize("model", ["qwen-vl-max", "qvq-max", "qwen-audio-turbo"])
async def test_media_model_text_only_path(
    sdk_client: dashscope.Client,
    client: TongyiLLMClient,
    dashscope_emulator: DashScopeEmulator,
    model: str,
) -> None:
    use("vl-model-path")
    c = Case("text-only", params={"model": model})
    mine = await _ours_capture(client, dashscope_emulator, c)
    theirs = _v2_capture(sdk_client, c)
    assert _path(mine) == "/api/v1" + _sdk.MULTIMODAL_PATH
    assert _path(theirs) == "/api/v1" + _sdk.TEXT_PATH
    assert mine.body == theirs.body


def test_legacy_drops_enable_search_false(
    sdk_client: dashscope.Client, dashscope_emulator: DashScopeEmulator
) -> None:
    use("legacy-drops-false-enable-search")
    c = Case("search-off", params={"enable_search": False})
    with _sdk.legacy_base_url(dashscope_emulator.base_url):
        list(_sdk.legacy_call(**_legacy_kwargs(c)))
    sent = dashscope_emulator.requests[-1].json
    assert isinstance(sent, dict)
    assert "enable_search" not in sent["parameters"]
    assert _v2_capture(sdk_client, c).body["parameters"]["enable_search"] is False  # type: ignore[index]


# ---- regions -------------------------------------------------------------------------------


class _Refuse(aiohttp.abc.AbstractResolver):
    """Resolve every host to a closed loopback port: the request is built, then refused."""

    def __init__(self, port: int) -> None:
        self._port = port

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": self._port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": 0,
            }
        ]

    async def close(self) -> None:
        """Nothing to release."""


@pytest.fixture
def closed_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connect is refused at once
    yield port


async def _ours_region_capture(region: str, closed_port: int, c: Case) -> Captured:
    seen: list[tuple[str, str, dict[str, str]]] = []

    async def on_start(_s: object, _c: object, params: aiohttp.TraceRequestStartParams) -> None:
        seen.append(
            (params.method, str(params.url), {k.lower(): v for k, v in params.headers.items()})
        )

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    connector = aiohttp.TCPConnector(resolver=_Refuse(closed_port))
    async with aiohttp.ClientSession(connector=connector, trace_configs=[trace]) as session:
        async with TongyiLLMClient(
            model="qwen-plus",
            api_key=_sdk.SDK_KEY,
            api_region=region,
            session=session,
            max_retries=0,
        ) as client:
            with pytest.raises(APIConnectionError):
                await client.generate(c.messages, **c.params)  # type: ignore[arg-type]
    method, url, headers = seen[-1]
    return Captured(method, url, headers, None)


# v2 falls back to the shared gateways without a workspace and says so once.
@pytest.mark.filterwarnings("ignore:no workspace configured:UserWarning")
@pytest.mark.parametrize(
    ("region", "sdk_region", "host"),
    [
        ("cn-beijing", "cn-beijing", "dashscope.aliyuncs.com"),
        ("ap-southeast-1", "ap-southeast-1", "dashscope-intl.aliyuncs.com"),
        ("intl", "ap-southeast-1", "dashscope-intl.aliyuncs.com"),
    ],
)
async def test_region_hosts_match_sdk_v2(
    closed_port: int, region: str, sdk_region: str, host: str
) -> None:
    c = CASES[0]
    mine = await _ours_region_capture(region, closed_port, c)
    t = _sdk.load_plain()
    with respx.mock(assert_all_mocked=True) as router:
        route = router.post(url__regex=r"https://.*").mock(
            return_value=_sdk.respond(t.body, headers=t.response_headers())
        )
        sdk = dashscope.Client(
            api_key=_sdk.SDK_KEY, region=sdk_region, protocol="native", max_retries=0
        )
        try:
            sdk.chat.completions.create(**_v2_kwargs(c)).get_final_message()
        finally:
            sdk.close()
    theirs = route.calls.last.request
    assert httpx.URL(mine.url).host == theirs.url.host == host
    assert httpx.URL(mine.url).scheme == theirs.url.scheme == "https"
    assert httpx.URL(mine.url).path == theirs.url.path == "/api/v1" + _sdk.TEXT_PATH
    assert mine.headers.get("authorization") == theirs.headers.get("authorization")
    assert mine.headers.get("x-dashscope-sse") == theirs.headers.get("x-dashscope-sse")


def test_every_difference_is_referenced() -> None:
    """Each listed difference is relaxed somewhere, and nothing else is relaxed."""
    here = Path(__file__).parent
    source = "\n".join(p.read_text(encoding="utf-8") for p in here.glob("*.py"))
    used = set(re.findall(r'\buse\("([a-z0-9-]+)"\)', source))
    assert used == {d.key for d in DELIBERATE_DIFFERENCES}
