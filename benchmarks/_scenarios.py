"""The scenarios: what each measures, its sizes, and which clients it runs.

Sizes follow issue 6 (and the shared harness's RESULTS.md, so the baseline
numbers stay comparable); ``QUICK`` shrinks them for a CI smoke run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ._clients import BASELINE, Adapter


@dataclass(frozen=True)
class Scenario:
    """One measurement: a stream spec and how it is driven."""

    name: str
    summary: str
    mode: str  # incremental | cumulative | merge
    frames: int
    chars: int = 20
    requests: int = 1  # sequential requests measured
    concurrency: int = 1  # streams at once: asyncio tasks, or threads for sync clients
    warmup: int = 1  # untimed calls first, same spec, same client
    repeat: int = 5  # worker processes per client
    cold_pool: bool = False  # measure on a fresh client (no idle connection)
    bridge: bool = False  # S5 family: the sync bridge against its async path

    @property
    def answer_bytes(self) -> int:
        """UTF-8 size of one whole answer (3 bytes per Chinese character)."""
        return self.frames * self.chars * 3

    def skip_reason(self, cls: type[Adapter]) -> str | None:
        """Why ``cls`` does not run in this scenario, or None."""
        if self.mode not in cls.modes:
            return f"no {self.mode} mode"
        if self.name == "S8" and cls.name not in _AT_SCALE:
            return "S8 measures aiotongyi against the raw readers only"
        if self.bridge:
            if cls.is_async and cls.name != BASELINE and not _has_bridge(cls):
                return "async peer"
            if not cls.is_async and not cls.bridge and self.concurrency == 1:
                return "plain sync client, see S1/S2"
            return None
        if cls.bridge:
            return "sync bridge, see S5"
        if not cls.is_async and self.concurrency > 1:
            return "sync client, async-only scenario"
        return None


_AT_SCALE = ("raw-aiohttp", "raw-aiohttp-any", "aiotongyi")


def _has_bridge(cls: type[Adapter]) -> bool:
    from ._clients import ADAPTERS

    twin = ADAPTERS.get(cls.twin or "")
    return twin is not None and twin.bridge


FULL: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "S1", "one stream, {frames:,} incremental frames x {chars} chars", "incremental", 2000
        ),
        Scenario(
            "S2",
            "{requests} sequential {frames}-frame requests on one kept-alive client",
            "incremental",
            5,
            requests=200,
            warmup=10,
        ),
        Scenario(
            "S3",
            "{concurrency} concurrent streams x {frames} frames, one loop, warm pool",
            "incremental",
            200,
            concurrency=500,
            repeat=3,
        ),
        Scenario(
            "S3c",
            "as S3 on a fresh client (cold pool: {concurrency} new connections)",
            "incremental",
            200,
            concurrency=500,
            repeat=3,
            cold_pool=True,
        ),
        Scenario("S4", "one stream, {frames:,} server-side cumulative frames", "cumulative", 1000),
        Scenario(
            "S4m",
            "{frames:,} incremental frames merged client-side (cumulative text)",
            "merge",
            1000,
        ),
        Scenario(
            "S5",
            "sync bridge: one stream, {frames:,} incremental frames (S1 through the bridge)",
            "incremental",
            2000,
            bridge=True,
        ),
        Scenario(
            "S5r",
            "sync bridge: {requests} sequential {frames}-frame requests (S2 through the bridge)",
            "incremental",
            5,
            requests=200,
            warmup=10,
            bridge=True,
        ),
        Scenario(
            "S5t",
            "sync bridge: {concurrency} threads streaming {frames} frames each at once "
            "(async clients: tasks)",
            "incremental",
            200,
            concurrency=50,
            repeat=3,
            bridge=True,
        ),
        Scenario(
            "S8",
            "{concurrency:,} concurrent streams x {frames} frames, one loop "
            "(S3 at scale; --set S8.concurrency=N for the curve)",
            "incremental",
            200,
            concurrency=5000,
            repeat=1,
        ),
        Scenario(
            "S6",
            "a long answer: one stream, {frames:,} incremental frames, the caller keeps only "
            "the last output",
            "incremental",
            20000,
            repeat=3,
        ),
    )
}

_QUICK_SIZES: dict[str, dict[str, Any]] = {
    "S1": {"frames": 400},
    "S2": {"requests": 30, "warmup": 3},
    "S3": {"frames": 40, "concurrency": 50},
    "S3c": {"frames": 40, "concurrency": 50},
    "S4": {"frames": 150},
    "S4m": {"frames": 150},
    "S5": {"frames": 400},
    "S5r": {"requests": 30, "warmup": 3},
    "S5t": {"frames": 40, "concurrency": 8},
    "S6": {"frames": 2000},
    "S8": {"frames": 20, "concurrency": 1000},
}
QUICK: dict[str, Scenario] = {
    name: dataclasses.replace(s, repeat=1, **_QUICK_SIZES[name]) for name, s in FULL.items()
}


def override(scenario: Scenario, assignments: dict[str, str]) -> Scenario:
    """``scenario`` with integer fields replaced (``--set S1.frames=500``)."""
    fields = {f.name for f in dataclasses.fields(Scenario) if f.type in ("int", int)}
    unknown = set(assignments) - fields
    if unknown:
        raise ValueError(f"cannot set {', '.join(sorted(unknown))}; choose from {sorted(fields)}")
    values: dict[str, Any] = {k: int(v) for k, v in assignments.items()}
    return dataclasses.replace(scenario, **values)
