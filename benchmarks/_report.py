"""Tables and target checks from a run's results (JSON in, Markdown out).

Cells are ``median [min-max]`` over the worker processes of one client; a
``xraw`` ratio is that client's median over ``raw-aiohttp``'s median from the
same run, never from another run.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._clients import ADAPTERS, BASELINE

Result = dict[str, Any]


@dataclass(frozen=True)
class Column:
    """One measured quantity in a table."""

    key: str
    header: str
    scale: float = 1.0
    fmt: str = "{:.1f}"


@dataclass(frozen=True)
class Table:
    """Layout of one scenario's table."""

    columns: tuple[Column, ...]
    ratios: tuple[str, ...]  # keys divided by the baseline's median
    connections: bool = False
    against_async: str | None = None  # key compared with the client's async twin
    against_s1: bool = False  # S6: CPU per frame over the same client's S1
    extra: tuple[str, ...] = field(default=())


WALL_MS = Column("wall_s", "wall ms", 1e3, "{:.1f}")
WALL_S = Column("wall_s", "wall s", 1, "{:.2f}")
FPS = Column("fps", "frames/s", 1, "{:,.0f}")
CPU_FRAME = Column("cpu_us_per_frame", "CPU µs/frame", 1, "{:.1f}")
PEAK = Column("peak_rss_mb", "peak RSS MB", 1, "{:.0f}")
GROWTH = Column("rss_growth_mb", "RSS growth MB", 1, "{:.1f}")
LATENCY = (
    Column("req_ms_median", "median ms/req", 1, "{:.2f}"),
    Column("req_ms_p99", "p99 ms/req", 1, "{:.2f}"),
    Column("ttff_ms_median", "first output ms", 1, "{:.2f}"),
    Column("cpu_us_per_req", "CPU µs/req", 1, "{:.0f}"),
)
STREAM = (WALL_MS, FPS, CPU_FRAME)
CROWD = (WALL_S, FPS, CPU_FRAME, PEAK, GROWTH)

TABLES: dict[str, Table] = {
    "S1": Table(STREAM, ("cpu_us_per_frame", "wall_s")),
    "S2": Table(LATENCY, ("req_ms_median", "cpu_us_per_req"), connections=True),
    "S3": Table(CROWD, ("wall_s", "cpu_us_per_frame"), connections=True),
    "S3c": Table(CROWD, ("wall_s", "cpu_us_per_frame"), connections=True),
    "S4": Table(STREAM, ("cpu_us_per_frame", "wall_s")),
    "S4m": Table(STREAM, ("cpu_us_per_frame", "wall_s")),
    "S5": Table(STREAM, ("cpu_us_per_frame",), against_async="cpu_us_per_frame"),
    "S5r": Table(LATENCY, ("req_ms_median",), connections=True, against_async="cpu_us_per_req"),
    "S5t": Table(
        (WALL_S, CPU_FRAME, PEAK), ("wall_s",), connections=True, against_async="cpu_us_per_frame"
    ),
    "S6": Table((WALL_S, CPU_FRAME, GROWTH), ("cpu_us_per_frame",), against_s1=True),
    "S8": Table(CROWD, ("wall_s", "cpu_us_per_frame"), connections=True),
}
LABELS = {
    "cpu_us_per_frame": "CPU",
    "wall_s": "wall",
    "req_ms_median": "median",
    "cpu_us_per_req": "CPU",
}


def median(results: Iterable[Result], key: str) -> float:
    """Median of ``key`` over results that have it (NaN if none)."""
    values = [r[key] for r in results if isinstance(r.get(key), int | float)]
    return statistics.median(values) if values else math.nan


def _cell(values: Sequence[float], column: Column) -> str:
    if not values:
        return "–"
    fmt, scale = column.fmt, column.scale
    mid = fmt.format(statistics.median(values) * scale)
    if len(values) == 1:
        return mid
    return f"{mid} [{fmt.format(min(values) * scale)}–{fmt.format(max(values) * scale)}]"


def _ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}" if base > 0 and not math.isnan(value / base) else "–"


