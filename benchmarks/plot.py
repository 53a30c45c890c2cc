"""Plot S1 CPU per frame and S3 wall time per client from a run's JSON.

    python -m benchmarks.plot out/bench-....json [-o plot.png]
    python -m benchmarks.plot full.json s8-1000.json s8-2000.json -o plot.png

With S3 and S8 results at several stream counts (``--set S8.concurrency=N``
runs, given after the main one), a last panel draws CPU per frame against the
number of concurrent streams.

Needs matplotlib (the ``bench`` extra); without it, says so and draws nothing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from ._report import good, group

PANELS = (
    ("S1", "cpu_us_per_frame", 1.0, "S1: CPU µs per frame (2,000 frames, lower is better)"),
    ("S3", "wall_s", 1.0, "S3: wall s, 500 concurrent streams (lower is better)"),
    ("S3c", "wall_s", 1.0, "S3c: wall s, cold pool (lower is better)"),
)


def _colour(client: str) -> str:
    if client.startswith("aiotongyi"):
        return "tab:red"
    return "tab:gray" if client.startswith("raw-") else "tab:blue"


SCALE_CLIENTS = ("raw-aiohttp", "raw-aiohttp-any", "aiotongyi")


def _streams(result: dict[str, Any]) -> int:
    # runs before the field was recorded: each S3/S8 stream opened one connection
    return int(result.get("concurrency") or result["srv_connections"])


def scaling(data: dict[str, Any]) -> dict[str, dict[int, list[float]]]:
    """CPU µs per frame by client, then by concurrent streams, from S3 and S8."""
    curves: dict[str, dict[int, list[float]]] = {}
    for result in data["results"]:
        if result["scenario"] in ("S3", "S8") and result.get("ok"):
            if result["client"] in SCALE_CLIENTS:
                by_streams = curves.setdefault(result["client"], {})
                by_streams.setdefault(_streams(result), []).append(result["cpu_us_per_frame"])
    return {c: points for c, points in curves.items() if len(points) > 1}


def plot(data: dict[str, Any], path: str) -> bool:
    """Write a PNG of the panels this run has; False when matplotlib is missing."""
    try:
        importlib.import_module("matplotlib").use("Agg")  # files only, no display
        plt = importlib.import_module("matplotlib.pyplot")
    except ImportError:
        print("# matplotlib not installed: no plot", file=sys.stderr)
        return False
    by = group(data["results"])
    panels = [p for p in PANELS if any(good(rows) for rows in by.get(p[0], {}).values())]
    curves = scaling(data)
    if not panels and not curves:
        return False
    rows_n = len(panels) + bool(curves)
    fig, axes = plt.subplots(rows_n, 1, figsize=(8, 2.8 * rows_n), squeeze=False)
    if curves:
        ax = axes[-1, 0]
        for client, points in sorted(curves.items()):
            xs = sorted(points)
            ax.plot(
                xs,
                [statistics.median(points[x]) for x in xs],
                marker="o",
                label=client,
                color=_colour(client),
                linestyle="-" if client != "raw-aiohttp-any" else "--",
            )
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(sorted({x for points in curves.values() for x in points}))
        ax.get_xaxis().set_major_formatter(
            importlib.import_module("matplotlib.ticker").ScalarFormatter()
        )
        ax.set_ylim(bottom=0)
        ax.set_title("S3 -> S8: CPU µs per frame by concurrent streams (one loop)", fontsize=10)
        ax.legend(fontsize=8)
    for ax, (name, key, scale, title) in zip(axes[:, 0], panels, strict=False):
        rows = {c: [r[key] * scale for r in good(rs)] for c, rs in by[name].items() if good(rs)}
        clients = sorted(rows, key=lambda c: statistics.median(rows[c]))
        mids = [statistics.median(rows[c]) for c in clients]
        low = [m - min(rows[c]) for m, c in zip(mids, clients, strict=True)]
        high = [max(rows[c]) - m for m, c in zip(mids, clients, strict=True)]
        colours = [_colour(c) for c in clients]
        ax.barh(clients, mids, xerr=[low, high], color=colours, capsize=3)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.set_xlim(0, max(m + h for m, h in zip(mids, high, strict=True)) * 1.15)
        for y, (value, up) in enumerate(zip(mids, high, strict=True)):
            ax.text(value + up, y, f"  {value:.3g}", va="center", fontsize=8)
    meta = data["meta"]
    fig.suptitle(
        f"aiotongyi benchmarks ({meta.get('mode')}, {meta.get('started')}); bars: median, "
        "whiskers: min-max",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "json", nargs="+", help="results files written by python -m benchmarks (meta: the first)"
    )
    parser.add_argument("-o", "--output", help="PNG path (default: next to the first JSON)")
    args = parser.parse_args(argv)
    output = args.output or str(Path(args.json[0]).with_suffix(".png"))
    runs = [json.loads(Path(name).read_text()) for name in args.json]
    data = {"meta": runs[0]["meta"], "results": [r for run in runs for r in run["results"]]}
    ok = plot(data, output)
    if ok:
        print(output)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
