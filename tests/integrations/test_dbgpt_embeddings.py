"""The ``proxy/aiotongyi`` embedding and rerank providers on real DB-GPT, against the emulator.

Skipped unless DB-GPT is installed; ``.ci/dbgpt.sh`` runs it on dbgpt 0.8.x.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", PendingDeprecationWarning)
    if not os.environ.get("AIOTONGYI_REQUIRE_DBGPT"):  # the CI job sets it: fail, never skip
        pytest.importorskip(
            "dbgpt.model.adapter.base",
            reason="DB-GPT is not installed (pip install 'aiotongyi[dbgpt]'; CI: .ci/dbgpt.sh)",
        )
    from dbgpt.core import Chunk, Embeddings, RerankEmbeddings
    from dbgpt.core.interface.parameter import (
        EmbeddingDeployModelParameters,
        RerankerDeployModelParameters,
    )
    from dbgpt.model.adapter.base import get_embedding_adapter
    from dbgpt.model.cluster.worker.embedding_worker import (
        EmbeddingsModelWorker,
        RerankerModelWorker,
    )
    from dbgpt.rag.retriever.rerank import RerankEmbeddingsRanker

from aiotongyi import BadRequestError
from aiotongyi.integrations.dbgpt import PROVIDER
from aiotongyi.integrations.dbgpt.embeddings import (
    TongyiEmbeddingDeployModelParameters,
    TongyiEmbeddings,
    TongyiRerankDeployModelParameters,
    TongyiRerankEmbeddings,
)
from aiotongyi.testing import DashScopeEmulator, http_error
from aiotongyi.testing._embeddings import embed_text, rerank_score

EMBED_PATH = "/api/v1/services/embeddings/text-embedding/text-embedding"
RERANK_PATH = "/api/v1/services/rerank/text-rerank/text-rerank"
PARAGRAPHS = [
    "West Lake in Hangzhou is famous for its willow trees and old pagodas.",
    "Longjing green tea is grown in the hills around Hangzhou.",
    "The Shanghai stock market closed higher on Friday.",
    "Pandas in Chengdu eat bamboo for most of the day.",
    "Green tea leaves are pan fired by hand to stop oxidation.",
    "A reranker scores each document against the query.",
    "Hangzhou hosted the Asian Games in 2023.",
    "Bamboo forests cover the hills of southern China.",
    "Oolong tea is partly oxidised, between green and black tea.",
    "The stock index fell after the bank raised rates.",
    "Tea houses by West Lake serve Longjing tea to visitors.",
    "Embedding models turn text into vectors.",
]


@pytest.fixture
def embeddings(dashscope_emulator: DashScopeEmulator) -> Iterator[TongyiEmbeddings]:
    model = TongyiEmbeddings(
        api_key=dashscope_emulator.api_key, api_base=dashscope_emulator.base_url
    )
    yield model
    model.close()


@pytest.fixture
def reranker(dashscope_emulator: DashScopeEmulator) -> Iterator[TongyiRerankEmbeddings]:
    model = TongyiRerankEmbeddings(
        api_key=dashscope_emulator.api_key, api_base=dashscope_emulator.base_url
    )
    yield model
    model.close()


def sent(emu: DashScopeEmulator, path: str) -> list[dict]:
    return [r.json for r in emu.requests if r.path == path]  # type: ignore[misc]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


# -- registration ----------------------------------------------------------------


def test_providers_are_registered_under_the_chat_provider_key() -> None:
    assert PROVIDER == "proxy/aiotongyi"
    adapter = get_embedding_adapter(PROVIDER, False, "text-embedding-v4")
    assert adapter is not None
    assert adapter.model_param_class() is TongyiEmbeddingDeployModelParameters
    rerank_adapter = get_embedding_adapter(PROVIDER, True, "gte-rerank-v2")
    assert rerank_adapter is not None
    assert rerank_adapter.model_param_class() is TongyiRerankDeployModelParameters
    assert EmbeddingDeployModelParameters.get_subclass(PROVIDER) is (
        TongyiEmbeddingDeployModelParameters
    )
    assert RerankerDeployModelParameters.get_subclass(PROVIDER) is (
        TongyiRerankDeployModelParameters
    )
    assert issubclass(TongyiEmbeddings, Embeddings)
    assert issubclass(TongyiRerankEmbeddings, RerankEmbeddings)


def test_parameter_defaults() -> None:
    params = TongyiEmbeddingDeployModelParameters(name="text-embedding-v4")
    assert (params.provider, params.api_key) == (PROVIDER, "${env:DASHSCOPE_API_KEY}")
    assert params.real_provider_model_name == "text-embedding-v4"
    aliased = TongyiRerankDeployModelParameters(name="my-reranker", backend="qwen3-rerank")
    assert aliased.real_provider_model_name == "qwen3-rerank"


def test_toml_config_through_the_hook(
    tmp_path: Path, dashscope_emulator: DashScopeEmulator
) -> None:
    config = tmp_path / "dbgpt.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [[hooks]]
            path = "aiotongyi.integrations.dbgpt.config_hook"

            [[models.embeddings]]
            name = "text-embedding-v4"
            provider = "proxy/aiotongyi"
            api_key = "${{env:AIOTONGYI_TEST_KEY}}"
            api_base = "{dashscope_emulator.base_url}"
            dimension = 256
            text_type = "document"

            [[models.rerankers]]
            name = "gte-rerank-v2"
            provider = "proxy/aiotongyi"
            api_key = "${{env:AIOTONGYI_TEST_KEY}}"
            api_base = "{dashscope_emulator.base_url}"
            """
        )
    )
    script = textwrap.dedent(
        """
        import sys, warnings
        from dataclasses import dataclass, field
        warnings.simplefilter("ignore")
        from dbgpt.model import scan_model_providers
        from dbgpt.model.adapter.base import get_embedding_adapter
        from dbgpt.model.parameter import ModelsDeployParameters
        from dbgpt.util.configure import ConfigurationManager
        from dbgpt.util.parameter_utils import BaseParameters

        @dataclass
        class App(BaseParameters):
            models: ModelsDeployParameters = field(default_factory=ModelsDeployParameters)

        scan_model_providers()
        app = ConfigurationManager.from_file(sys.argv[1]).parse_config(App, hook_section="hooks")
        emb, rr = app.models.embeddings[0], app.models.rerankers[0]
        embedder = get_embedding_adapter(emb.provider, False, emb.name).load_from_params(emb)
        reranker = get_embedding_adapter(rr.provider, True, rr.name).load_from_params(rr)
        vectors = embedder.embed_documents(["green tea", "stock market"])
        scores = reranker.predict("green tea", ["stock market", "green tea"])
        print(type(emb).__name__, type(rr).__name__, emb.dimension, len(vectors[0]),
              scores[1] > scores[0])
        embedder.close(); reranker.close()
        """
    )
    env = {**os.environ, "AIOTONGYI_TEST_KEY": "sk-from-env"}
    out = subprocess.run(
        [sys.executable, "-c", script, str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [
        "TongyiEmbeddingDeployModelParameters",
        "TongyiRerankDeployModelParameters",
        "256",
        "256",
        "True",
    ]
    [embed_request] = [r for r in dashscope_emulator.requests if r.path == EMBED_PATH]
    assert embed_request.headers["authorization"] == "Bearer sk-from-env"
    assert embed_request.json["parameters"] == {"dimension": 256, "text_type": "document"}


# -- the workers DB-GPT runs -------------------------------------------------------


def stop_and_collect(worker: Any) -> None:
    """DB-GPT's worker.stop() drops the model without closing it (DB-GPT has no hook
    for that): its client, garbage then, releases what it holds with a ResourceWarning."""
    with pytest.warns(ResourceWarning, match="unclosed client"):
        worker.stop()
        gc.collect()


def test_embedding_worker_splits_at_the_model_limit(dashscope_emulator: DashScopeEmulator) -> None:
    params = TongyiEmbeddingDeployModelParameters(
        name="text-embedding-v4",
        api_key=dashscope_emulator.api_key,
        api_base=dashscope_emulator.base_url,
    )
    worker = EmbeddingsModelWorker()
    worker.load_worker(params.name, params)
    worker.start()
    texts = [f"paragraph {i}" for i in range(25)]  # DB-GPT's own provider sends 25 at once
    vectors = worker.embeddings({"model": params.name, "input": texts})
    assert vectors == [embed_text(t, 1024) for t in texts]
    assert sorted(len(b["input"]["texts"]) for b in sent(dashscope_emulator, EMBED_PATH)) == [
        5,
        10,
        10,
    ]
    stop_and_collect(worker)


def test_reranker_worker_scores_in_candidate_order(dashscope_emulator: DashScopeEmulator) -> None:
    params = TongyiRerankDeployModelParameters(
        name="gte-rerank-v2",
        api_key=dashscope_emulator.api_key,
        api_base=dashscope_emulator.base_url,
    )
    worker = RerankerModelWorker()
    worker.load_worker(params.name, params)
    worker.start()
    query = "green tea in Hangzhou"
    [scores] = worker.embeddings({"model": params.name, "input": PARAGRAPHS, "query": query})
    assert scores == [rerank_score(query, p) for p in PARAGRAPHS]
    [body] = sent(dashscope_emulator, RERANK_PATH)
    assert "top_n" not in body["parameters"]
    stop_and_collect(worker)


def test_knowledge_space_flow(
    embeddings: TongyiEmbeddings, reranker: TongyiRerankEmbeddings
) -> None:
    # Index: DB-GPT embeds chunks with embed_documents, and queries the same way.
    chunks = [Chunk(content=p, metadata={"n": i}) for i, p in enumerate(PARAGRAPHS)]
    index = embeddings.embed_documents([c.content for c in chunks])
    [query_vector] = embeddings.embed_documents(["Which tea is grown near Hangzhou?"])
    similarity = [cosine(query_vector, v) for v in index]
    candidates = sorted(range(len(chunks)), key=lambda i: -similarity[i])[:6]
    recalled = [chunks[i] for i in candidates]
    for i, chunk in zip(candidates, recalled, strict=True):
        chunk.score = similarity[i]
    # Rerank: RerankEmbeddingsRanker zips predict()'s scores onto the chunks.
    ranker = RerankEmbeddingsRanker(reranker, topk=3)
    ranked = ranker.rank(recalled, "Which tea is grown near Hangzhou?")
    assert len(ranked) == 3
    assert "tea" in ranked[0].content and "Hangzhou" in ranked[0].content
    scores = [c.score for c in ranked]
    assert scores == sorted(scores, reverse=True)


async def test_knowledge_space_flow_async(
    embeddings: TongyiEmbeddings, reranker: TongyiRerankEmbeddings
) -> None:
    vectors = await embeddings.aembed_documents(PARAGRAPHS)
    query = await embeddings.aembed_query("green tea")
    assert len(vectors) == len(PARAGRAPHS) and len(query) == 1024
    chunks = [Chunk(content=p) for p in PARAGRAPHS]
    ranked = await RerankEmbeddingsRanker(reranker, topk=2).arank(chunks, "green tea")
    assert all({"green", "tea"} <= set(c.content.lower().split()) for c in ranked)
    scores = await reranker.apredict("green tea", PARAGRAPHS)
    assert scores == [rerank_score("green tea", p) for p in PARAGRAPHS]
    await embeddings.aclose()
    await reranker.aclose()


# -- threads, loops, errors --------------------------------------------------------


def test_a_hundred_threads_at_once(
    embeddings: TongyiEmbeddings, reranker: TongyiRerankEmbeddings
) -> None:
    barrier = threading.Barrier(100)

    def embed(i: int) -> int:
        barrier.wait()
        return len(embeddings.embed_documents([f"thread {i}", f"text {i}", "common"]))

    def predict(i: int) -> list[float]:
        return reranker.predict(f"thread {i}", ["nothing", f"thread {i}"])

    with ThreadPoolExecutor(max_workers=100) as pool:
        assert list(pool.map(embed, range(100))) == [3] * 100
        results = list(pool.map(predict, range(50)))
    assert all(len(s) == 2 and s[1] > s[0] for s in results)


def test_sync_methods_from_a_thread_with_a_running_loop(
    embeddings: TongyiEmbeddings, reranker: TongyiRerankEmbeddings
) -> None:
    async def inside() -> tuple[int, int]:
        return len(embeddings.embed_query("tea")), len(reranker.predict("tea", ["a", "tea"]))

    assert asyncio.run(inside()) == (1024, 2)


def test_embed_query_asks_for_query_vectors(
    embeddings: TongyiEmbeddings, dashscope_emulator: DashScopeEmulator
) -> None:
    embeddings.embed_query("what is tea")
    embeddings.embed_documents(["tea is a drink"])
    first, second = sent(dashscope_emulator, EMBED_PATH)
    assert first["parameters"] == {"text_type": "query"}
    assert second["parameters"] == {}


def test_configured_options_are_sent(dashscope_emulator: DashScopeEmulator) -> None:
    model = TongyiEmbeddings(
        model="text-embedding-v3",
        api_key="sk-test",
        api_base=dashscope_emulator.base_url,
        dimension=512,
        text_type="query",
        instruct="Find passages",
    )
    assert len(model.embed_documents(["q"])[0]) == 512
    [body] = sent(dashscope_emulator, EMBED_PATH)
    assert body["model"] == "text-embedding-v3"
    assert body["parameters"] == {
        "dimension": 512,
        "text_type": "query",
        "instruct": "Find passages",
    }
    assert "sk-test" not in repr(model)
    model.close()


def test_predict_gives_one_score_per_candidate_even_for_empty_ones(
    reranker: TongyiRerankEmbeddings, dashscope_emulator: DashScopeEmulator
) -> None:
    scores = reranker.predict("tea", ["tea", "", "coffee", "  "])
    assert scores == [1.0, 0.0, 0.0, 0.0]
    [body] = sent(dashscope_emulator, RERANK_PATH)
    assert body["input"]["documents"] == ["tea", "coffee"]
    assert reranker.predict("tea", []) == []
    assert reranker.predict("tea", [""]) == [0.0]
    assert len(sent(dashscope_emulator, RERANK_PATH)) == 1  # nothing to send for those


def test_api_errors_are_typed_not_nonetype(
    embeddings: TongyiEmbeddings, dashscope_emulator: DashScopeEmulator
) -> None:
    dashscope_emulator.enqueue(http_error(400, "InvalidParameter", "bad input"))
    with pytest.raises(BadRequestError, match="bad input") as caught:
        embeddings.embed_documents(["a", "b"])
    assert caught.value.failed_inputs == (0, 1)
    with pytest.raises(ValueError, match="empty"):
        embeddings.embed_documents(["a", ""])


def test_compatible_mode_api_base_is_mapped(dashscope_emulator: DashScopeEmulator) -> None:
    host = dashscope_emulator.base_url.removesuffix("/api/v1")
    model = TongyiEmbeddings(api_key="k", api_base=host + "/compatible-mode/v1")
    model.embed_documents(["x"])
    assert dashscope_emulator.requests[-1].path == EMBED_PATH
    model.close()


def test_from_parameters_resolves_the_key_variable(
    monkeypatch: pytest.MonkeyPatch, dashscope_emulator: DashScopeEmulator
) -> None:
    monkeypatch.setenv("AIOTONGYI_TEST_KEY", "sk-resolved")
    params = TongyiEmbeddingDeployModelParameters(
        name="alias",
        backend="text-embedding-v2",
        api_key="${env:AIOTONGYI_TEST_KEY}",
        api_base=dashscope_emulator.base_url,
    )
    model = TongyiEmbeddings.from_parameters(params)
    assert len(model.embed_query("x")) == 1536
    request = dashscope_emulator.requests[-1]
    assert request.headers["authorization"] == "Bearer sk-resolved"
    assert request.json["model"] == "text-embedding-v2"
    model.close()
