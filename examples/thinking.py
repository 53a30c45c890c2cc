"""A thinking model: the reasoning streams apart from the answer.

python examples/thinking.py ["your question"]
"""

from __future__ import annotations

import asyncio
import sys

from _emulator_fallback import backend

from aiotongyi import TongyiLLMClient
from aiotongyi.testing import Reply


async def main(question: str) -> None:
    api_key, base_url, emulator = backend()
    if emulator is not None:  # the emulator only reasons when told to
        emulator.enqueue(
            Reply(
                thinking=["17 × 24 = 17 × 20 + 17 × 4", " = 340 + 68", " = 408."],
                text=["17 × 24 = ", "408"],
            )
        )
    async with TongyiLLMClient(model="qwen-plus", api_key=api_key, base_url=base_url) as client:
        stream = client.generate_stream(question, enable_thinking=True, thinking_budget=2000)
        async with stream:
            print("--- thinking ---")
            answering = False
            async for output in stream:
                if output.thinking_delta:
                    print(output.thinking_delta, end="", flush=True)
                if output.delta:
                    if not answering:
                        print("\n--- answer ---")
                        answering = True
                    print(output.delta, end="", flush=True)
    print()
    usage = output.usage
    if usage is not None:
        print(f"[{usage.completion_tokens} output tokens, {usage.reasoning_tokens} for reasoning]")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "What is 17 × 24?"))
