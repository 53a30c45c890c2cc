"""Run the benchmark: start the fake server, measure every client, write the report.

    python -m benchmarks --quick                # CI smoke: every scenario, tiny sizes, < 2 min
    python -m benchmarks                        # full run (about 15 min with every peer)
    python -m benchmarks --scenarios S1,S2 --clients aiotongyi --repeat 3
    python -m benchmarks --profile cprofile --scenarios S1 --clients aiotongyi
    python -m benchmarks --list                 # adapters, and why any is skipped
    python -m benchmarks --render out/bench-....json   # Markdown again from a JSON file

The fake server runs in its own process, pinned to the last CPU; each
measurement runs in a fresh worker process pinned to CPU 0. Clients take turns
round by round (order rotated each round) so drift on a shared machine hits
them alike. ``raw-aiohttp`` always runs: every ratio is against it, same run.
Results go to ``--out`` as JSON (every sample), Markdown and, when matplotlib
is installed, a PNG plot. The exit status is 1 only when a measurement of the
baseline or of aiotongyi failed (a peer's failure is shown in its table); the
targets of issue 6 are reported, never enforced.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import signal
import subprocess
import sys
import time
import urllib.request
from importlib import metadata
from pathlib import Path
from typing import Any

from . import _report
from ._clients import ADAPTERS, BASELINE, DEFAULT_CLIENTS, QUICK_CLIENTS, load_adapter_file
from ._scenarios import FULL, QUICK, Scenario, override
from ._worker import iter_result_lines

ROOT = Path(__file__).resolve().parent.parent
OWN_CLIENTS = (BASELINE, "raw-aiohttp-any", "aiotongyi", "aiotongyi-sync")
PACKAGES = (
    "aiotongyi",
    "aiohttp",
    "anyio",
    "dashscope",
    "openai",
    "httpx",
    "requests",
    "pydantic",
    "uvloop",
    "psutil",
    "matplotlib",
    "pyinstrument",
)


def _env() -> dict[str, str]:
    # workers and server import ``benchmarks`` from this checkout
    env = dict(os.environ)
    # (after any PYTHONPATH of the caller's, so a snapshot of aiotongyi can be measured)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(ROOT)]))
    return env


class Server:
    """The fake DashScope in a child process, stopped by its PID."""

    def __init__(self, cpu: int | None) -> None:
        command = [sys.executable, "-m", "benchmarks._server", "0"]
        if cpu is not None:
            command += ["--cpu", str(cpu)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, text=True, env=_env(), cwd=ROOT
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"fake server did not start: {line!r}")
        self.url = line.split()[1]

    def stats(self, reset: bool = False) -> dict[str, Any]:
        """The server's counters (``reset``: zero them first)."""
        if reset:
            request = urllib.request.Request(self.url + "/_stats/reset", data=b"", method="POST")
            with urllib.request.urlopen(request, timeout=10):
                pass
        with urllib.request.urlopen(self.url + "/_stats", timeout=10) as response:
            stats: dict[str, Any] = json.loads(response.read())
        return stats

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def run_worker(
    args: argparse.Namespace, server: Server, scenario: Scenario, client: str, **extra: Any
) -> dict[str, Any]:
    """One measurement in a fresh process, with the server's view of it."""
    config = {
        "client": client,
        "scenario": dataclasses.asdict(scenario),
        "server": server.url,
        "cpu": args.client_cpu,
        "loop": args.loop,
        "sdk_limits": args.sdk_limits,
        "adapter_files": args.adapter_file,
        "model": args.model,
        "extra_knobs": args.extra_knobs,
        **extra,
    }
    before = server.stats(reset=True)
    command = [sys.executable, "-m", "benchmarks._worker", json.dumps(config)]
    failed: dict[str, Any] = {"client": client, "scenario": scenario.name, "ok": False}
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=args.worker_timeout,
            env=_env(),
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired:
        return failed | {"errors": [f"worker timed out after {args.worker_timeout} s"]}
    results = list(iter_result_lines(done.stdout))
    result = results[-1] if results else None
    if result is None:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return failed | {
            "errors": [f"worker exit {done.returncode}: {last}"],
            "stderr": done.stderr[-3000:],
        }
    after = server.stats()
    result["srv_cpu_s"] = after["cpu_s"] - before["cpu_s"]
    result["srv_requests"] = after["requests"]
    result["srv_connections"] = after["connections"]  # distinct TCP connections, warm-up included
    if not result.get("ok") and done.stderr.strip():
        result["stderr"] = done.stderr[-3000:]
    return result


