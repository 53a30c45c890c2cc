"""S8's memory, with the baseline that keeps the answer: RSS growth for N streams at once.

    python -m benchmarks.s8_memory                  # 5,000 streams x 200 frames
    python -m benchmarks.s8_memory --streams 1000 --repeat 3

aiotongyi promises every output's cumulative ``text`` (and the ``partial`` of
an error is the answer so far), so each open stream holds its answer: 200
frames of 20 Chinese characters are 8 KB as a ``str``.  The raw readers of the
main harness keep nothing, so next to them this runs the same raw reader
keeping the answer (``acc += delta``, as S4m's raw merge does): the floor for
a client that keeps what aiotongyi keeps.  Each reader runs in a fresh process
(the benchmark server in another); RSS growth is the kernel's peak RSS over
the run minus the RSS once the client is open and warm (one stream).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["READERS", "measure"]

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "请用中文写一段关于流式输出的介绍。"
READERS = ("raw-aiohttp-any", "raw-aiohttp-any+answer", "aiotongyi")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # the kernel's peak-RSS mark


def _status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _run(reader: str, base: str, streams: int) -> dict[str, Any]:
    import aiohttp

    from aiotongyi import TongyiLLMClient

    keep_answer = reader.endswith("+answer")
    if reader == "aiotongyi":
        client = TongyiLLMClient(
            model="qwen-turbo", api_key="sk-fake", base_url=base, max_connections=streams + 10
        )

        async def one() -> int:
            count = 0
            async for output in client.generate_stream(PROMPT):
                count += len(output.delta)
            return count

        close: Any = client.aclose
    else:
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=streams + 10))
        body = json.dumps(
            {
                "model": "qwen-turbo",
                "input": {"messages": [{"role": "user", "content": PROMPT}]},
                "parameters": {"incremental_output": True},
            }
        )
        headers = {
            "Authorization": "Bearer sk-fake",
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "X-DashScope-SSE": "enable",
        }
        url = base + "/services/aigc/text-generation/generation"

        async def one() -> int:
            count, answer, buffer = 0, "", b""
            async with session.post(url, data=body, headers=headers) as response:
                async for data in response.content.iter_any():
                    buffer += data
                    if b"\n\n" not in buffer:
                        continue
                    *events, buffer = buffer.split(b"\n\n")
                    for event in events:
                        at = event.rfind(b"\ndata:")
                        if at >= 0:
                            frame = json.loads(event[at + 6 :])
                            delta = frame["output"]["choices"][0]["message"]["content"]
                            count += len(delta)
                            if keep_answer:
                                answer += delta
            return count

        close = session.close
    await one()  # warm: the client open, its first connection made
    opened = _status("VmRSS")
    _reset_peak()
    counts = await asyncio.gather(*(one() for _ in range(streams)))
    peak = _status("VmHWM")
    await close()
    return {"reader": reader, "streams": streams, "chars": sum(counts), "growth_mb": peak - opened}


def measure(reader: str, base: str, streams: int) -> dict[str, Any]:
    """One reader in this process (call it in a fresh one)."""
    if hasattr(os, "sched_setaffinity"):  # as the main harness: the server has its own CPU
        os.sched_setaffinity(0, {0})
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = streams * 2 + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    return asyncio.run(_run(reader, base, streams))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--one", nargs=2, metavar=("READER", "BASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], args.one[1], args.streams)))
        return
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._server", "0", "--cpu", str((os.cpu_count() or 1) - 1)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert server.stdout is not None
        base = server.stdout.readline().split()[1] + f"/_fake/frames={args.frames}&chars=20/api/v1"
        growth: dict[str, list[float]] = {reader: [] for reader in READERS}
        for _ in range(args.repeat):  # interleaved: drift on a shared machine hits all
            for reader in READERS:
                command = [sys.executable, "-m", "benchmarks.s8_memory"]
                command += ["--streams", str(args.streams), "--one", reader, base]
                for attempt in range(3):  # 5,000 connects at once: loopback may reset one
                    out = subprocess.run(
                        command, capture_output=True, text=True, env=env, cwd=ROOT, check=False
                    )
                    if out.returncode == 0:
                        break
                    print(f"# {reader}: attempt {attempt + 1} failed", file=sys.stderr)
                else:
                    raise RuntimeError(f"{reader} failed: {out.stderr[-2000:]}")
                result = json.loads(out.stdout.splitlines()[-1])
                assert result["chars"] == args.streams * args.frames * 20, result
                growth[reader].append(result["growth_mb"])
    finally:
        server.terminate()
        server.wait(10)
    floor = statistics.median(growth["raw-aiohttp-any+answer"])
    print(f"{args.streams:,} streams x {args.frames} frames, RSS growth MB (median, min-max):")
    for reader, values in growth.items():
        mid = statistics.median(values)
        print(
            f"  {reader:24s} {mid:7.1f} [{min(values):.1f}-{max(values):.1f}]"
            f"  {mid * 1024 / args.streams:5.1f} KB/stream  x{mid / floor:.2f} of raw+answer"
        )


if __name__ == "__main__":
    main()
