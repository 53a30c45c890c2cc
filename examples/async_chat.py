"""Stream one answer and print the tokens as they arrive.

python examples/async_chat.py ["your prompt"]
"""

from __future__ import annotations

import asyncio
import sys

from _emulator_fallback import backend

from aiotongyi import TongyiLLMClient


async def main(prompt: str) -> None:
    api_key, base_url, _ = backend()
    async with TongyiLLMClient(model="qwen-plus", api_key=api_key, base_url=base_url) as client:
        async with client.generate_stream(prompt, temperature=0.7) as stream:
            async for output in stream:
                print(output.delta, end="", flush=True)  # output.text: the whole answer so far
    print()
    print(f"[finish_reason={output.finish_reason} usage={output.usage}]")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "写一首关于春天的短诗"))