def _read(path: str, default: str = "") -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return default


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str:
    """Output of a read-only git command on this checkout ("" if git is unavailable)."""
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def machine_facts() -> dict[str, Any]:
    """What the report says about the machine and the software."""
    cpu = next(
        (
            x.split(":", 1)[1].strip()
            for x in _read("/proc/cpuinfo").splitlines()
            if "model name" in x
        ),
        platform.processor() or "?",
    )
    mem = next(
        (x.split()[1] for x in _read("/proc/meminfo").splitlines() if x.startswith("MemTotal")), "0"
    )
    versions = {name: _version(name) for name in PACKAGES}
    commit = _git("log", "-1", "--format=%h %s")
    if _git("status", "--porcelain", "--", "aiotongyi"):
        commit += " (+ uncommitted changes in aiotongyi/)"
    return {
        "cpu_model": cpu,
        "nproc": os.cpu_count(),
        "ram_gib": round(int(mem) / 1048576, 1),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "versions": versions,
        "commit": commit or "unknown (not a git checkout)",
    }


def _plan(args: argparse.Namespace) -> tuple[dict[str, Scenario], list[str]]:
    table = QUICK if args.quick else FULL
    names = [s for s in args.scenarios.split(",") if s] if args.scenarios else list(table)
    unknown = [s for s in names if s not in table]
    if unknown:
        sys.exit(f"unknown scenario {', '.join(unknown)}; choose from {', '.join(table)}")
    assignments: dict[str, dict[str, str]] = {}
    for item in args.set:
        target, _, value = item.partition("=")
        name, _, key = target.partition(".")
        assignments.setdefault(name, {})[key] = value
    scenarios = {}
    for name in names:
        scenario = override(table[name], assignments.get(name, {}))
        if args.repeat is not None:
            scenario = dataclasses.replace(scenario, repeat=args.repeat)
        scenarios[name] = scenario
    default = QUICK_CLIENTS if args.quick else DEFAULT_CLIENTS
    clients = [c for c in args.clients.split(",") if c] if args.clients else list(default)
    unknown = [c for c in clients if c not in ADAPTERS]
    if unknown:
        sys.exit(f"unknown client {', '.join(unknown)}; see --list")
    if BASELINE not in clients:
        clients.insert(0, BASELINE)  # every ratio needs it
    return scenarios, clients


def _list() -> int:
    for name, cls in ADAPTERS.items():
        why = cls.unavailable()
        kind = "async" if cls.is_async else "sync "
        state = "ok" if why is None else f"SKIP: {why}"
        print(
            f"{name:16} {kind} {','.join(sorted(cls.modes)):32} {state}\n{'':16} {cls.description}"
        )
    return 0


def _profile(
    args: argparse.Namespace, server: Server, scenarios: dict[str, Scenario], clients: list[str]
) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for scenario in scenarios.values():
        for client in clients:
            cls = ADAPTERS[client]
            why = cls.unavailable() or scenario.skip_reason(cls)
            if why or (client == BASELINE and len(clients) > 1):
                continue
            base = out / f"profile-{scenario.name}-{client}-{args.profile}"
            result = run_worker(
                args, server, scenario, client, profile=args.profile, profile_out=str(base)
            )
            print(
                f"{scenario.name} {client}: ok={result.get('ok')} -> {result.get('profile_file')}"
            )
            if not result.get("ok"):
                print(result.get("errors"), result.get("stderr", "")[-1500:], file=sys.stderr)
    return 0


