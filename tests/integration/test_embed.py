"""embed / rerank (async and sync) against the emulator: splitting, retries, errors, threads."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import pytest

from aiotongyi import (
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    EmbeddingResult,
    RateLimitError,
    RerankItem,
    TongyiLLMClient,
)
from aiotongyi.testing import DashScopeEmulator, Reply, http_error
from aiotongyi.testing._embeddings import embed_text, rerank_score

EMBED_PATH = "/api/v1/services/embeddings/text-embedding/text-embedding"
RERANK_PATH = "/api/v1/services/rerank/text-rerank/text-rerank"


@pytest.fixture
async def client(dashscope_emulator: DashScopeEmulator) -> AsyncIterator[TongyiLLMClient]:
    async with TongyiLLMClient(
        api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url
    ) as c:
        yield c


def cosine(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


def wait_for_requests(emu: DashScopeEmulator, n: int) -> None:
    """Parts cancelled by a failure may still be arriving: let them land in this test."""
    deadline = time.monotonic() + 3
    while len(emu.requests) < n and time.monotonic() < deadline:
        time.sleep(0.01)


def sent(emu: DashScopeEmulator, path: str) -> list[dict]:
    return [r.json for r in emu.requests if r.path == path]  # type: ignore[misc]


# -- embeddings ------------------------------------------------------------------


async def test_one_text(client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator) -> None:
    result = await client.embed("hello world")
    assert isinstance(result, EmbeddingResult)
    assert result.model == "text-embedding-v4"
    assert result.vectors == (tuple(embed_text("hello world", 1024)),)
    assert result.sparse is None
    assert result.usage.total_tokens == 2
    [request] = dashscope_emulator.requests
    assert request.path == EMBED_PATH
    assert request.json == {
        "model": "text-embedding-v4",
        "input": {"texts": ["hello world"]},
        "parameters": {},
    }
    assert result.request_ids == (request.headers.get("x-request-id") or result.request_ids[0],)
    assert request.headers["accept"] == "application/json"
    assert "x-dashscope-sse" not in request.headers
    assert request.headers["authorization"] == f"Bearer {dashscope_emulator.api_key}"


async def test_a_thousand_texts_are_split_and_reassembled_in_order(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    texts = [f"text number {i} about {'cats' if i % 2 else 'dogs'}" for i in range(1000)]
    result = await client.embed(texts, dimension=64)
    assert len(result.vectors) == 1000
    assert result.vectors == tuple(tuple(embed_text(t, 64)) for t in texts)
    bodies = sent(dashscope_emulator, EMBED_PATH)
    assert len(bodies) == 100
    assert sorted(t for b in bodies for t in b["input"]["texts"]) == sorted(texts)
    assert all(len(b["input"]["texts"]) <= 10 for b in bodies)
    assert len(result.request_ids) == 100
    assert result.usage.total_tokens == sum(len(t.split()) for t in texts)


async def test_v2_is_split_by_25(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    result = await client.embed([f"t{i}" for i in range(60)], model="text-embedding-v2")
    assert len(result.vectors[0]) == 1536
    assert sorted(len(b["input"]["texts"]) for b in sent(dashscope_emulator, EMBED_PATH)) == [
        10,
        25,
        25,
    ]


async def test_similar_texts_are_closer(client: TongyiLLMClient) -> None:
    cat, cat2, market = (
        await client.embed(["the cat sat on the mat", "a cat sat on a mat", "stock market news"])
    ).vectors
    assert cosine(cat, cat2) > 0.4
    assert abs(cosine(cat, market)) < 0.2


async def test_sparse_output(client: TongyiLLMClient) -> None:
    result = await client.embed(["wind and rain", "sun"], output_type="dense&sparse")
    assert result.sparse is not None
    assert {v.token for v in result.sparse[0]} == {"wind", "and", "rain"}
    assert len(result.vectors[1]) == 1024
    only = await client.embed(["sun"], output_type="sparse")
    assert only.vectors == ((),)


async def test_parts_run_concurrently_but_bounded(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(*(Reply(first_byte_delay=0.1) for _ in range(32)))
    started = time.perf_counter()
    await client.embed([f"t{i}" for i in range(320)])
    elapsed = time.perf_counter() - started
    assert elapsed < 32 * 0.1 / 2  # sequential would take 3.2 s; 16 at a time ~0.2 s
    assert dashscope_emulator.connections <= 16


async def test_throttled_part_is_retried(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(http_error(429, retry_after=0), http_error(503, body="html"))
    result = await client.embed("again")
    assert len(result.vectors) == 1
    assert len(dashscope_emulator.requests) == 3


async def test_dropped_connection_is_retried(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(reset_before_status=True))
    assert len((await client.embed("x")).vectors) == 1
    assert len(dashscope_emulator.requests) == 2


async def test_body_cut_mid_read_is_retried(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(drop_after_bytes=200), Reply(garbage=b"HTTP/1.1 ???\r\n"))
    result = await client.embed(["cut", "short"])
    assert result.vectors[1] == tuple(embed_text("short", 1024))
    assert len(dashscope_emulator.requests) == 3


async def test_failed_part_names_its_inputs(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    texts = [f"t{i}" for i in range(25)]
    texts[13] = "word " * 9000  # over v4's 8,192 tokens per text
    with pytest.raises(BadRequestError) as caught:
        await client.embed(texts)
    error = caught.value
    assert error.failed_inputs == tuple(range(10, 20))
    assert error.code == "InvalidParameter"
    assert "Range of input length should be [1, 8192]" in str(error)
    assert "inputs 10-19" in str(error)
    assert error.request_id
    await asyncio.to_thread(wait_for_requests, dashscope_emulator, 3)


async def test_retries_exhausted_raise_the_typed_error(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    dashscope_emulator.enqueue(*(http_error(429, retry_after=0) for _ in range(2)))
    async with TongyiLLMClient(
        api_key="k", base_url=dashscope_emulator.base_url, max_retries=1
    ) as c:
        with pytest.raises(RateLimitError) as caught:
            await c.embed(["a", "b"])
    assert caught.value.failed_inputs == (0, 1)


async def test_timeout_covers_the_whole_call(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(Reply(first_byte_delay=2))
    started = time.perf_counter()
    with pytest.raises(APITimeoutError):
        await client.embed("slow", timeout=0.3)
    assert time.perf_counter() - started < 1.5


async def test_bad_input_sends_nothing(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        await client.embed(["ok", ""])
    with pytest.raises(ValueError, match="dimension 100"):
        await client.embed("ok", dimension=100)
    with pytest.raises(ValueError, match="top_n"):
        await client.rerank("q", ["a"], top_n=0)
    assert dashscope_emulator.requests == []
    assert (await client.embed([])).vectors == ()
    assert dashscope_emulator.requests == []


async def test_missing_key_and_closed_client(
    dashscope_emulator: DashScopeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    async with TongyiLLMClient(base_url=dashscope_emulator.base_url) as c:
        with pytest.raises(AuthenticationError):
            await c.embed("x")
        with pytest.raises(AuthenticationError):
            await c.rerank("q", ["x"])
    assert dashscope_emulator.requests == []
    with pytest.raises(RuntimeError, match="closed"):
        await c.embed("x")


async def test_cancelling_a_call_closes_its_connections(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(*(Reply(first_byte_delay=5) for _ in range(8)))
    task = asyncio.ensure_future(client.embed([f"t{i}" for i in range(80)]))
    await asyncio.sleep(0.3)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(dashscope_emulator.wait_for_open_connections, 0, 3.0)


# -- rerank ----------------------------------------------------------------------


async def test_rerank_best_first(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    docs = ["cats purr", "what is a reranker", "rerankers sort documents"]
    ranked = await client.rerank("what is a reranker", docs, top_n=2, return_documents=True)
    assert ranked.model == "gte-rerank-v2"
    assert ranked.results[0] == RerankItem(1, 1.0, "what is a reranker")
    assert len(ranked.results) == 2
    [request] = dashscope_emulator.requests
    assert request.path == RERANK_PATH
    assert request.json == {
        "model": "gte-rerank-v2",
        "input": {"query": "what is a reranker", "documents": docs},
        "parameters": {"top_n": 2, "return_documents": True},
    }


async def test_split_rerank_matches_one_ranking(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    query = "green tea from hangzhou"
    docs = [
        f"doc {i} {'green' if i % 3 else ''} {'tea' if i % 7 else 'coffee'}" for i in range(1200)
    ]
    ranked = await client.rerank(query, docs, top_n=50)
    bodies = sent(dashscope_emulator, RERANK_PATH)
    assert sorted(len(b["input"]["documents"]) for b in bodies) == [200, 500, 500]
    assert all("top_n" not in b["parameters"] for b in bodies)
    expected = sorted(
        ((rerank_score(query, d), i) for i, d in enumerate(docs)), key=lambda p: (-p[0], p[1])
    )[:50]
    assert [(i.index, i.relevance_score) for i in ranked.results] == [(i, s) for s, i in expected]
    assert len(ranked.request_ids) == 3


async def test_failed_rerank_part_names_its_documents(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    dashscope_emulator.enqueue(http_error(400, "InvalidParameter", "bad documents"))
    async with TongyiLLMClient(api_key="k", base_url=dashscope_emulator.base_url) as c:
        with pytest.raises(BadRequestError, match="bad documents") as caught:
            await c.rerank("q", [f"d{i}" for i in range(600)])
    # Whichever part reached the server first got the error; its documents are named.
    assert caught.value.failed_inputs in (tuple(range(500)), tuple(range(500, 600)))
    await asyncio.to_thread(wait_for_requests, dashscope_emulator, 2)


async def test_rerank_splits_by_token_budget(
    client: TongyiLLMClient, dashscope_emulator: DashScopeEmulator
) -> None:
    docs = [("tea " * 1500) + str(i) for i in range(20)]  # ~3,000+ estimated tokens each
    ranked = await client.rerank("tea", docs)
    assert len(ranked.results) == 20
    assert len(sent(dashscope_emulator, RERANK_PATH)) > 1


# -- sync ------------------------------------------------------------------------


def test_sync_from_many_threads(dashscope_emulator: DashScopeEmulator) -> None:
    with TongyiLLMClient(
        api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url
    ) as c:

        def work(i: int) -> tuple[int, int]:
            vectors = c.sync_embed([f"thread {i} a", f"thread {i} b"]).vectors
            scores = c.sync_rerank(f"thread {i}", ["x", f"thread {i}"]).results
            return len(vectors), scores[0].index

        with ThreadPoolExecutor(max_workers=32) as pool:
            assert list(pool.map(work, range(100))) == [(2, 1)] * 100


def test_sync_from_a_thread_with_a_running_loop(dashscope_emulator: DashScopeEmulator) -> None:
    with TongyiLLMClient(
        api_key=dashscope_emulator.api_key, base_url=dashscope_emulator.base_url
    ) as c:

        async def inside() -> int:
            return len(c.sync_embed([f"t{i}" for i in range(30)]).vectors)

        assert asyncio.run(inside()) == 30
        loops: list[int] = []
        thread = threading.Thread(target=lambda: loops.append(asyncio.run(inside())))
        thread.start()
        thread.join()
        assert loops == [30]


# -- the emulator's limits ------------------------------------------------------


async def test_emulator_refuses_what_the_service_refuses(
    dashscope_emulator: DashScopeEmulator,
) -> None:
    url = dashscope_emulator.base_url.removesuffix("/api/v1")
    headers = {"Authorization": "Bearer k"}
    async with aiohttp.ClientSession() as session:

        async def post(path: str, body: dict) -> tuple[int, dict]:
            async with session.post(url + path, json=body, headers=headers) as response:
                return response.status, await response.json()

        status, body = await post(
            EMBED_PATH, {"model": "text-embedding-v4", "input": {"texts": ["a"] * 11}}
        )
        assert (status, body["code"]) == (400, "InvalidParameter")
        assert body["message"] == (
            "batch size is invalid, it should not be larger than 10.: input.contents"
        )
        status, body = await post(
            EMBED_PATH, {"model": "text-embedding-v1", "input": {"texts": ["a"] * 26}}
        )
        assert "larger than 25.: payload.input.contents" in body["message"]
        status, body = await post(
            EMBED_PATH,
            {
                "model": "text-embedding-v4",
                "input": {"texts": ["a"]},
                "parameters": {"dimension": 7},
            },
        )
        assert status == 400
        status, body = await post(
            RERANK_PATH,
            {"model": "gte-rerank-v2", "input": {"query": "q", "documents": ["d"] * 501}},
        )
        assert (status, body["code"]) == (400, "InvalidParameter")
        status, body = await post(
            RERANK_PATH,
            {"model": "gte-rerank-v2", "input": {"query": "q", "documents": ["w " * 3000] * 12}},
        )
        assert body["message"] == "Range of input length should be [1, 30000]"
        assert body["request_id"]


def test_exit_with_an_unclosed_client_is_quiet() -> None:
    script = textwrap.dedent(
        """
        import asyncio
        from aiotongyi import TongyiLLMClient
        from aiotongyi.testing import DashScopeEmulator

        emu = DashScopeEmulator().start()
        client = TongyiLLMClient(base_url=emu.base_url, api_key=emu.api_key)
        print(len(client.sync_embed([f"t{i}" for i in range(30)]).vectors))

        async def main():
            print(len((await client.embed([f"t{i}" for i in range(30)])).vectors))
            print(len((await client.rerank("q", ["q", "x"])).results))

        asyncio.run(main())
        asyncio.run(main())  # a second loop: its own pool
        """
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-X", "dev", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["30", "30", "2", "30", "2"]
    assert result.stderr == ""
