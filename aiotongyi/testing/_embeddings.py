"""The emulator's embedding and rerank endpoints: deterministic answers, the service's limits.

Vectors are feature hashes of the text's words (each word, and each CJK
character, adds signed weights at 48 positions drawn from its hash, plus a small
part from the whole text's hash), normalised to length 1: the same text
always gives the same vector, and texts sharing words have a higher cosine
similarity.  Rerank scores are the word overlap of query and document
(cosine of their word sets), the same for a document whatever else is in the
request.  Requests over a model's limits get the service's 400 bodies.

Pure apart from :func:`answer`, which writes through the chat writer so the
queued :class:`Reply`'s faults apply here too.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from dataclasses import dataclass

from aiohttp import web

from ._render import Rendered
from ._script import JSON_CONTENT_TYPE, Reply, dumps
from ._writer import send

__all__ = ["EMBEDDING_PATH", "RERANK_PATH", "ROUTES", "answer", "embed_text", "rerank_score"]

EMBEDDING_PATH = "/api/v1/services/embeddings/text-embedding/text-embedding"
RERANK_PATH = "/api/v1/services/rerank/text-rerank/text-rerank"
ROUTES = frozenset({EMBEDDING_PATH, RERANK_PATH})

_WORD = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]|[^\W\u3400-\u9fff\uf900-\ufaff]+")
_SLOTS_PER_WORD = 48


@dataclass(frozen=True)
class _EmbeddingModel:
    max_texts: int
    max_tokens: int
    dimensions: tuple[int, ...]  # the first is the default
    field: str  # how the batch-size error names the input


_V1 = _EmbeddingModel(25, 2048, (1536,), "payload.input.contents")
_V3 = _EmbeddingModel(10, 8192, (1024, 768, 512, 256, 128, 64), "input.contents")
_V4 = _EmbeddingModel(10, 8192, (1024, 2048, 1536, 768, 512, 256, 128, 64), "input.contents")
_EMBEDDING_MODELS = {
    "text-embedding-v1": _V1,
    "text-embedding-v2": _V1,
    "text-embedding-v3": _V3,
    "text-embedding-v4": _V4,
}


@dataclass(frozen=True)
class _RerankModel:
    max_documents: int
    item_tokens: int
    request_tokens: int


_RERANK_MODELS = {
    "gte-rerank-v2": _RerankModel(500, 4000, 30000),
    "qwen3-rerank": _RerankModel(500, 4000, 120000),
    "qwen3-vl-rerank": _RerankModel(100, 8000, 120000),
}


def words(text: str) -> list[str]:
    """Lower-cased words, each CJK character on its own (the emulator's tokens)."""
    return _WORD.findall(text.lower())


def count_tokens(text: str) -> int:
    """The emulator's token count: one per word (at least one per text)."""
    return max(1, len(words(text)))


def embed_text(text: str, dimension: int) -> list[float]:
    """The emulator's vector for ``text``: unit length, the same on every call."""
    weights: dict[int, float] = {}
    for word in words(text):
        _scatter(weights, dimension, b"w:" + word.encode(), 1.0)
    _scatter(weights, dimension, b"t:" + text.encode(), 0.25)
    norm = math.sqrt(sum(x * x for x in weights.values())) or 1.0
    vector = [0.0] * dimension
    for position, weight in weights.items():  # only the few non-zero slots
        vector[position] = round(weight / norm, 6)
    return vector


def _scatter(weights: dict[int, float], dimension: int, key: bytes, weight: float) -> None:
    digest = hashlib.shake_256(key).digest(3 * _SLOTS_PER_WORD)
    for slot in range(0, len(digest), 3):
        raw = int.from_bytes(digest[slot : slot + 3], "little")
        position = (raw >> 1) % dimension
        weights[position] = weights.get(position, 0.0) + (weight if raw & 1 else -weight)


def rerank_score(query: str, document: str) -> float:
    """The cosine of the word sets of ``query`` and ``document`` (0..1), rounded."""
    q, d = set(words(query)), set(words(document))
    if not q or not d:
        return 0.0
    return round(len(q & d) / math.sqrt(len(q) * len(d)), 6)


def _sparse(text: str) -> list[dict[str, object]]:
    counts: dict[str, int] = {}
    for word in words(text):
        counts[word] = counts.get(word, 0) + 1
    entries = []
    for word, count in counts.items():
        index = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
        entries.append(
            {"index": index % 250_000, "value": round(0.5 + 0.1 * count, 4), "token": word}
        )
    return entries


class _Refusal(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _embedding_reply(payload: dict[str, object]) -> dict[str, object]:
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise _Refusal("BadRequest.EmptyModel", 'Required parameter "model" missing from request.')
    spec = _EMBEDDING_MODELS.get(model, _V4)
    body_input = payload.get("input")
    texts = body_input.get("texts") if isinstance(body_input, dict) else None
    if not isinstance(texts, list) or not texts:
        raise _Refusal("BadRequest.EmptyInput", 'Required parameter "input" missing from request.')
    if len(texts) > spec.max_texts:
        raise _Refusal(
            "InvalidParameter",
            f"batch size is invalid, it should not be larger than {spec.max_texts}.: {spec.field}",
        )
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise _Refusal("InvalidParameter", "parameters must be an object")
    dimension = parameters.get("dimension", spec.dimensions[0])
    if dimension not in spec.dimensions:
        raise _Refusal(
            "InvalidParameter",
            f"Value error, dimension should be one of {list(spec.dimensions)}"
            ": parameters.dimension",
        )
    output_type = parameters.get("output_type", "dense")
    if output_type not in ("dense", "sparse", "dense&sparse"):
        raise _Refusal("InvalidParameter", f"Value error, output_type {output_type} is invalid")
    total = 0
    items = []
    for index, text in enumerate(texts):
        tokens = count_tokens(text) if isinstance(text, str) and text.strip() else 0
        if not 1 <= tokens <= spec.max_tokens:
            raise _Refusal(
                "InvalidParameter",
                f"Range of input length should be [1, {spec.max_tokens}]",
            )
        total += tokens
        assert isinstance(text, str) and isinstance(dimension, int)
        item: dict[str, object] = {"text_index": index}
        if "dense" in output_type:
            item["embedding"] = embed_text(text, dimension)
        if "sparse" in output_type:
            item["sparse_embedding"] = _sparse(text)
        items.append(item)
    return {"output": {"embeddings": items}, "usage": {"total_tokens": total}}


def _rerank_reply(payload: dict[str, object]) -> dict[str, object]:
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise _Refusal("BadRequest.EmptyModel", 'Required parameter "model" missing from request.')
    spec = _RERANK_MODELS.get(model, _RERANK_MODELS["gte-rerank-v2"])
    body_input = payload.get("input")
    query = body_input.get("query") if isinstance(body_input, dict) else None
    documents = body_input.get("documents") if isinstance(body_input, dict) else None
    if not isinstance(query, str) or not query.strip():
        raise _Refusal("InvalidParameter", "Input query should not be empty.")
    if not isinstance(documents, list) or not documents:
        raise _Refusal("InvalidParameter", "Input documents should not be empty.")
    if len(documents) > spec.max_documents:
        raise _Refusal(
            "InvalidParameter",
            f"The number of documents should be in [1, {spec.max_documents}].: input.documents",
        )
    if not all(isinstance(d, str) and d.strip() for d in documents):
        raise _Refusal("InvalidParameter", "Input documents should not contain empty text.")
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise _Refusal("InvalidParameter", "parameters must be an object")
    query_tokens = min(count_tokens(query), spec.item_tokens)
    total = sum(query_tokens + min(count_tokens(d), spec.item_tokens) for d in documents)
    if total > spec.request_tokens:
        raise _Refusal(
            "InvalidParameter",
            f"Range of input length should be [1, {spec.request_tokens}]",
        )
    top_n = parameters.get("top_n", len(documents))
    if not isinstance(top_n, int) or top_n < 1:
        raise _Refusal("InvalidParameter", "top_n should be a positive integer.")
    ranked = sorted(
        ((rerank_score(query, document), index) for index, document in enumerate(documents)),
        key=lambda pair: (-pair[0], pair[1]),
    )[:top_n]
    results = []
    for score, index in ranked:
        result: dict[str, object] = {"index": index, "relevance_score": score}
        if parameters.get("return_documents") is True:
            result["document"] = {"text": documents[index]}
        results.append(result)
    return {"output": {"results": results}, "usage": {"total_tokens": total}}


async def answer(
    request: web.BaseRequest, payload: object, reply: Reply | None
) -> web.StreamResponse:
    """Answer an embedding or rerank request, with ``reply``'s status, body or faults."""
    reply = reply or Reply()
    request_id = reply.request_id or str(uuid.uuid4())
    status = 200
    if reply.raw_body is not None:
        body, status = reply.raw_body, reply.status
    elif not isinstance(payload, dict):
        body, status = (
            _error_body("InvalidParameter", "The request body is not valid JSON.", request_id),
            400,
        )
    else:
        try:
            if request.path == EMBEDDING_PATH:
                reply_body = _embedding_reply(payload)
            else:
                reply_body = _rerank_reply(payload)
        except _Refusal as refusal:
            body, status = _error_body(refusal.code, refusal.message, request_id), 400
        else:
            body = dumps({**reply_body, "request_id": request_id}).encode()
    headers = {
        "Content-Type": reply.content_type or JSON_CONTENT_TYPE,
        "X-Request-Id": request_id,
    }
    for name, value in reply.headers.items():
        for existing in [key for key in headers if key.lower() == name.lower()]:
            del headers[existing]
        headers[name] = value
    return await send(request, reply, Rendered(status, headers, [body], chunked=False))


def _error_body(code: str, message: str, request_id: str) -> bytes:
    return json.dumps(
        {"code": code, "message": message, "request_id": request_id}, separators=(",", ":")
    ).encode()
