"""Decode time per byte of the SSE decoder, for one frame of 1 to 10 MiB.

    python benchmarks/decoder_scaling.py

The decoder scans only bytes it has not seen, so the time per byte must stay
flat as the frame grows (a decoder that re-splits its growing buffer on every
read would be quadratic here).  Frames are fed in 4 KiB reads, like a socket.
"""

from __future__ import annotations

import time

from aiotongyi._sse import SSEDecoder

READ = 4096


def ns_per_byte(size: int) -> float:
    frame = b"data:" + b'{"t":"' + b"x" * size + b'"}' + b"\n\n"
    best = float("inf")
    for _ in range(3):
        decoder = SSEDecoder()
        started = time.perf_counter()
        events = []
        for offset in range(0, len(frame), READ):
            events += decoder.feed(frame[offset : offset + READ])
        elapsed = time.perf_counter() - started
        assert len(events) == 1
        best = min(best, elapsed)
    return best / len(frame) * 1e9


def main() -> None:
    print("| frame | ns/byte | x 1 MiB |")
    print("|---|---|---|")
    baseline = None
    for mib in (1, 2, 4, 8, 10):
        value = ns_per_byte(mib * 1024 * 1024)
        baseline = baseline or value
        print(f"| {mib} MiB | {value:.2f} | {value / baseline:.2f} |")


if __name__ == "__main__":
    main()
