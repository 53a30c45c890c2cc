"""Embeddings and rerank without I/O: result types, validation, bodies, splitting, merging.

DashScope caps each request (texts per embedding request, documents and
tokens per rerank request); this module cuts a call into parts that fit,
builds each part's body, and puts the parts' answers back together in input
order (EMBEDDINGS.md). ``_embed_call`` sends the parts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._exceptions import ProtocolError
from ._models import Usage

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "DEFAULT_RERANK_MODEL",
    "EMBEDDING_PATH",
    "RERANK_PATH",
    "EmbeddingAnswer",
    "EmbeddingLimits",
    "EmbeddingPlan",
    "EmbeddingResult",
    "RequestPart",
    "RerankAnswer",
    "RerankItem",
    "RerankLimits",
    "RerankPlan",
    "RerankResult",
    "SparseValue",
    "check_texts",
    "describe_inputs",
    "embedding_limits",
    "estimate_tokens",
    "merge_embeddings",
    "merge_rerank",
    "parse_embeddings",
    "parse_rerank",
    "plan_embeddings",
    "plan_rerank",
    "rerank_limits",
]

DEFAULT_EMBEDDING_MODEL = "text-embedding-v4"
DEFAULT_RERANK_MODEL = "gte-rerank-v2"
EMBEDDING_PATH = "/services/embeddings/text-embedding/text-embedding"
RERANK_PATH = "/services/rerank/text-rerank/text-rerank"

_TEXT_TYPES = frozenset({"query", "document"})
_OUTPUT_TYPES = frozenset({"dense", "sparse", "dense&sparse"})


# -- results ---------------------------------------------------------------------


@dataclass(frozen=True)
class SparseValue:
    """One non-zero entry of a sparse embedding.

    :param index: the vocabulary position.
    :param value: its weight.
    :param token: the token it stands for, when the service says.
    """

    index: int
    value: float
    token: str | None = None


@dataclass(frozen=True)
class EmbeddingResult:
    """The embeddings of a call, one per input text, in input order.

    :param vectors: the dense vectors (``()`` entries when only sparse ones were asked).
    :param sparse: the sparse vectors when ``output_type`` asked for them, else ``None``.
    :param usage: tokens of every part, summed (``total_tokens``, also in ``prompt_tokens``).
    :param model: the model the texts were sent to.
    :param request_ids: one DashScope request id per part sent, in input order.
    """

    vectors: tuple[tuple[float, ...], ...]
    sparse: tuple[tuple[SparseValue, ...], ...] | None
    usage: Usage
    model: str
    request_ids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.vectors)


@dataclass(frozen=True)
class RerankItem:
    """One ranked document.

    :param index: its position in the ``documents`` given to the call.
    :param relevance_score: the service's score; higher is more relevant.
    :param document: its text, when ``return_documents=True``.
    """

    index: int
    relevance_score: float
    document: str | None = None


@dataclass(frozen=True)
class RerankResult:
    """The documents of a rerank call, best first (``top_n`` of them when given).

    :param results: the ranked items; equal scores keep input order.
    :param usage: tokens of every part, summed.
    :param model: the model the documents were sent to.
    :param request_ids: one DashScope request id per part sent.
    """

    results: tuple[RerankItem, ...]
    usage: Usage
    model: str
    request_ids: tuple[str, ...]

    def scores(self, n_documents: int) -> list[float | None]:
        """The scores in document order (``None`` for documents ``top_n`` left out)."""
        scores: list[float | None] = [None] * n_documents
        for item in self.results:
            scores[item.index] = item.relevance_score
        return scores


# -- limits ----------------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingLimits:
    """What one embedding request of a model may hold."""

    max_texts: int
    dimensions: frozenset[int] | None  # None: any positive dimension is passed on
    v3_parameters: bool  # dimension and output_type exist (v3 and newer)


@dataclass(frozen=True)
class RerankLimits:
    """What one rerank request of a model may hold.

    The service truncates a query or document longer than ``item_tokens``,
    so no single item costs more than that against ``request_tokens``.
    """

    max_documents: int
    item_tokens: int
    request_tokens: int


_V1_V2 = EmbeddingLimits(25, None, v3_parameters=False)
_EMBEDDING_LIMITS: dict[str, EmbeddingLimits] = {
    "text-embedding-v1": _V1_V2,
    "text-embedding-v2": _V1_V2,
    "text-embedding-v3": EmbeddingLimits(
        10, frozenset({1024, 768, 512, 256, 128, 64}), v3_parameters=True
    ),
    "text-embedding-v4": EmbeddingLimits(
        10, frozenset({2048, 1536, 1024, 768, 512, 256, 128, 64}), v3_parameters=True
    ),
}
_UNKNOWN_EMBEDDING = EmbeddingLimits(10, None, v3_parameters=True)

_GTE = RerankLimits(500, 4_000, 30_000)
_RERANK_LIMITS: dict[str, RerankLimits] = {
    "gte-rerank": _GTE,
    "gte-rerank-v2": _GTE,
    # 120,000 in newer docs, 30,000 in older ones: the smaller one is safe.
    "qwen3-rerank": RerankLimits(500, 4_000, 30_000),
    "qwen3-vl-rerank": RerankLimits(100, 8_000, 120_000),
}
_UNKNOWN_RERANK = RerankLimits(100, 4_000, 30_000)


def embedding_limits(model: str) -> EmbeddingLimits:
    """The limits of a known model; 10 texts and no dimension check for others."""
    return _EMBEDDING_LIMITS.get(model, _UNKNOWN_EMBEDDING)


def rerank_limits(model: str) -> RerankLimits:
    """The limits of a known model; the smallest known ones for others."""
    return _RERANK_LIMITS.get(model, _UNKNOWN_RERANK)


def estimate_tokens(text: str) -> int:
    """A conservative token count for budgeting rerank requests (never sent).

    Counts one token per digit (Qwen's tokenizer splits numbers digit by
    digit), one per non-ASCII character (a CJK character is at most one
    token in practice), two for a character outside the BMP (emoji), and one
    per two other ASCII characters (English averages about four per token),
    plus two for the separators around each item.  It over-estimates ordinary
    text two- to three-fold, so parts stay under the budget; text built to
    defeat it (rare characters split into several byte tokens) could still be
    rejected, and that error then names its inputs.
    """
    digits = sum(text.count(d) for d in "0123456789")
    ascii_other = 0
    wide = 0
    astral = 0
    for char in text:
        code = ord(char)
        if code < 128:
            ascii_other += 1
        elif code > 0xFFFF:
            astral += 1
        else:
            wide += 1
    ascii_other -= digits
    return 2 + digits + wide + 2 * astral + (ascii_other + 1) // 2


# -- validation ------------------------------------------------------------------


def check_texts(texts: str | Sequence[str], what: str = "texts") -> list[str]:
    """``texts`` as a list, or ``ValueError`` naming the first bad item."""
    if isinstance(texts, str):
        items = [texts]
    elif not isinstance(texts, Sequence) or isinstance(texts, bytes | bytearray):  # type: ignore[unreachable]
        raise ValueError(f"{what} must be a str or a sequence of str, not {type(texts).__name__}")
    else:
        items = list(texts)
    for position, text in enumerate(items):
        if not isinstance(text, str):
            raise ValueError(f"{what}[{position}] must be a str, not {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"{what}[{position}] is empty; DashScope rejects empty texts")
    return items


def _check_model(model: str | None, default: str) -> str:
    if model is None:
        return default
    if not isinstance(model, str) or not model:
        raise ValueError(f"model must be a non-empty str, not {model!r}")
    return model


def _check_choice(name: str, value: str | None, allowed: frozenset[str]) -> None:
    if value is not None and value not in allowed:
        raise ValueError(f"{name} must be one of {sorted(allowed)}, not {value!r}")


def _check_instruct(instruct: str | None) -> None:
    if instruct is not None and (not isinstance(instruct, str) or not instruct.strip()):
        raise ValueError(f"instruct must be a non-empty str, not {instruct!r}")


# -- embeddings ------------------------------------------------------------------


@dataclass(frozen=True)
class RequestPart:
    """One request of a split call: inputs (texts, documents) ``[start, start + count)``."""

    start: int
    count: int
    body: bytes

    @property
    def indices(self) -> range:
        return range(self.start, self.start + self.count)


@dataclass(frozen=True)
class EmbeddingPlan:
    """A validated embedding call, cut into requests."""

    model: str
    n_texts: int
    sparse: bool
    dense: bool
    parts: tuple[RequestPart, ...]


def plan_embeddings(
    texts: str | Sequence[str],
    *,
    model: str | None = None,
    dimension: int | None = None,
    text_type: str | None = None,
    output_type: str | None = None,
    instruct: str | None = None,
    max_texts: int | None = None,
) -> EmbeddingPlan:
    """Validate an embedding call and cut it into bodies of at most the model's texts each.

    :param max_texts: override the model's texts per request (tests, new models).
    :raises ValueError: for empty or non-str texts and parameters the model refuses.
    """
    items = check_texts(texts)
    model = _check_model(model, DEFAULT_EMBEDDING_MODEL)
    limits = embedding_limits(model)
    _check_choice("text_type", text_type, _TEXT_TYPES)
    _check_choice("output_type", output_type, _OUTPUT_TYPES)
    _check_instruct(instruct)
    if dimension is not None:
        if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
            raise ValueError(f"dimension must be a positive int, not {dimension!r}")
        if not limits.v3_parameters:
            raise ValueError(f"{model} has a fixed dimension of 1536; dimension is for v3 and v4")
        if limits.dimensions is not None and dimension not in limits.dimensions:
            allowed = ", ".join(str(d) for d in sorted(limits.dimensions, reverse=True))
            raise ValueError(f"dimension {dimension} is not offered by {model} (one of {allowed})")
    if output_type not in (None, "dense") and not limits.v3_parameters:
        raise ValueError(f"{model} has dense vectors only; output_type is for v3 and v4")
    size = limits.max_texts if max_texts is None else max_texts
    if size < 1:
        raise ValueError(f"max_texts must be >= 1, not {size!r}")
    given = {
        "text_type": text_type,
        "dimension": dimension,
        "output_type": output_type,
        "instruct": instruct,
    }
    parameters = {name: value for name, value in given.items() if value is not None}
    parts = tuple(
        RequestPart(
            start,
            len(chunk),
            _dumps({"model": model, "input": {"texts": chunk}, "parameters": parameters}),
        )
        for start in range(0, len(items), size)
        for chunk in (items[start : start + size],)
    )
    kind = output_type or "dense"
    return EmbeddingPlan(model, len(items), "sparse" in kind, "dense" in kind, parts)


@dataclass(frozen=True)
class EmbeddingAnswer:
    vectors: list[tuple[float, ...]]
    sparse: list[tuple[SparseValue, ...]] | None
    total_tokens: int


def parse_embeddings(
    payload: Mapping[str, object], part: RequestPart, plan: EmbeddingPlan
) -> EmbeddingAnswer:
    """One part's answer, ordered by ``text_index``.

    :raises ProtocolError: when an index is missing, repeated or out of range,
        or a vector the call asked for is absent.
    """
    request_id = _request_id(payload)
    output = payload.get("output")
    items = output.get("embeddings") if isinstance(output, Mapping) else None
    if not isinstance(items, list):
        raise ProtocolError("the embedding reply has no output.embeddings", request_id=request_id)
    vectors: list[tuple[float, ...] | None] = [None] * part.count
    sparse: list[tuple[SparseValue, ...]] | None = [()] * part.count if plan.sparse else None
    for item in items:
        index = item.get("text_index", item.get("index")) if isinstance(item, Mapping) else None
        if not isinstance(index, int) or not 0 <= index < part.count or vectors[index] is not None:
            raise ProtocolError(
                f"the embedding reply has a bad text_index {index!r} for {part.count} texts",
                request_id=request_id,
            )
        assert isinstance(item, Mapping)
        dense = item.get("embedding")
        if plan.dense and not isinstance(dense, list):
            raise ProtocolError(
                f"the embedding reply has no vector for text {index}", request_id=request_id
            )
        vectors[index] = tuple(dense) if isinstance(dense, list) else ()
        if sparse is not None:
            sparse[index] = _sparse(item.get("sparse_embedding"), request_id)
    missing = [part.start + i for i, vector in enumerate(vectors) if vector is None]
    if missing:
        raise ProtocolError(
            f"the embedding reply left out texts {_ranges(missing)}", request_id=request_id
        )
    return EmbeddingAnswer(
        [v for v in vectors if v is not None], sparse, _total_tokens(payload.get("usage"))
    )


def _sparse(raw: object, request_id: str | None) -> tuple[SparseValue, ...]:
    if not isinstance(raw, list):
        raise ProtocolError("the embedding reply has no sparse_embedding", request_id=request_id)
    values = []
    for entry in raw:
        if not isinstance(entry, Mapping):
            raise ProtocolError("a sparse_embedding entry is not an object", request_id=request_id)
        token = entry.get("token")
        values.append(
            SparseValue(
                int(entry.get("index", 0)),
                float(entry.get("value", 0.0)),
                token if isinstance(token, str) else None,
            )
        )
    return tuple(values)


def merge_embeddings(
    plan: EmbeddingPlan, answers: Sequence[EmbeddingAnswer], request_ids: Sequence[str]
) -> EmbeddingResult:
    """The parts' answers (in part order) as one result in input order."""
    vectors: list[tuple[float, ...]] = []
    sparse: list[tuple[SparseValue, ...]] | None = [] if plan.sparse else None
    total = 0
    for answer in answers:
        vectors.extend(answer.vectors)
        if sparse is not None and answer.sparse is not None:
            sparse.extend(answer.sparse)
        total += answer.total_tokens
    if len(vectors) != plan.n_texts:  # parse_embeddings already checks each part
        raise ProtocolError(f"{len(vectors)} vectors for {plan.n_texts} texts")
    return EmbeddingResult(
        tuple(vectors),
        None if sparse is None else tuple(sparse),
        _usage(total),
        plan.model,
        tuple(request_ids),
    )


