"""Semantic search over a few paragraphs: embed them, embed the question, rerank the best.

python examples/semantic_search.py ["your question"]

Step 1 finds candidates by cosine similarity of embeddings (cheap, done once
per document); step 2 asks a reranker to order those candidates against the
question (more precise, done per question).
"""

from __future__ import annotations

import asyncio
import math
import sys

from _emulator_fallback import backend

from aiotongyi import TongyiLLMClient

PARAGRAPHS = [
    "West Lake in Hangzhou is famous for its willow trees, causeways and old pagodas.",
    "Longjing green tea is grown in the hills around West Lake and picked in early spring.",
    "The Shanghai stock market closed higher on Friday after a week of losses.",
    "Giant pandas in Chengdu spend most of the day eating bamboo.",
    "Green tea leaves are pan-fired by hand to stop oxidation and keep them green.",
    "Hangzhou hosted the Asian Games in 2023, with venues across the city.",
    "Oolong tea is partly oxidised, somewhere between green tea and black tea.",
    "The central bank raised interest rates, and the stock index fell.",
]


def cosine(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)) or 1.0)


async def main(question: str) -> None:
    api_key, base_url, _ = backend()
    async with TongyiLLMClient(api_key=api_key, base_url=base_url) as client:
        # Documents and the question are embedded with the matching text_type.
        documents = await client.embed(PARAGRAPHS, text_type="document", dimension=512)
        query = await client.embed(question, text_type="query", dimension=512)
        similarity = [cosine(query.vectors[0], vector) for vector in documents.vectors]
        candidates = sorted(range(len(PARAGRAPHS)), key=lambda i: -similarity[i])[:4]
        print(f"question: {question}")
        print("embedding recall:")
        for i in candidates:
            print(f"  {similarity[i]:.3f}  {PARAGRAPHS[i]}")

        ranked = await client.rerank(question, [PARAGRAPHS[i] for i in candidates], top_n=2)
        print("reranked:")
        for item in ranked.results:
            print(f"  {item.relevance_score:.3f}  {PARAGRAPHS[candidates[item.index]]}")
        tokens = documents.usage.total_tokens + query.usage.total_tokens
        print(f"[{tokens} embedding tokens, {ranked.usage.total_tokens} rerank tokens]")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "Which green tea grows near West Lake?"))
