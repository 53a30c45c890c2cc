"""One measurement in this process: one client, one scenario, one repeat.

    python -m benchmarks._worker '<json config>'

prints ``RESULT {...}`` as its last line. The orchestrator starts a fresh
worker per measurement so that no client shares a process, an import cache or
a heap with another.

Method (from the shared harness): build the client and open it (untimed), run
``warmup`` calls of the same spec on it, then time the measured section.
CPU is ``time.process_time()`` (all threads, user + sys), wall is
``perf_counter``. Memory: the kernel's peak RSS mark is reset once the client
is open, so ``rss_growth_mb`` is the peak over warm-up and measurement minus
the RSS of the opened client.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import math
import os
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from ._clients import ADAPTERS, AsyncAdapter, SyncAdapter, Target, load_adapter_file
from ._scenarios import Scenario

# one call: (frames, sum of text lengths, length of the last text, start, first output, end)
Call = tuple[int, int, int, float, float, float]


def knob_prefix(scenario: Scenario, extra: str = "") -> str:
    """Base-URL prefix that selects the server's knobs for this scenario."""
    prefix = f"/_fake/frames={scenario.frames}&chars={scenario.chars}"
    return prefix + ("&" + extra if extra else "")


def rss_mb() -> float:
    """Resident set size now."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1048576
    except OSError:
        pass
    try:
        psutil = importlib.import_module("psutil")  # the bench extra; only without /proc
    except ImportError:
        return math.nan
    return float(psutil.Process().memory_info().rss) / 1048576


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def peak_rss_mb(was_reset: bool) -> float:
    """Peak RSS since the reset, else over the process's life."""
    if was_reset:
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


def check(scenario: Scenario, call: Call) -> str | None:
    """What is wrong with one call's output, or None."""
    frames, total, last_len = call[:3]
    if frames != scenario.frames:
        return f"got {frames} frames, want {scenario.frames}"
    got = total if scenario.mode == "incremental" else last_len
    want = scenario.frames * scenario.chars
    return None if got == want else f"got {got} characters, want {want}"


class _Profiler:
    def __init__(self, kind: str | None, out_base: str) -> None:
        self.kind, self.out_base = kind, out_base
        self.profiler: Any = None

    def start(self) -> None:
        if self.kind == "cprofile":
            import cProfile

            self.profiler = cProfile.Profile()
            self.profiler.enable()
        elif self.kind == "pyinstrument":
            pyinstrument = importlib.import_module("pyinstrument")
            self.profiler = pyinstrument.Profiler(interval=0.0005, async_mode="enabled")
            self.profiler.start()

    def stop(self) -> str | None:
        if self.profiler is None:
            return None
        path = self.out_base + ".txt"
        if self.kind == "cprofile":
            self.profiler.disable()  # first: importing pstats must not be profiled
            import io
            import pstats

            self.profiler.dump_stats(self.out_base + ".prof")
            text = io.StringIO()
            stats = pstats.Stats(self.profiler, stream=text).sort_stats("tottime")
            stats.print_stats(40)
            text.write("\n==== by cumulative time ====\n")
            stats.sort_stats("cumulative").print_stats(60)
            report = text.getvalue()
        else:
            renderer = importlib.import_module("pyinstrument.renderers").ConsoleRenderer
            self.profiler.stop()
            report = self.profiler.output(renderer(flat=True, flat_time="self"))
            report += "\n==== call tree ====\n"
            report += self.profiler.output(renderer(show_all=True))
        with open(path, "w") as f:
            f.write(report)
        return path


