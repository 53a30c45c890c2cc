"""embed / rerank send the same requests as the official SDK's embedding and rerank calls.

Each case goes through aiotongyi (the emulator's request log), the legacy
``TextEmbedding.call`` / ``TextReRank.call`` / ``AioTextReRank.call`` (pointed
at the emulator) and the v2 client's ``embeddings.create`` / ``rerank.create``
(sync and async, answered by respx).  Method, path, key, content type and the
parsed body must be equal; neither side may send ``X-DashScope-SSE`` or
``X-DashScope-Async`` (the latter turns the path into the batch-job API).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import dashscope
import httpx
import pytest
import respx

from aiotongyi import TongyiLLMClient
from aiotongyi.testing import DashScopeEmulator

from . import _sdk
from ._differences import media_type, use

EMBED_PATH = "/services/embeddings/text-embedding/text-embedding"
RERANK_PATH = "/services/rerank/text-rerank/text-rerank"
_LEGACY: Any = dashscope  # the SDK's stubs type these calls loosely


@dataclass(frozen=True)
class Captured:
    path: str
    headers: Mapping[str, str]
    body: object


@dataclass(frozen=True)
class EmbedCase:
    id: str
    texts: str | list[str] = "hello"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RerankCase:
    id: str
    query: str = "what is a reranker"
    documents: list[str] = field(default_factory=lambda: ["doc a", "a reranker sorts docs"])
    params: Mapping[str, Any] = field(default_factory=dict)


EMBED_CASES = [
    EmbedCase("one-str"),
    EmbedCase("list", ["first", "second", "third"]),
    EmbedCase("chinese", ["你好，杭州", "西湖龙井"]),
    EmbedCase("ten-texts", [f"text {i}" for i in range(10)]),
    EmbedCase("dimension", params={"dimension": 256}),
    EmbedCase("text-type-query", params={"text_type": "query"}),
    EmbedCase("text-type-document", params={"text_type": "document"}),
    EmbedCase("output-sparse", params={"output_type": "sparse"}),
    EmbedCase("output-both", params={"output_type": "dense&sparse"}),
    EmbedCase("instruct", params={"instruct": "Given a question, find passages"}),
    EmbedCase("model-v3", params={"model": "text-embedding-v3", "dimension": 512}),
    EmbedCase("model-v2", ["a", "b"], params={"model": "text-embedding-v2"}),
    EmbedCase(
        "everything",
        ["q1", "q2"],
        params={
            "model": "text-embedding-v4",
            "dimension": 2048,
            "text_type": "query",
            "output_type": "dense&sparse",
            "instruct": "Retrieve",
        },
    ),
]
RERANK_CASES = [
    RerankCase("plain"),
    RerankCase("top-n", params={"top_n": 1}),
    RerankCase("return-documents", params={"return_documents": True}),
    RerankCase("return-documents-false", params={"return_documents": False}),
    RerankCase("instruct", params={"model": "qwen3-rerank", "instruct": "Rank by relevance"}),
    RerankCase("chinese", "什么是重排序", ["重排序模型", "西湖"], {"top_n": 2}),
    RerankCase(
        "everything",
        params={"model": "gte-rerank-v2", "top_n": 2, "return_documents": True},
    ),
]


def _model(params: Mapping[str, Any], default: str) -> str:
    return str(params.get("model", default))


def _rest(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != "model"}


def _from_emulator(emu: DashScopeEmulator) -> Captured:
    recorded = emu.requests[-1]
    return Captured(recorded.path.removeprefix("/api/v1"), dict(recorded.headers), recorded.json)


def _from_httpx(request: httpx.Request) -> Captured:
    return Captured(
        request.url.path.removeprefix("/api/v1"),
        {k.lower(): v for k, v in request.headers.items()},
        json.loads(request.content),
    )


def _assert_same(mine: Captured, theirs: Captured) -> None:
    assert mine.path == theirs.path
    assert mine.headers.get("authorization") == theirs.headers.get("authorization")
    assert media_type(mine.headers.get("content-type")) == media_type(
        theirs.headers.get("content-type")
    )
    for side in (mine, theirs):
        assert "x-dashscope-sse" not in side.headers
        assert "x-dashscope-async" not in side.headers
    use("sdk-identification-headers")
    assert not any(name.startswith("x-dashscope-sdk") for name in mine.headers)
    assert mine.headers["accept"] == "application/json"
    assert mine.body == theirs.body


@pytest.fixture
async def ours(dashscope_emulator: DashScopeEmulator) -> AsyncIterator[TongyiLLMClient]:
    async with TongyiLLMClient(
        api_key=_sdk.SDK_KEY, base_url=dashscope_emulator.base_url, max_retries=0
    ) as client:
        yield client


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    """The v2 SDK's embedding and rerank paths, answered with a minimal valid reply."""
    embed_reply = {
        "output": {"embeddings": [{"text_index": 0, "embedding": [0.1, 0.2]}]},
        "usage": {"total_tokens": 1},
        "request_id": "rid-embed",
    }
    rerank_reply = {
        "output": {"results": [{"index": 0, "relevance_score": 0.5}]},
        "usage": {"total_tokens": 3},
        "request_id": "rid-rerank",
    }
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as mock:
        mock.post(_sdk.SDK_BASE_URL + EMBED_PATH).mock(
            return_value=httpx.Response(200, json=embed_reply)
        )
        mock.post(_sdk.SDK_BASE_URL + RERANK_PATH).mock(
            return_value=httpx.Response(200, json=rerank_reply)
        )
        yield mock