def group(
    results: Iterable[Result], order: Sequence[str] = ()
) -> dict[str, dict[str, list[Result]]]:
    """Results by scenario, then by client (in ``order`` first, then as they come)."""
    rank = {c: i for i, c in enumerate(order)}
    out: dict[str, dict[str, list[Result]]] = {}
    for r in sorted(results, key=lambda r: rank.get(r["client"], len(rank))):
        out.setdefault(r["scenario"], {}).setdefault(r["client"], []).append(r)
    return out


def good(rows: Iterable[Result]) -> list[Result]:
    """The measurements that passed their checks."""
    return [r for r in rows if r.get("ok")]


def render_table(name: str, summary: str, by_client: dict[str, list[Result]], s1: Any) -> str:
    """Markdown for one scenario."""
    table = TABLES[name]
    header = ["client", "n", *(c.header for c in table.columns)]
    header += [f"×raw {LABELS[k]}" for k in table.ratios]
    if table.against_async:
        header.append(f"×async {LABELS[table.against_async]}")
    if table.against_s1:
        header += ["×S1 CPU/frame", "answer MB", "growth limit MB"]
    if table.connections:
        header.append("conns")
    lines = [f"### {name} — {summary}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    base = good(by_client.get(BASELINE, []))
    not_run: dict[str, list[str]] = {}
    for client, rows in by_client.items():
        skipped = next((r["skipped"] for r in rows if r.get("skipped")), None)
        if skipped:
            not_run.setdefault(skipped, []).append(client)
            continue
        ok = good(rows)
        if not ok:
            errors = "; ".join(sorted({e for r in rows for e in r.get("errors", [])}))[:160]
            lines.append(
                f"| {client} | 0/{len(rows)} | FAILED: {errors} |" + " |" * (len(header) - 3)
            )
            continue
        row = [client, str(len(ok)) if len(ok) == len(rows) else f"{len(ok)}/{len(rows)}"]
        row += [_cell([r[c.key] for r in ok if c.key in r], c) for c in table.columns]
        row += [_ratio(median(ok, k), median(base, k)) if base else "–" for k in table.ratios]
        if table.against_async:
            twin = ADAPTERS[client].twin if client in ADAPTERS else None
            twin_rows = good(by_client.get(twin or "", []))
            is_sync = client in ADAPTERS and not ADAPTERS[client].is_async
            key = table.against_async
            row.append(_ratio(median(ok, key), median(twin_rows, key)) if is_sync else "–")
        if table.against_s1:
            row.append(_ratio(median(ok, "cpu_us_per_frame"), s1(client)))
            answer = ok[0]["answer_bytes"] / 1048576
            row += [f"{answer:.1f}", f"{3 * answer + 10:.1f}"]
        if table.connections:
            row.append(",".join(sorted({str(r.get("srv_connections", "?")) for r in ok})))
        lines.append("| " + " | ".join(row) + " |")
    if not_run:
        why = "; ".join(f"{', '.join(clients)} ({reason})" for reason, clients in not_run.items())
        lines += ["", f"Not run: {why}."]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Check:
    """One of issue 6's targets, evaluated for aiotongyi."""

    scenario: str
    what: str
    value: float
    limit: float

    @property
    def met(self) -> bool:
        return self.value <= self.limit


def targets(results: list[Result], scenarios: dict[str, Any]) -> list[Check]:
    """Issue 6's targets that this run's results can evaluate."""
    by = group(results)
    checks: list[Check] = []

    def m(scenario: str, client: str, key: str) -> float:
        return median(good(by.get(scenario, {}).get(client, [])), key)

    def ratio(scenario: str, key: str, limit: float, what: str, client: str = "aiotongyi") -> None:
        value = m(scenario, client, key) / m(scenario, BASELINE, key)
        if not math.isnan(value):
            checks.append(Check(scenario, what, value, limit))

    ratio("S1", "cpu_us_per_frame", 1.0, "CPU/frame ×raw (stretch 0.8)")
    ratio("S2", "req_ms_median", 1.1, "median latency ×raw")
    p99 = m("S2", "aiotongyi", "req_ms_p99") / m("S2", "aiotongyi", "req_ms_median")
    if not math.isnan(p99):
        checks.append(Check("S2", "p99 / median", p99, 2.0))
    for name in ("S3", "S3c"):
        ratio(name, "wall_s", 1.2, "wall ×raw")
        rows = good(by.get(name, {}).get("aiotongyi", []))
        if rows and name in scenarios:
            conns = max(r.get("srv_connections", 0) for r in rows)
            checks.append(Check(name, "TCP connections", conns, scenarios[name]["concurrency"] + 1))
    for name in ("S4", "S4m"):
        ratio(name, "cpu_us_per_frame", 1.0, "CPU/frame ×raw")
    sync = m("S5", "aiotongyi-sync", "cpu_us_per_frame") / m("S5", "aiotongyi", "cpu_us_per_frame")
    if not math.isnan(sync):
        checks.append(Check("S5", "sync bridge CPU/frame ×async", sync, 1.3))
    rows = by.get("S5t", {}).get("aiotongyi-sync", [])
    if rows and not any(r.get("skipped") for r in rows):
        failed = sum(r.get("n_errors", 1) for r in rows)
        checks.append(Check("S5t", "failed streams (threads)", failed, 0))
    scale = m("S8", "aiotongyi", "cpu_us_per_frame") / m("S3", "aiotongyi", "cpu_us_per_frame")
    if not math.isnan(scale):
        checks.append(Check("S8", "CPU/frame ×S3 (issue 17)", scale, 1.1))
    flat = m("S6", "aiotongyi", "cpu_us_per_frame") / m("S1", "aiotongyi", "cpu_us_per_frame")
    if not math.isnan(flat):
        checks.append(Check("S6", "CPU/frame ×S1", flat, 1.2))
    growth = good(by.get("S6", {}).get("aiotongyi", []))
    if growth:
        limit = 3 * growth[0]["answer_bytes"] / 1048576 + 10
        checks.append(
            Check("S6", "peak RSS growth MB", max(r["rss_growth_mb"] for r in growth), limit)
        )
    return checks


def render_targets(checks: list[Check]) -> str:
    """Markdown for the target checks (informational; never an exit status)."""
    if not checks:
        return "### Targets (issue 6)\n\nNo aiotongyi results in this run.\n"
    lines = ["### Targets (issue 6), aiotongyi", "", "| scenario | target | value | limit | met |"]
    lines.append("|---|---|---|---|---|")
    for c in checks:
        mark = "yes" if c.met else "**no**"
        value = f"{c.value:.2f}" if c.value % 1 else f"{c.value:.0f}"
        limit = f"{c.limit:.2f}" if c.limit % 1 else f"{c.limit:.0f}"
        lines.append(f"| {c.scenario} | {c.what} | {value} | {limit} | {mark} |")
    return "\n".join(lines) + "\n"


def render_meta(meta: dict[str, Any]) -> str:
    """Machine and software facts as a small table."""
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items() if v)
    rows = [
        ("started", meta.get("started")),
        ("mode", meta.get("mode")),
        ("CPU", f"{meta.get('cpu_model')}, nproc = {meta.get('nproc')}"),
        ("RAM", f"{meta.get('ram_gib')} GiB"),
        ("Python", f"{meta.get('python')} ({meta.get('platform')})"),
        ("event loop", meta.get("loop")),
        ("pinning", f"server CPU {meta.get('server_cpu')}, workers CPU {meta.get('client_cpu')}"),
        ("packages", versions),
        ("aiotongyi commit", meta.get("commit")),
        ("PYTHONPATH", meta.get("pythonpath") or "–"),
        ("command", " ".join(meta.get("argv", []))),
        ("elapsed", f"{meta.get('elapsed_s')} s"),
    ]
    body = "\n".join(f"| {k} | {v} |" for k, v in rows)
    return "| | |\n|---|---|\n" + body + "\n"


def render(data: dict[str, Any]) -> str:
    """The whole Markdown report of one run."""
    meta, results = data["meta"], data["results"]
    scenarios: dict[str, dict[str, Any]] = meta["scenarios"]
    by = group(results, meta.get("clients", ()))

    def s1(client: str) -> float:
        return median(good(by.get("S1", {}).get(client, [])), "cpu_us_per_frame")

    parts = [render_meta(meta)]
    for name, spec in scenarios.items():
        if name in by:
            summary = spec["summary"].format(**spec)
            parts.append(render_table(name, summary, by[name], s1))
    parts.append(render_targets(targets(results, scenarios)))
    return "\n".join(parts)
