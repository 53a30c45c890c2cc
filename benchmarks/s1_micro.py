"""S1's pure per-frame cost: SSE decoder + accumulator on S1-shaped frames (no network).

    python -m benchmarks.s1_micro                 # us/frame, best of --repeat
    python -m benchmarks.s1_micro --frames 2000 --repeat 15

The frames are the benchmark server's own (``build_native_frames``), fed one
frame per chunk as ``readany`` mostly hands them over, and the caller reads
``delta`` of every output as S1's client does.  A baseline that only splits
and ``json.loads`` each frame (what ``raw-aiohttp-any`` does) is printed beside
it, so the figure left is the library's own work.
"""

from __future__ import annotations

import argparse
import json
import time

from aiotongyi._accumulate import Accumulator
from aiotongyi._sse import SSEDecoder

from ._server import build_native_frames

__all__ = ["run_aiotongyi", "run_baseline"]


def run_aiotongyi(frames: list[bytes]) -> int:
    decoder = SSEDecoder()
    accumulator = Accumulator("qwen-plus", request_id="header-id")
    feed = decoder.feed
    add = accumulator.add_event
    size = 0
    for chunk in frames:
        for event in feed(chunk):
            for output in add(event):
                size += len(output.delta)
    for event in decoder.flush():
        for output in add(event):
            size += len(output.delta)
    assert accumulator.is_complete
    return size


def run_baseline(frames: list[bytes]) -> int:
    size = 0
    buffer = b""
    loads = json.loads
    for chunk in frames:
        buffer += chunk
        *events, buffer = buffer.split(b"\n\n")
        for event in events:
            for line in event.split(b"\n"):
                if line.startswith(b"data:"):
                    frame = loads(line[5:])
                    size += len(frame["output"]["choices"][0]["message"]["content"])
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--chars", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    frames, _ = build_native_frames(args.frames, args.chars, True, "message")
    runs = {"baseline": run_baseline, "aiotongyi": run_aiotongyi}
    best = dict.fromkeys(runs, float("inf"))
    sizes = {name: run(frames) for name, run in runs.items()}
    assert sizes["baseline"] == sizes["aiotongyi"] == args.frames * args.chars, sizes
    for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits both
        for name, run in runs.items():
            start = time.perf_counter()
            run(frames)
            best[name] = min(best[name], time.perf_counter() - start)
    for name, seconds in best.items():
        print(f"{name:10s} {seconds / args.frames * 1e6:6.2f} us/frame")
    print(f"ratio      {best['aiotongyi'] / best['baseline']:6.2f}x baseline")


if __name__ == "__main__":
    main()
