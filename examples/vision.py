"""Ask a vision model about a local image (sent inline as a base64 data URL).

python examples/vision.py [path/to/image.png] ["your question"]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from _emulator_fallback import backend

from aiotongyi import TongyiLLMClient
from aiotongyi.testing import Reply

HERE = Path(__file__).parent


async def main(image: Path, question: str) -> None:
    api_key, base_url, emulator = backend()
    if emulator is not None:  # the emulator cannot see; script what a model would say
        emulator.enqueue(Reply(text=["A small red square ", "crossed by a white diagonal line."]))
    async with TongyiLLMClient(model="qwen-vl-max", api_key=api_key, base_url=base_url) as client:
        messages = [{"role": "user", "content": [{"image": image}, {"text": question}]}]
        async with client.generate_stream(messages) as stream:
            async for output in stream:
                print(output.delta, end="", flush=True)
    print()


if __name__ == "__main__":
    image = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "assets" / "red_square.png"
    question = sys.argv[2] if len(sys.argv) > 2 else "What is in this picture?"
    asyncio.run(main(image, question))
