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
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from ._clients import ADAPTERS, AsyncAdapter, Target
from ._worker import peak_rss_mb, raise_fd_limit, reset_peak_rss, rss_mb

__all__ = ["READERS", "measure"]

ROOT = Path(__file__).resolve().parents[1]
#: reader -> (adapter, mode): the harness's own adapters; raw-any's merge mode
#: is the raw reader that keeps the answer (``acc += delta``), as in S4m.
READERS = {
    "raw-aiohttp-any": ("raw-aiohttp-any", "incremental"),
    "raw-aiohttp-any+answer": ("raw-aiohttp-any", "merge"),
    "aiotongyi": ("aiotongyi", "incremental"),
}


async def _run(reader: str, base: str, streams: int) -> dict[str, Any]:
    name, mode = READERS[reader]
    target = Target(native_base=base, compat_base=base, max_connections=streams)
    adapter = ADAPTERS[name](target)
    assert isinstance(adapter, AsyncAdapter)
    await adapter.aopen()

    async def one() -> int:
        size = 0  # the answer's length: the last text in merge mode, the deltas' sum else
        async for text in adapter.astream(mode):
            size = len(text) if mode == "merge" else size + len(text)
        return size

    await one()  # warm: the client open, its first connection made
    opened = rss_mb()
    was_reset = reset_peak_rss()
    lengths = await asyncio.gather(*(one() for _ in range(streams)))
    peak = peak_rss_mb(was_reset)
    await adapter.aclose()
    return {
        "reader": reader,
        "streams": streams,
        "lengths": sorted(set(lengths)),
        "growth_mb": peak - opened,
    }


def measure(reader: str, base: str, streams: int) -> dict[str, Any]:
    """One reader in this process (call it in a fresh one)."""
    if hasattr(os, "sched_setaffinity"):  # as the main harness: the server has its own CPU
        os.sched_setaffinity(0, {0})
    raise_fd_limit(streams * 2 + 256)
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
                assert result["lengths"] == [args.frames * 20], result
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