def _summarise(
    result: dict[str, Any],
    scenario: Scenario,
    calls: list[Call | BaseException],
    wall: float,
    cpu: tuple[float, float, float],
) -> None:
    errors: list[str] = []
    good: list[Call] = []
    for call in calls:
        if isinstance(call, BaseException):
            errors.append(f"{type(call).__name__}: {call}")
        elif (problem := check(scenario, call)) is not None:
            errors.append(problem)
        else:
            good.append(call)
    frames = sum(c[0] for c in good)
    result.update(
        wall_s=wall,
        cpu_s=cpu[0],
        cpu_user_s=cpu[1],
        cpu_sys_s=cpu[2],
        frames_total=frames,
        fps=frames / wall if wall > 0 else math.nan,
        cpu_us_per_frame=cpu[0] / frames * 1e6 if frames else math.nan,
        n_errors=len(errors),
        errors=sorted(set(errors))[:5],
        ok=not errors,
    )
    latency = [c[5] - c[3] for c in good]
    first = [c[4] - c[3] for c in good]
    if scenario.requests > 1 and latency:
        result.update(
            req_ms_median=statistics.median(latency) * 1e3,
            req_ms_p99=percentile(latency, 0.99) * 1e3,
            ttff_ms_median=statistics.median(first) * 1e3,
            ttff_ms_p99=percentile(first, 0.99) * 1e3,
            cpu_us_per_req=cpu[0] / len(latency) * 1e6,
        )
    elif scenario.concurrency > 1 and latency:
        result.update(stream_s_median=statistics.median(latency), stream_s_max=max(latency))


