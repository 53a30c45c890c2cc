"""``python -m aiotongyi.testing serve``: run the DashScope emulator in the foreground."""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence
from types import FrameType

from ._emulator import DashScopeEmulator


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and serve until Ctrl-C or SIGTERM; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m aiotongyi.testing",
        description="Local emulator of DashScope's native chat API, for tests and demos.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the emulator until interrupted")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=0, help="TCP port (default 0: a free one)")
    args = parser.parse_args(argv)

    done = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with DashScopeEmulator(host=args.host, port=args.port) as emulator:
        print(f"aiotongyi emulator listening on {emulator.base_url} (api key: any)", flush=True)
        # A timed wait, so the main thread keeps running Python signal handlers.
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