@pytest.mark.parametrize("c", EMBED_CASES, ids=[c.id for c in EMBED_CASES])
async def test_embed_request_matches_the_sdk(
    c: EmbedCase,
    ours: TongyiLLMClient,
    dashscope_emulator: DashScopeEmulator,
    sdk_client: dashscope.Client,
    router: respx.MockRouter,
) -> None:
    emu = dashscope_emulator
    await ours.embed(c.texts, **c.params)
    mine = _from_emulator(emu)
    model = _model(c.params, "text-embedding-v4")

    with _sdk.legacy_base_url(emu.base_url):
        response = _LEGACY.TextEmbedding.call(
            model=model, input=c.texts, api_key=_sdk.SDK_KEY, **_rest(c.params)
        )
    assert response.status_code == 200
    _assert_same(mine, _from_emulator(emu))

    sdk_client.embeddings.create(model=model, input=c.texts, **_rest(c.params))
    _assert_same(mine, _from_httpx(router.calls.last.request))

    client = _sdk.v2_async_client()
    try:
        await client.embeddings.create(model=model, input=c.texts, **_rest(c.params))
    finally:
        await client.aclose()
    _assert_same(mine, _from_httpx(router.calls.last.request))


@pytest.mark.parametrize("c", RERANK_CASES, ids=[c.id for c in RERANK_CASES])
async def test_rerank_request_matches_the_sdk(
    c: RerankCase,
    ours: TongyiLLMClient,
    dashscope_emulator: DashScopeEmulator,
    sdk_client: dashscope.Client,
    router: respx.MockRouter,
) -> None:
    emu = dashscope_emulator
    await ours.rerank(c.query, c.documents, **c.params)
    mine = _from_emulator(emu)
    model = _model(c.params, "gte-rerank-v2")
    kwargs = {"model": model, "query": c.query, "documents": c.documents, **_rest(c.params)}

    with _sdk.legacy_base_url(emu.base_url):
        response = _LEGACY.TextReRank.call(api_key=_sdk.SDK_KEY, **kwargs)
        assert response.status_code == 200
        _assert_same(mine, _from_emulator(emu))
        try:
            response = await _LEGACY.AioTextReRank.call(api_key=_sdk.SDK_KEY, **kwargs)
        finally:
            await _sdk.close_legacy_aio_session()
        assert response.status_code == 200
        _assert_same(mine, _from_emulator(emu))

    sdk_client.rerank.create(**kwargs)
    _assert_same(mine, _from_httpx(router.calls.last.request))


async def test_split_call_sends_what_the_sdk_sends_per_batch(
    ours: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    """25 texts: the SDK user loops over batches of 10; aiotongyi sends those same bodies."""
    texts = [f"t{i}" for i in range(25)]
    await ours.embed(texts, dimension=64)
    mine = [r.json for r in dashscope_emulator.requests]
    dashscope_emulator.reset()
    with _sdk.legacy_base_url(dashscope_emulator.base_url):
        for start in range(0, 25, 10):
            _LEGACY.TextEmbedding.call(
                model="text-embedding-v4",
                input=texts[start : start + 10],
                api_key=_sdk.SDK_KEY,
                dimension=64,
            )
    theirs = [r.json for r in dashscope_emulator.requests]
    assert sorted(mine, key=str) == sorted(theirs, key=str)
