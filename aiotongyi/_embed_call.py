"""Sending embedding and rerank calls: parts in parallel (bounded), retries, typed errors.

All the wire logic is in ``_embeddings`` (pure); this module only sends the
parts it plans, each attempt one abortable call on the client's session for
the running loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol, TypeVar

from ._call import Call
from ._context import CallContext
from ._embeddings import (
    EMBEDDING_PATH,
    RERANK_PATH,
    EmbeddingAnswer,
    EmbeddingResult,
    RequestPart,
    RerankAnswer,
    RerankResult,
    describe_inputs,
    merge_embeddings,
    merge_rerank,
    parse_embeddings,
    parse_rerank,
    plan_embeddings,
    plan_rerank,
)
from ._errors import error_from_payload
from ._exceptions import ProtocolError, TongyiError
from ._models import Timeout
from ._request import PreparedRequest
from ._transport import MAX_JSON_BODY, SecretHeaders, read_body, send

__all__ = ["MAX_CONCURRENT_PARTS", "embed", "post_json", "rerank"]

logger = logging.getLogger("aiotongyi")

#: Parts of one call in flight at once.  A big call is many small requests
#: (10 texts each for v3/v4), so latency, not bandwidth, bounds it: 16 sends
#: 1,000 texts in 7 rounds, while never opening more than 16 connections per
#: call; throttling (429) is retried with the service's Retry-After.
MAX_CONCURRENT_PARTS = 16


class _Part(Protocol):
    @property
    def indices(self) -> range: ...


_P = TypeVar("_P", bound=_Part)
_R = TypeVar("_R")
_A = TypeVar("_A")


async def post_json(
    context: CallContext, path: str, body: bytes, timeout: Timeout
) -> tuple[dict[str, object], str | None]:
    """POST ``body`` to ``path`` on the client's base URL; the JSON reply and its request id.

    One attempt on this loop's session, with the client's headers, key and
    proxy, as one :class:`Call`: the client closing, the idle-read timer and
    ``timeout.total`` stop it like a chat call.

    :raises TongyiError: the typed error for an HTTP error, a transport failure
        or a reply that is not a JSON object.
    """
    session = await context.sessions.get()
    call = Call(session, timeout)
    progress = _Progress()
    headers = SecretHeaders(context.headers)
    headers.pop("X-DashScope-SSE", None)
    headers["Accept"] = "application/json"
    try:
        with call.errors(progress):
            response = await send(
                session,
                context.base_url + path,
                body,
                headers,
                connect_timeout=timeout.connect,
                proxy=context.proxy,
                call=call,
            )
            progress.request_id = response.headers.get("x-request-id")
            try:
                raw = await read_body(response, MAX_JSON_BODY, truncate=False, call=call)
            except BaseException:  # a cut body or a cancelled call: drop the connection
                response.close()
                raise
            response.release()
    finally:
        call.finish()
    request_id = progress.request_id
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):
        payload = None
    if not isinstance(payload, dict):
        kind = response.headers.get("content-type") or "no content type"
        raise ProtocolError(
            f"expected a JSON object, got {len(raw)} bytes of {kind!r}", request_id=request_id
        )
    rid = payload.get("request_id")
    if isinstance(rid, str) and rid:
        request_id = rid
    if payload.get("code") and "output" not in payload:  # an error sent with status 200
        raise error_from_payload(payload, response.status, request_id)
    return payload, request_id


class _Progress:
    """What the error mapping reads: no partial output for a JSON call."""

    __slots__ = ("request_id",)
    last = None

    def __init__(self) -> None:
        self.request_id: str | None = None


async def embed(
    context: CallContext,
    texts: str | Sequence[str],
    *,
    model: str | None = None,
    dimension: int | None = None,
    text_type: str | None = None,
    output_type: str | None = None,
    instruct: str | None = None,
    timeout: Timeout | float | None = None,
    concurrency: int = MAX_CONCURRENT_PARTS,
) -> EmbeddingResult:
    """``TongyiLLMClient.embed``: plan, send the parts, merge (see there)."""
    plan = plan_embeddings(
        texts,
        model=model,
        dimension=dimension,
        text_type=text_type,
        output_type=output_type,
        instruct=instruct,
    )
    if not plan.parts:
        return merge_embeddings(plan, [], [])
    budget = _Budget(context, timeout)

    async def one(part: RequestPart) -> tuple[EmbeddingAnswer, str | None]:
        payload, request_id = await _with_retries(context, EMBEDDING_PATH, part.body, budget)
        return parse_embeddings(payload, part, plan), request_id

    results = await _observed(
        context, "embeddings", plan.model, EMBEDDING_PATH, plan.parts[0].body,
        _run_parts(plan.parts, one, concurrency),
    )  # fmt: skip
    return merge_embeddings(
        plan, [answer for answer, _ in results], [rid for _, rid in results if rid]
    )


async def rerank(
    context: CallContext,
    query: str,
    documents: str | Sequence[str],
    *,
    model: str | None = None,
    top_n: int | None = None,
    return_documents: bool | None = None,
    instruct: str | None = None,
    timeout: Timeout | float | None = None,
    concurrency: int = MAX_CONCURRENT_PARTS,
) -> RerankResult:
    """``TongyiLLMClient.rerank``: plan, send the parts, merge (see there)."""
    plan = plan_rerank(
        query,
        documents,
        model=model,
        top_n=top_n,
        return_documents=return_documents,
        instruct=instruct,
    )
    budget = _Budget(context, timeout)

    async def one(part: RequestPart) -> tuple[RerankAnswer, str | None]:
        payload, request_id = await _with_retries(context, RERANK_PATH, part.body, budget)
        return parse_rerank(payload, part), request_id

    results = await _observed(
        context, "rerank", plan.model, RERANK_PATH, plan.parts[0].body,
        _run_parts(plan.parts, one, concurrency),
    )  # fmt: skip
    return merge_rerank(plan, [answer for answer, _ in results], [rid for _, rid in results if rid])


async def _observed(
    context: CallContext,
    operation: str,
    model: str,
    path: str,
    body: bytes,
    parts: Coroutine[Any, Any, list[tuple[_A, str | None]]],
) -> list[tuple[_A, str | None]]:
    """Run the parts as one observed call: one span, one rate-limit reservation."""
    if context.observe is None:
        return await parts
    described = PreparedRequest(model, path, body, incremental=False, timeout=None)
    observer = context.observe(described, operation, stream=False)
    try:
        await observer.request(0)
        results = await parts
    except BaseException as error:
        if isinstance(error, TongyiError):
            observer.failed(error)
        observer.end(None, error, cancelled=isinstance(error, asyncio.CancelledError))
        raise
    finally:
        parts.close()  # never started when the rate limiter refused: no warning
    observer.response(200, next((rid for _, rid in results if rid), None))
    observer.end(None)
    return results


class _Budget:
    """The call's timeouts: ``total`` is one deadline for every part and retry."""

    def __init__(self, context: CallContext, timeout: Timeout | float | None) -> None:
        self.timeout = context.timeout if timeout is None else Timeout.coerce(timeout)
        loop = asyncio.get_running_loop()
        total = self.timeout.total
        self.deadline = None if total is None else loop.time() + total

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(self.deadline - asyncio.get_running_loop().time(), 0.001)

    def attempt_timeout(self) -> Timeout:
        remaining = self.remaining()
        if remaining is None:
            return self.timeout
        return Timeout(connect=self.timeout.connect, read=self.timeout.read, total=remaining)


