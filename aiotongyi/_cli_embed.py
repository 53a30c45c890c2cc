"""``aiotongyi embed TEXT...`` and ``aiotongyi rerank QUERY DOC...``.

Each adds its subcommand to the main parser and carries its own handler
(``args.handler``), so the chat CLI needs only to call it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from ._client import TongyiLLMClient
from ._embeddings import (
    DEFAULT_EMBEDDING_MODEL,
    DEFAULT_RERANK_MODEL,
    EmbeddingResult,
    RerankResult,
)
from ._exceptions import TongyiError

__all__ = ["add_commands"]

_SHOWN_VALUES = 4


def add_commands(commands: Any) -> None:
    """Add ``embed`` and ``rerank`` to the CLI's subparsers."""
    embed = commands.add_parser("embed", help="embed texts and print their vectors")
    embed.add_argument("texts", nargs="*", help="texts to embed (default: one per line of stdin)")
    embed.add_argument("--model", help=f"DashScope model id (default: {DEFAULT_EMBEDDING_MODEL})")
    embed.add_argument("--dimension", type=int, help="vector size (v3/v4)")
    embed.add_argument("--text-type", choices=["query", "document"])
    embed.add_argument("--output-type", choices=["dense", "sparse", "dense&sparse"])
    embed.add_argument("--instruct", help="a task instruction (v4)")
    _common(embed)
    embed.set_defaults(handler=_run_embed)

    rerank = commands.add_parser("rerank", help="rank documents by relevance to a query")
    rerank.add_argument("query", help="the query")
    rerank.add_argument("documents", nargs="*", help="documents (default: one per line of stdin)")
    rerank.add_argument("--model", help=f"DashScope model id (default: {DEFAULT_RERANK_MODEL})")
    rerank.add_argument("--top-n", type=int, help="print only the best N")
    rerank.add_argument("--instruct", help="a task instruction (qwen3-rerank)")
    _common(rerank)
    rerank.set_defaults(handler=_run_rerank)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
    parser.add_argument("--region", help="cn-beijing, ap-southeast-1, us-east-1 or cn-hongkong")
    parser.add_argument("--base-url", help="an explicit .../api/v1 endpoint")
    parser.add_argument(
        "--emulator", action="store_true", help="use the bundled emulator, even with a key"
    )


def _stdin_lines() -> list[str]:
    if sys.stdin.isatty():
        return []
    return [line.strip() for line in sys.stdin.read().splitlines() if line.strip()]


def _run_embed(args: argparse.Namespace) -> int:
    texts = args.texts or _stdin_lines()
    if not texts:
        print("aiotongyi: give texts to embed, or pipe them on stdin", file=sys.stderr)
        return 2

    async def call(client: TongyiLLMClient) -> None:
        result = await client.embed(
            texts,
            model=args.model,
            dimension=args.dimension,
            text_type=args.text_type,
            output_type=args.output_type,
            instruct=args.instruct,
        )
        _print_embeddings(result, texts, as_json=args.json)

    return _with_client(args, call)


def _run_rerank(args: argparse.Namespace) -> int:
    documents = args.documents or _stdin_lines()
    if not documents:
        print("aiotongyi: give documents to rank, or pipe them on stdin", file=sys.stderr)
        return 2

    async def call(client: TongyiLLMClient) -> None:
        result = await client.rerank(
            args.query, documents, model=args.model, top_n=args.top_n, instruct=args.instruct
        )
        _print_rerank(result, documents, as_json=args.json)

    return _with_client(args, call)


def _with_client(args: argparse.Namespace, call: Any) -> int:
    emulator = None
    if args.emulator or not os.environ.get("DASHSCOPE_API_KEY"):
        from .testing import DashScopeEmulator

        emulator = DashScopeEmulator().start()
        reason = "--emulator given" if args.emulator else "DASHSCOPE_API_KEY is not set"
        print(
            f"aiotongyi: {reason}; using the bundled emulator at {emulator.base_url} "
            "(hash-derived vectors, not a real model)",
            file=sys.stderr,
        )

    async def run() -> int:
        try:
            client = TongyiLLMClient(
                api_key=emulator.api_key if emulator else None,
                api_region=args.region,
                base_url=emulator.base_url if emulator else args.base_url,
            )
        except ValueError as exc:
            print(f"aiotongyi: {exc}", file=sys.stderr)
            return 2
        try:
            async with client:
                await call(client)
        except (TongyiError, ValueError) as exc:
            print(f"aiotongyi: error: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        return 0

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return 130
    finally:
        if emulator is not None:
            emulator.stop()


def _print_embeddings(result: EmbeddingResult, texts: list[str], *, as_json: bool) -> None:
    if as_json:
        document: dict[str, object] = {
            "model": result.model,
            "vectors": [list(v) for v in result.vectors],
            "usage": {"total_tokens": result.usage.total_tokens},
            "request_ids": list(result.request_ids),
        }
        if result.sparse is not None:
            document["sparse"] = [
                [{"index": s.index, "value": s.value, "token": s.token} for s in vector]
                for vector in result.sparse
            ]
        print(json.dumps(document, ensure_ascii=False))
        return
    for position, (text, vector) in enumerate(zip(texts, result.vectors, strict=True)):
        shown = ", ".join(f"{x:.4f}" for x in vector[:_SHOWN_VALUES])
        more = ", ..." if len(vector) > _SHOWN_VALUES else ""
        sparse = f" sparse={len(result.sparse[position])}" if result.sparse is not None else ""
        print(f"{position}\tdim={len(vector)}{sparse}\t[{shown}{more}]\t{_short(text)}")
    print(f"[{result.model}, {result.usage.total_tokens} tokens]", file=sys.stderr)


def _print_rerank(result: RerankResult, documents: list[str], *, as_json: bool) -> None:
    if as_json:
        items = [
            {"index": i.index, "relevance_score": i.relevance_score, "document": documents[i.index]}
            for i in result.results
        ]
        document = {
            "model": result.model,
            "results": items,
            "usage": {"total_tokens": result.usage.total_tokens},
            "request_ids": list(result.request_ids),
        }
        print(json.dumps(document, ensure_ascii=False))
        return
    for rank, item in enumerate(result.results, start=1):
        print(
            f"{rank}\t{item.relevance_score:.4f}\t[{item.index}]\t{_short(documents[item.index])}"
        )
    print(f"[{result.model}, {result.usage.total_tokens} tokens]", file=sys.stderr)


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."