# -- rerank ----------------------------------------------------------------------


@dataclass(frozen=True)
class RerankPlan:
    """A validated rerank call, cut into requests."""

    model: str
    n_documents: int
    top_n: int | None
    parts: tuple[RequestPart, ...]


def plan_rerank(
    query: str,
    documents: str | Sequence[str],
    *,
    model: str | None = None,
    top_n: int | None = None,
    return_documents: bool | None = None,
    instruct: str | None = None,
    limits: RerankLimits | None = None,
) -> RerankPlan:
    """Validate a rerank call and cut it by document count and estimated tokens.

    Each part carries the query and a run of consecutive documents such that
    ``query_tokens × documents + Σ document_tokens`` stays within the model's
    per-request budget (:func:`estimate_tokens`, each item capped at the
    model's per-item limit, where the service truncates).  A call that fits
    in one request is sent as given; a split one leaves ``top_n`` out of the
    parts (every score is needed to merge) and applies it after merging.

    :param limits: override the model's limits (tests, new models).
    :raises ValueError: for an empty query or documents, non-str items, ``top_n < 1``.
    """
    if not isinstance(query, str) or not query.strip():
        raise ValueError("query must be a non-empty str")
    items = check_texts(documents, "documents")
    if not items:
        raise ValueError("documents must not be empty")
    model = _check_model(model, DEFAULT_RERANK_MODEL)
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise ValueError(f"top_n must be an int >= 1, not {top_n!r}")
    if return_documents is not None and not isinstance(return_documents, bool):
        raise ValueError(f"return_documents must be a bool, not {return_documents!r}")
    _check_instruct(instruct)
    limits = limits or rerank_limits(model)
    query_cost = min(estimate_tokens(query), limits.item_tokens)
    ranges: list[tuple[int, int]] = []
    start, used = 0, 0
    for position, document in enumerate(items):
        cost = query_cost + min(estimate_tokens(document), limits.item_tokens)
        count = position - start
        if count and (count >= limits.max_documents or used + cost > limits.request_tokens):
            ranges.append((start, count))
            start, used = position, 0
        used += cost
    ranges.append((start, len(items) - start))
    split = len(ranges) > 1
    given = {
        "top_n": None if split else top_n,
        "return_documents": return_documents,
        "instruct": instruct,
    }
    parameters = {name: value for name, value in given.items() if value is not None}
    parts = tuple(
        RequestPart(
            first,
            count,
            _dumps(
                {
                    "model": model,
                    "input": {"query": query, "documents": items[first : first + count]},
                    "parameters": parameters,
                }
            ),
        )
        for first, count in ranges
    )
    return RerankPlan(model, len(items), top_n, parts)


