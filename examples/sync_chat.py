"""The same from plain synchronous code: no asyncio in sight.

python examples/sync_chat.py ["your prompt"]
"""

from __future__ import annotations

import sys

from _emulator_fallback import backend

from aiotongyi import TongyiLLMClient


def main(prompt: str) -> None:
    api_key, base_url, _ = backend()
    with TongyiLLMClient(model="qwen-plus", api_key=api_key, base_url=base_url) as client:
        # Streamed: a plain generator of ModelOutput.
        for output in client.sync_generate_stream(prompt):
            print(output.delta, end="", flush=True)
        print()
        # Or just the final output.
        final = client.sync_generate("Say hello in one word.", max_tokens=16)
        print(f"final: {final.text!r} ({final.finish_reason})")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "用一句话介绍杭州")
