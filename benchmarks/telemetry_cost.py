"""What telemetry and hooks cost per streamed frame (client CPU), against the benchmark server.

    python -m benchmarks.telemetry_cost [--frames 2000] [--streams 20] [--repeat 5]

The server runs in its own process; this process streams ``--streams`` calls
of ``--frames`` frames each, once per setting and ``--repeat`` times in
rotation, and reports the median client CPU time per frame of each setting
and its difference from ``off``.  Telemetry uses the OpenTelemetry SDK with
a span processor that drops spans and a metric reader that is never
collected, so what is measured is aiotongyi's side plus the SDK's recording.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from aiotongyi import Hooks, TongyiLLMClient


def _settings() -> dict[str, Callable[[], dict[str, Any]]]:
    def telemetry() -> dict[str, Any]:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider

        return {
            "telemetry": True,
            "tracer_provider": TracerProvider(),
            "meter_provider": MeterProvider(metric_readers=[InMemoryMetricReader()]),
        }

    return {
        "off": lambda: {"telemetry": False},
        "empty hook": lambda: {"telemetry": False, "hooks": Hooks()},
        "telemetry on": telemetry,
    }


async def _measure(base_url: str, options: dict[str, Any], streams: int) -> float:
    async with TongyiLLMClient(api_key="sk-bench", base_url=base_url, **options) as client:
        await client.generate("warm up")
        started = time.process_time()
        for _ in range(streams):
            async with client.generate_stream("你好") as stream:
                async for _ in stream:
                    pass
        return time.process_time() - started


def main(argv: list[str] | None = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--delay-ms", type=float, default=0.0, help="between frames: 1 makes each frame a chunk"
    )
    args = parser.parse_args(argv)
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._server", "0", "--no-uvloop"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[1]
        knobs = f"frames={args.frames}&chars=20&mode=incremental&delay_ms={args.delay_ms}"
        base_url = f"{url}/_fake/{knobs}/api/v1"
        settings = _settings()
        samples: dict[str, list[float]] = {name: [] for name in settings}
        for _ in range(args.repeat):
            for name, make in settings.items():
                seconds = asyncio.run(_measure(base_url, make(), args.streams))
                samples[name].append(seconds / (args.streams * args.frames) * 1e6)
    finally:
        server.terminate()
        server.wait(10)
    off = statistics.median(samples["off"])
    print(
        f"\n{args.streams} streams x {args.frames} frames, {args.delay_ms:g} ms apart, "
        f"median of {args.repeat}\n"
    )
    print("| setting | client CPU per frame | vs off |")
    print("|---|---:|---:|")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.2f} µs | {median - off:+.2f} µs ({median / off - 1:+.1%}) |")


if __name__ == "__main__":
    main()