@dataclass(frozen=True)
class RerankAnswer:
    items: list[RerankItem]
    total_tokens: int


def parse_rerank(payload: Mapping[str, object], part: RequestPart) -> RerankAnswer:
    """One part's items, with indices into the whole call's documents.

    :raises ProtocolError: for an index out of range or repeated, or a bad score.
    """
    request_id = _request_id(payload)
    output = payload.get("output")
    raw = output.get("results") if isinstance(output, Mapping) else None
    if not isinstance(raw, list):
        raise ProtocolError("the rerank reply has no output.results", request_id=request_id)
    seen: set[int] = set()
    items = []
    for entry in raw:
        index = entry.get("index") if isinstance(entry, Mapping) else None
        if not isinstance(index, int) or not 0 <= index < part.count or index in seen:
            raise ProtocolError(
                f"the rerank reply has a bad index {index!r} for {part.count} documents",
                request_id=request_id,
            )
        assert isinstance(entry, Mapping)
        seen.add(index)
        score = entry.get("relevance_score")
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise ProtocolError(
                f"the rerank reply has no score for document {index}", request_id=request_id
            )
        document = entry.get("document")
        text = document.get("text") if isinstance(document, Mapping) else document
        items.append(
            RerankItem(part.start + index, float(score), text if isinstance(text, str) else None)
        )
    return RerankAnswer(items, _total_tokens(payload.get("usage")))