def _measure(
    args: argparse.Namespace, server: Server, scenarios: dict[str, Scenario], clients: list[str]
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    available = {c: ADAPTERS[c].unavailable() for c in clients}
    for scenario in scenarios.values():
        active = []
        for client in clients:
            why = available[client] or scenario.skip_reason(ADAPTERS[client])
            if why:
                results.append({"client": client, "scenario": scenario.name, "skipped": why})
            else:
                active.append(client)
        for round_ in range(scenario.repeat):
            k = round_ % max(1, len(active))
            for client in active[k:] + active[:k]:
                if time.monotonic() - started > args.budget_s:
                    print(f"# budget of {args.budget_s} s reached: stopping", file=sys.stderr)
                    args.budget_hit = True
                    return results
                result = run_worker(args, server, scenario, client) | {"round": round_}
                results.append(result)
                if result.get("ok"):
                    brief = f"wall {result['wall_s']:.3f} s  cpu {result['cpu_s']:.3f} s"
                else:
                    brief = f"FAILED {result.get('errors')}\n{result.get('stderr', '')[-1200:]}"
                print(f"# {scenario.name} r{round_} {client:16} {brief}", file=sys.stderr)
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="tiny sizes, one repeat (CI smoke, < 2 min)")
    add("--scenarios", help=f"comma-separated, default all: {','.join(FULL)}")
    add("--clients", help=f"comma-separated, default: {','.join(DEFAULT_CLIENTS)}")
    add("--repeat", type=int, help="worker processes per client (default per scenario)")
    add("--set", action="append", default=[], metavar="S1.frames=500", help="override a size")
    add("--loop", choices=("asyncio", "uvloop"), default="asyncio", help="async clients' loop")
    add("--client-cpu", type=int, default=0, help="CPU the workers are pinned to")
    add("--server-cpu", type=int, help="CPU the server is pinned to (default: the last)")
    add("--no-pin", action="store_true", help="no CPU pinning")
    add("--model", default="qwen-plus")
    add("--extra-knobs", default="", help="server knobs for every request, e.g. chunk=7,13")
    add("--sdk-limits", action="store_true", help="keep each library's own pool limits")
    add("--adapter-file", action="append", default=[], help="a Python file registering adapters")
    add("--out", default=str(ROOT / "benchmarks" / "out"), help="directory for JSON, MD, PNG")
    add("--no-plot", action="store_true", help="skip the PNG")
    add("--profile", choices=("cprofile", "pyinstrument"), help="profile once instead of timing")
    add("--list", action="store_true", help="list adapters and exit")
    add("--render", nargs="+", metavar="JSON", help="print the Markdown of saved runs")
    add("--budget-s", type=float, help="stop starting workers after this long (quick: 110 s)")
    add("--worker-timeout", type=float, default=300)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks``."""
    args = parse_args(argv)
    for path in args.adapter_file:
        load_adapter_file(path)
    if args.list:
        return _list()
    if args.render:
        for path in args.render:
            print(_report.render(json.loads(Path(path).read_text())))
        return 0
    scenarios, clients = _plan(args)
    if args.budget_s is None:
        args.budget_s = 110.0 if args.quick else 4 * 3600.0
    ncpu = os.cpu_count() or 1
    pinned = not args.no_pin and ncpu >= 2 and hasattr(os, "sched_setaffinity")
    if not pinned:
        args.client_cpu = None
    server_cpu = (ncpu - 1 if args.server_cpu is None else args.server_cpu) if pinned else None
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "mode": "quick" if args.quick else "full",
        "argv": ["python -m benchmarks", *(argv if argv is not None else sys.argv[1:])],
        "loop": args.loop,
        "client_cpu": args.client_cpu,
        "server_cpu": server_cpu,
        "scenarios": {name: dataclasses.asdict(s) for name, s in scenarios.items()},
        "clients": clients,
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        **machine_facts(),
    }
    began = time.monotonic()
    server = Server(server_cpu)
    try:
        if args.profile:
            return _profile(args, server, scenarios, clients)
        results = _measure(args, server, scenarios, clients)
    finally:
        server.stop()
    meta["elapsed_s"] = round(time.monotonic() - began, 1)
    if getattr(args, "budget_hit", False):
        meta["elapsed_s"] = f"{meta['elapsed_s']} (budget of {args.budget_s:g} s reached: partial)"
    data = {"meta": meta, "results": results}
    markdown = _report.render(data)
    print(markdown)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{meta['mode']}"
    stem.with_suffix(".json").write_text(json.dumps(data, indent=1, ensure_ascii=False))
    stem.with_suffix(".md").write_text(markdown)
    print(f"# results: {stem}.json, {stem}.md", file=sys.stderr)
    if not args.no_plot:
        from .plot import plot

        if plot(data, str(stem) + ".png"):
            print(f"# plot: {stem}.png", file=sys.stderr)
    # a peer's failure is a finding for the table, not a broken run
    failed = [
        r
        for r in results
        if not r.get("ok") and not r.get("skipped") and r["client"] in OWN_CLIENTS
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
