"""Many prompts at once, at most LIMIT in flight, with a progress bar on stderr.

python examples/concurrent_requests.py [--limit 8]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from _emulator_fallback import backend

from aiotongyi import TongyiError, TongyiLLMClient

CITIES = [
    "Beijing", "Shanghai", "Hangzhou", "Chengdu", "Xi'an", "Guangzhou", "Shenzhen",
    "Nanjing", "Suzhou", "Wuhan", "Chongqing", "Tianjin", "Qingdao", "Xiamen",
    "Kunming", "Harbin", "Lhasa", "Guilin", "Dalian", "Changsha",
]  # fmt: skip


class Progress:
    """A one-line text progress bar, redrawn in place."""

    def __init__(self, total: int, width: int = 30) -> None:
        self.total, self.width, self.done, self.failed = total, width, 0, 0

    def advance(self, ok: bool) -> None:
        self.done += 1
        self.failed += not ok
        filled = self.width * self.done // self.total
        bar = "#" * filled + "-" * (self.width - filled)
        sys.stderr.write(f"\r[{bar}] {self.done}/{self.total} ({self.failed} failed)")
        sys.stderr.flush()


async def ask(
    client: TongyiLLMClient, limit: asyncio.Semaphore, progress: Progress, city: str
) -> str:
    async with limit:  # at most `limit` requests (and connections) at a time
        try:
            output = await client.generate(f"In one sentence: why visit {city}?", max_tokens=60)
        except TongyiError as exc:  # one failure must not sink the other requests
            progress.advance(ok=False)
            return f"{city}: failed ({type(exc).__name__}: {exc})"
    progress.advance(ok=True)
    return f"{city}: {output.text}"


async def main(limit: int) -> None:
    api_key, base_url, _ = backend()
    semaphore = asyncio.Semaphore(limit)
    progress = Progress(len(CITIES))
    started = time.perf_counter()
    async with TongyiLLMClient(model="qwen-turbo", api_key=api_key, base_url=base_url) as client:
        answers = await asyncio.gather(*(ask(client, semaphore, progress, c) for c in CITIES))
    elapsed = time.perf_counter() - started
    print(file=sys.stderr)
    for answer in answers:  # gather keeps the order of the prompts
        print(answer)
    print(f"[{len(answers)} prompts, {limit} at a time, {elapsed:.1f} s]")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=8, help="requests in flight at most")
    asyncio.run(main(parser.parse_args().limit))