def _cpu() -> tuple[float, float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return time.process_time(), usage.ru_utime, usage.ru_stime


def _delta(a: tuple[float, float, float], b: tuple[float, float, float]) -> tuple[float, ...]:
    return tuple(y - x for x, y in zip(a, b, strict=True))


def _sync_call(adapter: SyncAdapter, mode: str) -> Call:
    start = time.perf_counter()
    first = None
    frames = total = 0
    last = ""
    for text in adapter.stream(mode):
        if first is None:
            first = time.perf_counter()
        frames += 1
        total += len(text)
        last = text  # the caller keeps only the last output
    end = time.perf_counter()
    return frames, total, len(last), start, first or end, end


def _in_threads(n: int, call: Callable[[], Call]) -> tuple[list[Call | BaseException], float]:
    calls: list[Call | BaseException] = [RuntimeError("thread did not finish")] * n
    barrier = threading.Barrier(n + 1)

    def target(i: int) -> None:
        barrier.wait()
        try:
            calls[i] = call()
        except Exception as exc:
            calls[i] = exc

    threads = [threading.Thread(target=target, args=(i,), name=f"bench-{i}") for i in range(n)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return calls, time.perf_counter() - start


def run_sync(
    adapter: SyncAdapter, scenario: Scenario, result: dict[str, Any], prof: _Profiler
) -> None:
    """Measure a blocking client (threads when the scenario is concurrent)."""
    adapter.open()
    try:
        result["rss_open_mb"] = rss_mb()
        was_reset = reset_peak_rss()
        for _ in range(scenario.warmup):
            _sync_call(adapter, scenario.mode)
        result["rss_before_mb"] = rss_mb()
        prof.start()
        cpu0 = _cpu()
        if scenario.concurrency > 1:
            calls, wall = _in_threads(
                scenario.concurrency, lambda: _sync_call(adapter, scenario.mode)
            )
        else:
            start = time.perf_counter()
            calls = [_sync_call(adapter, scenario.mode) for _ in range(scenario.requests)]
            wall = time.perf_counter() - start
        cpu = _delta(cpu0, _cpu())
        result["profile_file"] = prof.stop()
        result["peak_rss_mb"] = peak_rss_mb(was_reset)
        _summarise(result, scenario, calls, wall, cpu)  # type: ignore[arg-type]
    finally:
        adapter.close()


async def _async_call(adapter: AsyncAdapter, mode: str) -> Call:
    start = time.perf_counter()
    first = None
    frames = total = 0
    last = ""
    async for text in adapter.astream(mode):
        if first is None:
            first = time.perf_counter()
        frames += 1
        total += len(text)
        last = text  # the caller keeps only the last output
    end = time.perf_counter()
    return frames, total, len(last), start, first or end, end


async def run_async(
    make: Callable[[], AsyncAdapter], scenario: Scenario, result: dict[str, Any], prof: _Profiler
) -> None:
    """Measure an asyncio client on the running loop."""
    adapter = make()
    await adapter.aopen()
    try:
        result["rss_open_mb"] = rss_mb()
        was_reset = reset_peak_rss()
        for _ in range(scenario.warmup):
            await _async_call(adapter, scenario.mode)
        if scenario.cold_pool:
            # code paths are warm, but no connection is pooled
            await adapter.aclose()
            adapter = make()
            await adapter.aopen()
        result["rss_before_mb"] = rss_mb()
        prof.start()
        cpu0 = _cpu()
        start = time.perf_counter()
        calls: list[Call | BaseException]
        if scenario.concurrency > 1:
            tasks = (_async_call(adapter, scenario.mode) for _ in range(scenario.concurrency))
            calls = list(await asyncio.gather(*tasks, return_exceptions=True))
        else:
            calls = [await _async_call(adapter, scenario.mode) for _ in range(scenario.requests)]
        wall = time.perf_counter() - start
        cpu = _delta(cpu0, _cpu())
        result["profile_file"] = prof.stop()
        result["peak_rss_mb"] = peak_rss_mb(was_reset)
        _summarise(result, scenario, calls, wall, cpu)  # type: ignore[arg-type]
    finally:
        await adapter.aclose()


def raise_fd_limit(wanted: int) -> None:
    """Raise the soft open-files limit towards ``wanted`` (S8: one socket per stream)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def measure(config: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement described by ``config`` (see run.py) and return its result."""
    if config.get("cpu") is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {config["cpu"]})
    for path in config.get("adapter_files", ()):
        load_adapter_file(path)
    scenario = Scenario(**config["scenario"])
    raise_fd_limit(scenario.concurrency + 256)
    cls = ADAPTERS[config["client"]]
    root = config["server"] + knob_prefix(scenario, config.get("extra_knobs", ""))
    os.environ.setdefault("DASHSCOPE_API_KEY", "sk-fake")
    os.environ["DASHSCOPE_HTTP_BASE_URL"] = root + "/api/v1"
    target = Target(
        native_base=root + "/api/v1",
        compat_base=root + "/compatible-mode/v1",
        model=config.get("model", "qwen-plus"),
        max_connections=scenario.concurrency,
        sdk_limits=config.get("sdk_limits", False),
    )
    result: dict[str, Any] = {
        "client": cls.name,
        "scenario": scenario.name,
        "mode": scenario.mode,
        "frames": scenario.frames,
        "chars": scenario.chars,
        "concurrency": scenario.concurrency,
        "answer_bytes": scenario.answer_bytes,
    }
    prof = _Profiler(config.get("profile"), config.get("profile_out", "profile"))
    if isinstance(cls, type) and issubclass(cls, SyncAdapter):
        run_sync(cls(target), scenario, result, prof)
    else:
        coro = run_async(lambda: cls(target), scenario, result, prof)  # type: ignore[arg-type,return-value]
        if config.get("loop") == "uvloop":
            importlib.import_module("uvloop").run(coro)
        else:
            asyncio.run(coro)
    result["rss_growth_mb"] = result["peak_rss_mb"] - result["rss_open_mb"]
    return result


def _emit(result: dict[str, Any]) -> None:
    sys.stdout.write("RESULT " + json.dumps(result, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    """Entry point of a worker process."""
    config = json.loads((argv or sys.argv[1:])[0])
    try:
        result = measure(config)
    except Exception as exc:  # reported in the table, never hidden
        import traceback

        traceback.print_exc()
        result = {
            "client": config["client"],
            "scenario": config["scenario"]["name"],
            "ok": False,
            "errors": [f"{type(exc).__name__}: {exc}"],
        }
    _emit(result)
    return 0


def scenario_config(scenario: Scenario) -> dict[str, Any]:
    """The JSON-able form of a scenario, for a worker's config."""
    return asdict(scenario)


def iter_result_lines(text: str) -> Iterator[dict[str, Any]]:
    """The RESULT lines a worker printed."""
    for line in text.splitlines():
        if line.startswith("RESULT "):
            yield json.loads(line[7:])


if __name__ == "__main__":
    sys.exit(main())
