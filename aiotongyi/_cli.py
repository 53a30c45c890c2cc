"""``aiotongyi chat``: one streamed answer, or an interactive chat on a terminal.

Exit status: 0 on success, 1 when the call failed, 2 for a usage error,
130 after Ctrl-C and 141 (128 + SIGPIPE, what a shell reports for a tool a
closed pipe stopped) when stdout was closed early, e.g. by ``| head``.
Every error is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from ._cli_embed import add_commands
from ._client import TongyiLLMClient
from ._config import resolve_base_url
from ._exceptions import TongyiError
from ._terminal import Printer, describe, usage_line
from ._version import __version__

__all__ = ["EMULATOR_NOTICE", "main"]

#: The one wording of the "no key: using the emulator" notice (the examples use it too).
EMULATOR_NOTICE = "{reason}; using the bundled emulator at {url} (not a real model)"
NO_KEY = "DASHSCOPE_API_KEY is not set"
#: Sent when the user points --base-url at a server without a key (the emulator takes any).
PLACEHOLDER_KEY = "sk-placeholder"

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class UsageError(Exception):
    """A one-line complaint about the command line (exit status 2)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aiotongyi", description="Stream chat answers from Alibaba DashScope (Qwen)."
    )
    parser.add_argument("--version", action="version", version=f"aiotongyi {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    chat = commands.add_parser(
        "chat",
        help="stream one answer to stdout, or chat interactively on a terminal",
        description="With a prompt (or one piped on stdin): stream one answer and exit. "
        "With no prompt on a terminal: an interactive chat (/help lists its commands).",
    )
    chat.add_argument("prompt", nargs="?", help="the user message (default: read stdin)")
    chat.add_argument("--model", help="DashScope model id (default: qwen-turbo)")
    chat.add_argument("--system", help="a system prompt")
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--max-tokens", type=int)
    chat.add_argument(
        "--thinking",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ask a hybrid model to reason first (shown dimmed, before the answer)",
    )
    chat.add_argument("--region", help="cn-beijing, ap-southeast-1, us-east-1 or cn-hongkong")
    chat.add_argument("--base-url", help="an explicit .../api/v1 endpoint")
    chat.add_argument(
        "--emulator", action="store_true", help="use the bundled emulator, even with a key"
    )
    chat.add_argument(
        "-v", "--verbose", action="store_true", help="print usage and request id after answers"
    )
    add_commands(commands)  # embed, rerank
    return parser


def _forgiving_streams() -> None:
    """Replace characters the terminal's encoding cannot show instead of failing."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            stream.reconfigure(errors="replace")


def error(message: str, stream: TextIO | None = None) -> None:
    """One line on stderr, ``aiotongyi: ...``."""
    print(f"aiotongyi: {message}", file=stream or sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``aiotongyi`` console script and ``python -m aiotongyi``."""
    _forgiving_streams()
    args = _parser().parse_args(argv)
    if hasattr(args, "handler"):  # embed, rerank
        return int(args.handler(args))
    try:
        return _run(args)
    except KeyboardInterrupt:
        if sys.stderr.isatty():  # the shell prompt goes on a line of its own
            print(file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does not
        # complain too (the recipe in the docs of the signal module).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except UsageError as exc:
        error(str(exc))
        return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    interactive = args.prompt is None and sys.stdin.isatty()
    prompt = None if interactive else _read_prompt(args.prompt)
    api_key, base_url, reason = _endpoint(args)
    emulator = None
    if reason is not None:
        from .testing import DashScopeEmulator

        emulator = DashScopeEmulator().start()
        api_key, base_url = emulator.api_key, emulator.base_url
        error(EMULATOR_NOTICE.format(reason=reason, url=base_url))
    try:
        try:
            client = TongyiLLMClient(
                model=args.model, api_key=api_key, api_region=args.region, base_url=base_url
            )
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if prompt is None:
            from ._repl import Repl

            with client:
                return Repl(client, args).run()
        return asyncio.run(_chat(client, args, prompt))
    finally:
        if emulator is not None:
            emulator.stop()


def _read_prompt(given: str | None) -> str:
    prompt = sys.stdin.read() if given is None else given
    prompt = prompt.rstrip("\r\n") if given is None else prompt
    if not prompt.strip():
        raise UsageError("the prompt is empty")
    return prompt


def _endpoint(args: argparse.Namespace) -> tuple[str | None, str | None, str | None]:
    """``(api_key, base_url, emulator_reason)``: explicit flags beat the emulator fallback."""
    if args.emulator:
        if args.base_url or args.region:
            raise UsageError("--emulator cannot be combined with --base-url or --region")
        return None, None, "--emulator given"
    try:
        resolve_base_url(args.base_url, args.region)  # an unknown region is refused here
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if os.environ.get("DASHSCOPE_API_KEY"):
        return None, args.base_url, None
    if args.base_url:
        return PLACEHOLDER_KEY, args.base_url, None
    if args.region:
        raise UsageError(
            f"--region {args.region} needs DASHSCOPE_API_KEY "
            "(without a key: --base-url of a server you run, or the bundled emulator)"
        )
    return None, None, NO_KEY


async def _chat(client: TongyiLLMClient, args: argparse.Namespace, prompt: str) -> int:
    messages = [{"role": "user", "content": prompt}]
    if args.system:
        messages.insert(0, {"role": "system", "content": args.system})
    printer = Printer(sys.stdout, sys.stderr)
    last = None
    async with client:
        try:
            async with client.generate_stream(
                messages,
                temperature=args.temperature,
                max_tokens=args.max_tokens,
                enable_thinking=args.thinking,
            ) as stream:
                async for output in stream:
                    printer.thinking(output.thinking_delta)
                    printer.text(output.delta)
                    last = output
        except (TongyiError, ValueError) as exc:
            printer.interrupted()
            error(describe(exc))
            return EXIT_FAILED
        except BrokenPipeError:
            raise
        except BaseException:  # Ctrl-C: end the open line before the shell's prompt
            printer.interrupted()
            raise
    printer.end()
    if args.verbose and last is not None:
        print(usage_line(last), file=sys.stderr)
    return 0