def merge_rerank(
    plan: RerankPlan, answers: Sequence[RerankAnswer], request_ids: Sequence[str]
) -> RerankResult:
    """One ranking from every part's: a global sort by score (ties in input order), then top_n.

    Scores are per document (a cross-encoder scores each pair alone), so the
    merged order is the order one request over every document would give.
    """
    items = [item for answer in answers for item in answer.items]
    if len(plan.parts) > 1 and len(items) != plan.n_documents:
        # Parts are sent without top_n: every document must come back.
        got = {item.index for item in items}
        missing = [i for i in range(plan.n_documents) if i not in got]
        raise ProtocolError(f"the rerank replies left out documents {_ranges(missing)}")
    items.sort(key=lambda item: (-item.relevance_score, item.index))
    if plan.top_n is not None:
        items = items[: plan.top_n]
    total = sum(answer.total_tokens for answer in answers)
    return RerankResult(tuple(items), _usage(total), plan.model, tuple(request_ids))


# -- helpers ---------------------------------------------------------------------


def _dumps(value: object) -> bytes:
    # Compact UTF-8, as DashScope writes it (and as the chat bodies are sent).
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _request_id(payload: Mapping[str, object]) -> str | None:
    rid = payload.get("request_id")
    return rid if isinstance(rid, str) and rid else None


def _total_tokens(usage: object) -> int:
    if not isinstance(usage, Mapping):
        return 0
    total = usage.get("total_tokens", usage.get("input_tokens"))
    return total if isinstance(total, int) and not isinstance(total, bool) else 0


def _usage(total: int) -> Usage:
    # Embedding and rerank tokens are all input tokens.
    return Usage(prompt_tokens=total, completion_tokens=0, total_tokens=total)


def _ranges(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 7]`` -> ``"0-2, 7"`` (error messages name inputs compactly)."""
    spans: list[str] = []
    run_start = previous = None
    for index in indices:
        if previous is not None and index == previous + 1:
            previous = index
            continue
        if run_start is not None:
            spans.append(_span(run_start, previous))
        run_start = previous = index
    if run_start is not None:
        spans.append(_span(run_start, previous))
    return ", ".join(spans)


def _span(first: int, last: int | None) -> str:
    return str(first) if last is None or last == first else f"{first}-{last}"


def describe_inputs(indices: Sequence[int]) -> str:
    """Input indices in a message, e.g. ``"inputs 10-19"``."""
    return ("input " if len(indices) == 1 else "inputs ") + _ranges(indices)