async def _with_retries(
    context: CallContext, path: str, body: bytes, budget: _Budget
) -> tuple[dict[str, object], str | None]:
    """One part, retried as chat is before content (both calls are idempotent)."""
    loop = asyncio.get_running_loop()
    attempt = 0
    while True:
        try:
            return await post_json(context, path, body, budget.attempt_timeout())
        except TongyiError as error:  # noqa: PERF203  # once per failed attempt
            policy = context.retry
            if (
                context.sessions.is_closed
                or attempt >= policy.max_retries
                or not policy.should_retry(error)
            ):
                raise
            delay = policy.delay(attempt, getattr(error, "headers", None), random.random())
            if budget.deadline is not None and loop.time() + delay >= budget.deadline:
                raise
            logger.debug(
                "retrying %s in %.2f s after %s (attempt %d of %d, request_id=%s)",
                path,
                delay,
                type(error).__name__,
                attempt + 2,
                context.retry.max_retries + 1,
                error.request_id,
            )
            await asyncio.sleep(delay)
            attempt += 1


async def _run_parts(
    parts: Sequence[_P], one: Callable[[_P], Awaitable[_R]], concurrency: int
) -> list[_R]:
    """``one(part)`` for every part, at most ``concurrency`` at once, results in part order.

    The first failure cancels the parts still running; the error raised is the
    earliest failed part's, its ``failed_inputs`` naming the inputs of every
    part that failed.
    """
    if len(parts) == 1:
        try:
            return [await one(parts[0])]
        except TongyiError as error:
            raise _name_inputs(error, [parts[0]]) from None
    results: list[_R | None] = [None] * len(parts)
    queue = iter(range(len(parts)))
    failures: dict[int, TongyiError] = {}

    async def worker() -> None:
        for position in queue:
            try:
                results[position] = await one(parts[position])
            except TongyiError as error:  # noqa: PERF203  # once per part
                failures[position] = error
                raise

    tasks = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, len(parts)))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(
            outcome, TongyiError | asyncio.CancelledError
        ):
            raise outcome  # a bug, not a failed request
    if failures:
        first = min(failures)
        raise _name_inputs(failures[first], [parts[p] for p in sorted(failures)]) from None
    assert all(result is not None for result in results)
    return results  # type: ignore[return-value]


def _name_inputs(error: TongyiError, parts: Sequence[_Part]) -> TongyiError:
    """Record which inputs ``error`` lost, in the attribute and the message."""
    failed = tuple(i for part in parts for i in part.indices)
    error.failed_inputs = failed
    error.message = f"{error.message} [{describe_inputs(failed)}]"
    error.args = (error.message,)
    return error
