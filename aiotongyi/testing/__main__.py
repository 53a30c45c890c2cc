"""``python -m aiotongyi.testing serve``: run the DashScope emulator in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from ._emulator import DashScopeEmulator
from ._script import load_script

PROG = "python -m aiotongyi.testing"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and serve until Ctrl-C or SIGTERM; return the exit status.

    Every failure to start (bad port, busy address, unreadable script) is one
    line on stderr and exit status 1, not a traceback.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Local emulator of DashScope's native chat API, for tests and demos.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the emulator until interrupted")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    # A string, checked below: argparse's own error is a usage block, not one line.
    serve.add_argument("--port", default="0", help="TCP port (default 0: a free one)")
    serve.add_argument(
        "--script",
        metavar="FILE",
        help="scripted replies to answer with first: a JSON array or JSON lines of Reply fields",
    )
    args = parser.parse_args(argv)

    try:
        port = int(args.port)
        if not 0 <= port <= 65535:
            raise ValueError
    except ValueError:
        return _fail(f"--port must be an integer from 0 to 65535, not {args.port!r}")
    replies = []
    if args.script is not None:
        try:
            replies = load_script(args.script)
        except (OSError, ValueError) as exc:
            return _fail(f"cannot load --script {args.script}: {exc}")

    emulator = DashScopeEmulator(host=args.host, port=port)
    try:
        emulator.start()
    except (OSError, OverflowError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return _fail(f"cannot listen on {args.host}:{port}: {reason}")
    done = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        emulator.enqueue(*replies)
        scripted = f", {len(replies)} scripted replies" if replies else ""
        print(
            f"aiotongyi emulator listening on {emulator.base_url} (api key: any{scripted})",
            flush=True,
        )
        # A timed wait, so the main thread keeps running Python signal handlers.
        while not done.wait(0.5):
            pass
    finally:
        emulator.stop()
    return 0


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
