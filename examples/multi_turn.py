"""A conversation: keep the history as a list of messages and send all of it each turn.

python examples/multi_turn.py
"""

from __future__ import annotations

import asyncio

from _emulator_fallback import backend

from aiotongyi import TongyiLLMClient

TURNS = [
    "My name is Lin and I live in Hangzhou.",
    "Suggest one thing to do there this weekend.",
    "What is my name, and where do I live?",
]


async def main() -> None:
    api_key, base_url, _ = backend()
    history: list[dict[str, str]] = [
        {"role": "system", "content": "You are a concise assistant. Answer in one sentence."}
    ]
    async with TongyiLLMClient(model="qwen-plus", api_key=api_key, base_url=base_url) as client:
        for turn in TURNS:
            history.append({"role": "user", "content": turn})
            print(f"user: {turn}")
            print("assistant: ", end="", flush=True)
            async with client.generate_stream(history) as stream:
                async for output in stream:
                    print(output.delta, end="", flush=True)
            print()
            # The model remembers nothing: the history you send is its memory.
            history.append({"role": "assistant", "content": output.text})
    print(f"[{len(history)} messages, {output.usage.total_tokens if output.usage else '?'} tokens]")


if __name__ == "__main__":
    asyncio.run(main())
