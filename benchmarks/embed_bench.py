"""Embedding 1,000 texts: aiotongyi's split-and-parallel ``embed`` vs the official SDK looped.

The server (its own process, so its CPU is not counted) answers the native
embedding path like text-embedding-v4: at most 10 texts per request (a 400
otherwise), 1,024 floats per text written as DashScope writes them, after a
fixed delay per request (50 ms: the service's latency, not the client's).

Clients, each given the same 1,000 texts:

* ``aiotongyi`` — ``await client.embed(texts)`` (split into 100 requests, 16 in flight);
* ``aiotongyi-sync`` — ``client.sync_embed(texts)``;
* ``sdk-legacy-sync`` — ``dashscope.TextEmbedding.call`` in a loop over batches of 10;
* ``sdk-v2-sync`` — ``dashscope.Client().embeddings.create`` in the same loop;
* ``sdk-v2-async`` — ``await dashscope.AsyncClient().embeddings.create`` in the same loop;
* ``sdk-v2-async-gather`` (for reference, not a baseline) — the user writes
  ``asyncio.gather`` over all 100 batches themselves.

Wall time is ``perf_counter``; CPU is ``process_time`` (user + sys, every
thread of the client process).  Each client runs ``--repeat`` times after
one warm-up call, in rotating order; medians are reported.

    python -m benchmarks.embed_bench                  # 1,000 texts, 50 ms, 3 repeats
    python -m benchmarks.embed_bench --texts 200 --delay-ms 10 --repeat 1 --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

MAX_TEXTS = 10
DIMENSION = 1024
PATH = "/api/v1/services/embeddings/text-embedding/text-embedding"
KEY = "sk-bench"


# -- the server ------------------------------------------------------------------


def _serve(port_queue: Any, delay: float) -> None:
    from aiohttp import web

    rnd = random.Random(7)
    vector = json.dumps([rnd.uniform(-0.1, 0.1) for _ in range(DIMENSION)])
    # Bodies for 1..10 texts, precomputed: the server's work is not what is measured.
    bodies = {
        n: (
            '{"output":{"embeddings":['
            + ",".join(f'{{"embedding":{vector},"text_index":{i}}}' for i in range(n))
            + f']}},"usage":{{"total_tokens":{3 * n}}},"request_id":"bench-{n}"}}'
        ).encode()
        for n in range(1, MAX_TEXTS + 1)
    }

    async def embed(request: web.Request) -> web.Response:
        payload = await request.json()
        texts = payload["input"]["texts"]
        await asyncio.sleep(delay)
        if not 1 <= len(texts) <= MAX_TEXTS:
            error = {
                "code": "InvalidParameter",
                "message": f"batch size is invalid, it should not be larger than {MAX_TEXTS}."
                ": input.contents",
                "request_id": "bench-error",
            }
            return web.json_response(error, status=400)
        return web.Response(body=bodies[len(texts)], content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post(PATH, embed)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port_queue.put(runner.addresses[0][1])
        await asyncio.Event().wait()

    asyncio.run(main())


# -- the clients -----------------------------------------------------------------


def _batches(texts: list[str]) -> list[list[str]]:
    return [texts[i : i + MAX_TEXTS] for i in range(0, len(texts), MAX_TEXTS)]


def _check(vectors: list[Any], n: int) -> None:
    if len(vectors) != n or any(len(v) != DIMENSION for v in vectors):
        raise RuntimeError(f"expected {n} vectors of {DIMENSION}, got {len(vectors)}")


class Runner:
    """One client, opened once; ``run(texts)`` embeds them all and checks the result."""

    name = ""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.loop = asyncio.new_event_loop()

    def run(self, texts: list[str]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.loop.close()


class AiotongyiAsync(Runner):
    name = "aiotongyi"

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        from aiotongyi import TongyiLLMClient

        self.client = TongyiLLMClient(api_key=KEY, base_url=base_url)

    def run(self, texts: list[str]) -> None:
        result = self.loop.run_until_complete(self.client.embed(texts))
        _check(list(result.vectors), len(texts))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        super().close()


class AiotongyiSync(Runner):
    name = "aiotongyi-sync"

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        from aiotongyi import TongyiLLMClient

        self.client = TongyiLLMClient(api_key=KEY, base_url=base_url)

    def run(self, texts: list[str]) -> None:
        _check(list(self.client.sync_embed(texts).vectors), len(texts))

    def close(self) -> None:
        self.client.close()
        super().close()


class SdkLegacySync(Runner):
    name = "sdk-legacy-sync"

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        import dashscope

        dashscope.base_http_api_url = base_url
        self.sdk: Any = dashscope

    def run(self, texts: list[str]) -> None:
        vectors: list[Any] = []
        for batch in _batches(texts):
            response = self.sdk.TextEmbedding.call(
                model="text-embedding-v4", input=batch, api_key=KEY
            )
            if response.status_code != 200:
                raise RuntimeError(f"{response.code}: {response.message}")
            vectors.extend(e["embedding"] for e in response.output["embeddings"])
        _check(vectors, len(texts))


class SdkV2Sync(Runner):
    name = "sdk-v2-sync"

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        import dashscope

        self.client = dashscope.Client(
            api_key=KEY, base_url=base_url, protocol="native", max_retries=0
        )

    def run(self, texts: list[str]) -> None:
        vectors: list[Any] = []
        for batch in _batches(texts):
            response = self.client.embeddings.create(model="text-embedding-v4", input=batch)
            vectors.extend(e.embedding for e in response.embeddings)
        _check(vectors, len(texts))

    def close(self) -> None:
        self.client.close()
        super().close()


class SdkV2Async(Runner):
    name = "sdk-v2-async"
    gather = False

    def __init__(self, base_url: str) -> None:
        super().__init__(base_url)
        import dashscope

        async def make() -> Any:
            return dashscope.AsyncClient(
                api_key=KEY, base_url=base_url, protocol="native", max_retries=0
            )

        self.client = self.loop.run_until_complete(make())

    async def _embed(self, texts: list[str]) -> list[Any]:
        create = self.client.embeddings.create
        if self.gather:
            responses = await asyncio.gather(
                *(create(model="text-embedding-v4", input=b) for b in _batches(texts))
            )
        else:
            responses = [await create(model="text-embedding-v4", input=b) for b in _batches(texts)]
        return [e.embedding for r in responses for e in r.embeddings]

    def run(self, texts: list[str]) -> None:
        _check(self.loop.run_until_complete(self._embed(texts)), len(texts))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        super().close()


class SdkV2AsyncGather(SdkV2Async):
    name = "sdk-v2-async-gather"
    gather = True


RUNNERS: dict[str, Callable[[str], Runner]] = {
    cls.name: cls
    for cls in (
        AiotongyiAsync,
        AiotongyiSync,
        SdkLegacySync,
        SdkV2Sync,
        SdkV2Async,
        SdkV2AsyncGather,
    )
}
BASELINES = ("sdk-legacy-sync", "sdk-v2-sync", "sdk-v2-async")  # a user's loop over batches


def _measure(name: str, base_url: str, texts: list[str], repeat: int, out: Any) -> None:
    """In a fresh process: open the client, warm up, time ``repeat`` calls."""
    try:
        runner = RUNNERS[name](base_url)
        runner.run(texts[:MAX_TEXTS])  # warm-up: connections, imports, first request
        samples = []
        for _ in range(repeat):
            cpu, wall = time.process_time(), time.perf_counter()
            runner.run(texts)
            samples.append((time.perf_counter() - wall, time.process_time() - cpu))
        runner.close()
        out.put((name, samples, None))
    except Exception as exc:  # reported in the table, the other clients still run
        out.put((name, [], f"{type(exc).__name__}: {exc}"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", default=",".join(RUNNERS), help="comma-separated names")
    parser.add_argument("--json", help="also write the samples to this file")
    args = parser.parse_args(argv)
    names = [n for n in args.clients.split(",") if n]
    unknown = set(names) - set(RUNNERS)
    if unknown:
        parser.error(f"unknown clients: {', '.join(sorted(unknown))}")

    context = multiprocessing.get_context("spawn")
    ports = context.Queue()
    server = context.Process(target=_serve, args=(ports, args.delay_ms / 1000), daemon=True)
    server.start()
    try:
        base_url = f"http://127.0.0.1:{ports.get(timeout=30)}/api/v1"
        texts = [f"benchmark text number {i}: some words to embed" for i in range(args.texts)]
        results: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        errors: dict[str, str] = {}
        for name in names:
            out = context.Queue()
            worker = context.Process(
                target=_measure, args=(name, base_url, texts, args.repeat, out)
            )
            worker.start()
            got_name, samples, error = out.get(timeout=600)
            worker.join()
            results[got_name] = samples
            if error:
                errors[got_name] = error
    finally:
        server.kill()
        server.join()

    report = _report(results, errors, args)
    print(report)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "texts": args.texts,
                    "delay_ms": args.delay_ms,
                    "repeat": args.repeat,
                    "samples": results,
                    "errors": errors,
                    "machine": {"python": sys.version.split()[0], "cpus": os.cpu_count()},
                    "platform": platform.platform(),
                },
                f,
                indent=1,
            )
    return 1 if any(n.startswith("aiotongyi") for n in errors) else 0


def _report(
    results: dict[str, list[tuple[float, float]]], errors: dict[str, str], args: Any
) -> str:
    lines = [
        f"{args.texts} texts, text-embedding-v4 limits (10 per request), "
        f"{args.delay_ms:g} ms per request, median of {args.repeat}",
        "",
        "| client | wall s | CPU µs/text | vs best baseline |",
        "|---|---|---|---|",
    ]
    medians = {
        n: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s))
        for n, s in results.items()
        if s
    }
    baselines = [medians[n][0] for n in BASELINES if n in medians]
    best = min(baselines) if baselines else None
    for name in results:
        if name in errors:
            lines.append(f"| {name} | failed: {errors[name]} | | |")
            continue
        wall, cpu = medians[name]
        ratio = f"{best / wall:.1f}× faster" if best else "-"
        lines.append(f"| {name} | {wall:.3f} | {cpu / args.texts * 1e6:.0f} | {ratio} |")
    if best and "aiotongyi" in medians:
        speedup = best / medians["aiotongyi"][0]
        verdict = "met" if speedup >= 5 else "NOT met"
        lines += ["", f"target >= 5x faster than the best baseline: {speedup:.1f}x ({verdict})"]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
