"""Embedding and rerank planning, parsing and merging (pure: no server)."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiotongyi import ProtocolError, RerankItem, SparseValue
from aiotongyi._embeddings import (
    EMBEDDING_PATH,
    RERANK_PATH,
    RerankLimits,
    estimate_tokens,
    merge_embeddings,
    merge_rerank,
    parse_embeddings,
    parse_rerank,
    plan_embeddings,
    plan_rerank,
)

text = st.text(min_size=1, max_size=30).filter(lambda t: t.strip() != "")
texts = st.lists(text, min_size=1, max_size=120)


def body(part: object) -> dict[str, object]:
    raw = part.body  # type: ignore[attr-defined]
    value = json.loads(raw)
    assert isinstance(value, dict)
    return value


def fake_embedding_reply(texts: list[str], *, shuffle: random.Random | None = None) -> dict:
    """What the service would answer: a vector naming its text, in any order."""
    items = [
        {"text_index": i, "embedding": [float(len(t)), float(hash(t) % 1000)]}
        for i, t in enumerate(texts)
    ]
    if shuffle is not None:
        shuffle.shuffle(items)
    return {
        "output": {"embeddings": items},
        "usage": {"total_tokens": len(texts)},
        "request_id": "r",
    }


def score(query: str, document: str) -> float:
    """A per-document score, as a cross-encoder gives (a function of the pair alone)."""
    return (hash((query, document)) % 10_000) / 10_000


def fake_rerank_reply(query: str, documents: list[str], top_n: int | None) -> dict:
    ranked = sorted(
        ({"index": i, "relevance_score": score(query, d)} for i, d in enumerate(documents)),
        key=lambda r: (-r["relevance_score"], r["index"]),
    )
    return {
        "output": {"results": ranked[:top_n] if top_n else ranked},
        "usage": {"total_tokens": 3 * len(documents)},
        "request_id": f"r{len(documents)}",
    }


# -- embeddings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "size"),
    [
        ("text-embedding-v4", 10),
        ("text-embedding-v3", 10),
        ("text-embedding-v2", 25),
        ("text-embedding-v1", 25),
        ("my-new-embedding", 10),
    ],
)
def test_parts_follow_the_model_limit(model: str, size: int) -> None:
    plan = plan_embeddings([f"t{i}" for i in range(61)], model=model)
    assert [len(body(p)["input"]["texts"]) for p in plan.parts] == [size] * (61 // size) + (
        [61 % size] if 61 % size else []
    )
    assert all(body(p)["model"] == model for p in plan.parts)


@given(texts, st.integers(min_value=1, max_value=30), st.randoms())
def test_split_and_reassemble_keeps_every_text_in_order(
    items: list[str], size: int, rnd: random.Random
) -> None:
    plan = plan_embeddings(items, max_texts=size)
    sent = [t for part in plan.parts for t in body(part)["input"]["texts"]]
    assert sent == items
    assert all(len(body(part)["input"]["texts"]) <= size for part in plan.parts)
    answers = []
    for part in plan.parts:
        part_texts = body(part)["input"]["texts"]
        answers.append(parse_embeddings(fake_embedding_reply(part_texts, shuffle=rnd), part, plan))
    result = merge_embeddings(plan, answers, ["r"] * len(plan.parts))
    assert result.vectors == tuple((float(len(t)), float(hash(t) % 1000)) for t in items)
    assert result.usage.total_tokens == len(items)
    assert result.sparse is None


def test_only_given_parameters_are_sent() -> None:
    [part] = plan_embeddings("hi").parts
    assert body(part) == {
        "model": "text-embedding-v4",
        "input": {"texts": ["hi"]},
        "parameters": {},
    }
    [part] = plan_embeddings(
        ["a"], dimension=64, text_type="query", output_type="dense&sparse", instruct="Find docs"
    ).parts
    assert body(part)["parameters"] == {
        "text_type": "query",
        "dimension": 64,
        "output_type": "dense&sparse",
        "instruct": "Find docs",
    }


def test_no_texts_means_no_parts() -> None:
    plan = plan_embeddings([])
    assert plan.parts == ()
    assert merge_embeddings(plan, [], []).vectors == ()


@pytest.mark.parametrize(
    ("texts", "kwargs", "message"),
    [
        (["ok", ""], {}, r"texts\[1\] is empty"),
        (["ok", "  \n"], {}, r"texts\[1\] is empty"),
        (["ok", 3], {}, r"texts\[1\] must be a str, not int"),
        (b"bytes", {}, "must be a str or a sequence of str"),
        (None, {}, "must be a str or a sequence of str"),
        (["a"], {"dimension": 100}, "dimension 100 is not offered by text-embedding-v4"),
        (["a"], {"dimension": 2048, "model": "text-embedding-v3"}, "not offered"),
        (["a"], {"dimension": 0}, "positive int"),
        (["a"], {"dimension": True}, "positive int"),
        (["a"], {"dimension": 1536, "model": "text-embedding-v2"}, "fixed dimension"),
        (["a"], {"output_type": "sparse", "model": "text-embedding-v1"}, "dense vectors only"),
        (["a"], {"output_type": "both"}, "output_type must be one of"),
        (["a"], {"text_type": "passage"}, "text_type must be one of"),
        (["a"], {"model": ""}, "model must be a non-empty str"),
        (["a"], {"instruct": " "}, "instruct must be a non-empty str"),
    ],
)
def test_bad_embedding_calls_are_refused_before_sending(
    texts: object, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plan_embeddings(texts, **kwargs)  # type: ignore[arg-type]


def test_unknown_models_take_any_dimension() -> None:
    [part] = plan_embeddings("a", model="text-embedding-v9", dimension=3000).parts
    assert body(part)["parameters"] == {"dimension": 3000}


def test_sparse_vectors_are_parsed_and_dense_left_empty() -> None:
    plan = plan_embeddings(["wind", "rain"], output_type="sparse")
    [part] = plan.parts
    reply = {
        "output": {
            "embeddings": [
                {
                    "text_index": 1,
                    "sparse_embedding": [{"index": 9, "value": 0.5, "token": "rain"}],
                },
                {
                    "text_index": 0,
                    "sparse_embedding": [{"index": 7, "value": 0.8, "token": "wind"}],
                },
            ]
        },
        "usage": {"total_tokens": 2},
    }
    result = merge_embeddings(plan, [parse_embeddings(reply, part, plan)], [])
    assert result.vectors == ((), ())
    assert result.sparse == ((SparseValue(7, 0.8, "wind"),), (SparseValue(9, 0.5, "rain"),))


@pytest.mark.parametrize(
    "items",
    [
        [{"text_index": 0, "embedding": [1.0]}],  # one left out
        [{"text_index": 0, "embedding": [1.0]}, {"text_index": 0, "embedding": [1.0]}],
        [{"text_index": 0, "embedding": [1.0]}, {"text_index": 2, "embedding": [1.0]}],
        [{"text_index": 0, "embedding": [1.0]}, {"text_index": 1}],
    ],
)
def test_a_reply_that_loses_a_text_is_a_protocol_error(items: list[dict]) -> None:
    plan = plan_embeddings(["a", "b"])
    with pytest.raises(ProtocolError) as caught:
        parse_embeddings(
            {"output": {"embeddings": items}, "request_id": "rid"}, plan.parts[0], plan
        )
    assert caught.value.request_id == "rid"


# -- rerank ----------------------------------------------------------------------


def test_token_estimate_is_conservative_for_ordinary_text() -> None:
    english = "The quick brown fox jumps over the lazy dog near the riverbank."
    assert estimate_tokens(english) >= 14  # ~13 tokens with Qwen's tokenizer
    assert estimate_tokens("你好世界") >= 4
    assert estimate_tokens("3.14159265") >= 10  # digits are one token each
    assert estimate_tokens("🚀🔥") >= 4


def test_a_small_rerank_is_one_request_sent_as_given() -> None:
    plan = plan_rerank("q", ["a", "b"], top_n=1, return_documents=True, instruct="Rank")
    [part] = plan.parts
    assert body(part) == {
        "model": "gte-rerank-v2",
        "input": {"query": "q", "documents": ["a", "b"]},
        "parameters": {"top_n": 1, "return_documents": True, "instruct": "Rank"},
    }


def test_rerank_splits_by_count() -> None:
    plan = plan_rerank("q", [f"d{i}" for i in range(1201)])
    assert [p.count for p in plan.parts] == [500, 500, 201]
    assert "top_n" not in body(plan.parts[0])["parameters"]


def test_rerank_splits_by_estimated_tokens() -> None:
    long_doc = "word " * 1000  # ~2,500 estimated tokens
    plan = plan_rerank("query", [long_doc] * 30)
    limits = RerankLimits(500, 4_000, 30_000)
    for part in plan.parts:
        sent = body(part)["input"]
        cost = sum(
            min(estimate_tokens(sent["query"]), limits.item_tokens)
            + min(estimate_tokens(d), limits.item_tokens)
            for d in sent["documents"]
        )
        assert cost <= limits.request_tokens
    assert len(plan.parts) > 1
    assert sum(p.count for p in plan.parts) == 30


def test_an_item_over_the_per_item_limit_still_fits_alone() -> None:
    huge = "x" * 100_000
    plan = plan_rerank(huge, [huge, huge, "small"])
    assert sum(p.count for p in plan.parts) == 3


@given(
    st.lists(text, min_size=1, max_size=80),
    st.integers(min_value=1, max_value=12),
    st.integers(min_value=20, max_value=400),
    st.one_of(st.none(), st.integers(min_value=1, max_value=100)),
)
def test_split_rerank_matches_one_request(
    documents: list[str], max_documents: int, budget: int, top_n: int | None
) -> None:
    query = "what is relevant"
    limits = RerankLimits(max_documents, 10, max(budget, 40))
    plan = plan_rerank(query, documents, top_n=top_n, limits=limits)
    assert [d for p in plan.parts for d in body(p)["input"]["documents"]] == documents
    answers = []
    for part in plan.parts:
        sent = body(part)
        reply = fake_rerank_reply(
            query, sent["input"]["documents"], sent["parameters"].get("top_n")
        )
        answers.append(parse_rerank(reply, part))
    merged = merge_rerank(plan, answers, [])
    whole = fake_rerank_reply(query, documents, top_n)["output"]["results"]
    assert [(i.index, i.relevance_score) for i in merged.results] == [
        (r["index"], r["relevance_score"]) for r in whole
    ]
    assert merged.usage.total_tokens == 3 * len(documents)


@pytest.mark.parametrize(
    ("query", "documents", "kwargs", "message"),
    [
        ("", ["a"], {}, "query must be a non-empty str"),
        (None, ["a"], {}, "query must be a non-empty str"),
        ("q", [], {}, "documents must not be empty"),
        ("q", ["a", ""], {}, r"documents\[1\] is empty"),
        ("q", ["a", 1], {}, r"documents\[1\] must be a str"),
        ("q", ["a"], {"top_n": 0}, "top_n must be an int >= 1"),
        ("q", ["a"], {"top_n": 1.5}, "top_n must be an int >= 1"),
        ("q", ["a"], {"return_documents": "yes"}, "return_documents must be a bool"),
    ],
)
def test_bad_rerank_calls_are_refused_before_sending(
    query: object, documents: object, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        plan_rerank(query, documents, **kwargs)  # type: ignore[arg-type]


def test_rerank_documents_and_scores_in_input_order() -> None:
    plan = plan_rerank("q", ["a", "b", "c"], return_documents=True)
    reply = {
        "output": {
            "results": [
                {"index": 2, "relevance_score": 0.9, "document": {"text": "c"}},
                {"index": 0, "relevance_score": 0.5, "document": {"text": "a"}},
            ]
        }
    }
    result = merge_rerank(plan, [parse_rerank(reply, plan.parts[0])], ["r"])
    assert result.results == (RerankItem(2, 0.9, "c"), RerankItem(0, 0.5, "a"))
    assert result.scores(3) == [0.5, None, 0.9]


def test_a_split_rerank_that_loses_a_document_is_a_protocol_error() -> None:
    plan = plan_rerank("q", ["a", "b", "c"], limits=RerankLimits(2, 10, 100))
    first, second = plan.parts
    answers = [
        parse_rerank({"output": {"results": [{"index": 0, "relevance_score": 0.1}]}}, first),
        parse_rerank({"output": {"results": [{"index": 0, "relevance_score": 0.2}]}}, second),
    ]
    with pytest.raises(ProtocolError, match="left out documents 1"):
        merge_rerank(plan, answers, [])


def test_paths() -> None:
    assert EMBEDDING_PATH == "/services/embeddings/text-embedding/text-embedding"
    assert RERANK_PATH == "/services/rerank/text-rerank/text-rerank"
