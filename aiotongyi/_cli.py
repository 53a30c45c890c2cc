"""``aiotongyi chat "prompt"``: stream a reply to the terminal."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import Any

from ._cli_embed import add_commands
from ._client import TongyiLLMClient
from ._exceptions import TongyiError
from ._version import __version__

__all__ = ["main"]

_DIM = "\x1b[2m"
_RESET = "\x1b[0m"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiotongyi", description="Stream chat answers from Alibaba DashScope (Qwen)."
    )
    parser.add_argument("--version", action="version", version=f"aiotongyi {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    chat = commands.add_parser("chat", help="stream one answer to stdout")
    chat.add_argument("prompt", nargs="?", help="the user message (default: read stdin)")
    chat.add_argument("--model", help="DashScope model id (default: qwen-turbo)")
    chat.add_argument("--system", help="a system prompt")
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--max-tokens", type=int)
    chat.add_argument(
        "--thinking",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ask a hybrid model to reason first (shown dimmed on stderr)",
    )
    chat.add_argument("--region", help="cn-beijing, ap-southeast-1, us-east-1 or cn-hongkong")
    chat.add_argument("--base-url", help="an explicit .../api/v1 endpoint")
    chat.add_argument(
        "--emulator", action="store_true", help="use the bundled emulator, even with a key"
    )
    chat.add_argument(
        "-v", "--verbose", action="store_true", help="print usage and request id at the end"
    )
    add_commands(commands)  # embed, rerank
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aiotongyi`` console script and ``python -m aiotongyi``."""
    args = _parser().parse_args(argv)
    if hasattr(args, "handler"):  # embed, rerank
        return int(args.handler(args))
    prompt = args.prompt
    if prompt is None:
        if sys.stdin.isatty():
            print("aiotongyi: give a prompt, or pipe one on stdin", file=sys.stderr)
            return 2
        prompt = sys.stdin.read()
    emulator = None
    if args.emulator or not os.environ.get("DASHSCOPE_API_KEY"):
        from .testing import DashScopeEmulator

        emulator = DashScopeEmulator().start()
        reason = "--emulator given" if args.emulator else "DASHSCOPE_API_KEY is not set"
        print(
            f"aiotongyi: {reason}; using the bundled emulator at {emulator.base_url} "
            "(canned replies, not a real model)",
            file=sys.stderr,
        )
    try:
        return asyncio.run(_chat(args, prompt, emulator))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    finally:
        if emulator is not None:
            emulator.stop()


async def _chat(args: argparse.Namespace, prompt: str, emulator: Any) -> int:
    try:
        client = TongyiLLMClient(
            model=args.model,
            api_key=emulator.api_key if emulator else None,
            api_region=args.region,
            base_url=emulator.base_url if emulator else args.base_url,
        )
    except ValueError as exc:
        print(f"aiotongyi: {exc}", file=sys.stderr)
        return 2
    messages = [{"role": "user", "content": prompt}]
    if args.system:
        messages.insert(0, {"role": "system", "content": args.system})
    dim = sys.stderr.isatty()
    last = None
    try:
        async with (
            client,
            client.generate_stream(
                messages,
                temperature=args.temperature,
                max_tokens=args.max_tokens,
                enable_thinking=args.thinking,
            ) as stream,
        ):
            async for output in stream:
                if output.thinking_delta:
                    text = output.thinking_delta
                    sys.stderr.write(f"{_DIM}{text}{_RESET}" if dim else text)
                    sys.stderr.flush()
                if output.delta:
                    sys.stdout.write(output.delta)
                    sys.stdout.flush()
                last = output
    except (TongyiError, ValueError) as exc:
        print(f"\naiotongyi: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write("\n")
    if args.verbose and last is not None:
        usage = last.usage.to_dict() if last.usage else {}
        print(
            f"[finish_reason={last.finish_reason} usage={usage} request_id={last.request_id}]",
            file=sys.stderr,
        )
    return 0
