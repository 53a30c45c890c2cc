"""``aiotongyi chat`` on a terminal with no prompt: a multi-turn chat.

The conversation is kept as messages (each answer through
``ModelOutput.to_message()``, tool calls included) and sent whole each turn.
Input goes through ``input()``, so the standard library's ``readline`` gives
line editing and history where it exists.  Ctrl-C during an answer cancels
it (closing its stream; the turn is left out of the history), Ctrl-C at the
prompt clears the line, Ctrl-D exits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable
from typing import Any, TextIO

from ._client import TongyiLLMClient
from ._exceptions import TongyiError
from ._models import ModelOutput
from ._terminal import DIM, RESET, Printer, describe, usage_line

__all__ = ["Repl"]

PROMPT = "> "
HELP = """\
/reset          forget the conversation (the system prompt stays)
/system TEXT    set the system prompt (/system alone removes it)
/model NAME     switch model (/model alone shows the current one)
/save FILE      write the conversation to FILE as JSON
/exit           leave (or Ctrl-D); Ctrl-C cancels an answer"""


def enable_line_editing() -> None:
    """Importing ``readline`` makes ``input()`` edit lines and keep history (where it exists)."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401


class Repl:
    """The interactive chat loop.

    :param client: where turns are sent (its sync API).
    :param args: the parsed ``aiotongyi chat`` options.
    :param read: reads one line given the prompt (``input`` by default);
        raises ``EOFError`` at the end of input.
    """

    def __init__(
        self,
        client: TongyiLLMClient,
        args: argparse.Namespace,
        *,
        read: Callable[[str], str] = input,
        out: TextIO | None = None,
        err: TextIO | None = None,
    ) -> None:
        self.client = client
        self.model: str = args.model or client.default_model
        self.system: str | None = args.system
        self.history: list[dict[str, object]] = []
        self.params: dict[str, Any] = {
            "temperature": args.temperature,
            "max_tokens": args.max_tokens,
            "enable_thinking": args.thinking,
        }
        self.verbose: bool = args.verbose
        self.read = read
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def run(self) -> int:
        """Read and answer until ``/exit`` or end of input; the exit status."""
        if self.read is input:
            enable_line_editing()
        self.info(f"chatting with {self.model}; /help lists the commands, Ctrl-D leaves")
        while True:
            try:
                line = self.read(PROMPT)
            except EOFError:
                self.out.write("\n")
                return 0
            except KeyboardInterrupt:  # at the prompt: drop the line, as shells do
                self.out.write("\n")
                continue
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if not self.command(line):
                    return 0
                continue
            self.turn(line)

    def info(self, text: str) -> None:
        self.err.write(f"{DIM}{text}{RESET}\n" if self.err.isatty() else f"{text}\n")
        self.err.flush()

    def messages(self) -> list[dict[str, object]]:
        """The conversation as sent next: the system prompt, then every turn."""
        head: list[dict[str, object]] = (
            [{"role": "system", "content": self.system}] if self.system else []
        )
        return head + self.history

    def command(self, line: str) -> bool:
        """Run a ``/command``; ``False`` means leave."""
        name, _, rest = line.partition(" ")
        rest = rest.strip()
        if name in ("/exit", "/quit"):
            return False
        if name == "/help":
            self.info(HELP)
        elif name == "/reset":
            self.history.clear()
            self.info("conversation cleared")
        elif name == "/system":
            self.system = rest or None
            self.info(f"system prompt set: {rest}" if rest else "system prompt removed")
        elif name == "/model":
            if rest:
                self.model = rest
            self.info(f"model: {self.model}")
        elif name == "/save":
            self.save(rest)
        else:
            self.info(f"unknown command {name}; /help lists the commands")
        return True

    def save(self, path: str) -> None:
        if not path:
            self.info("usage: /save FILE")
            return
        try:
            with open(path, "w", encoding="utf-8") as file:
                json.dump(self.messages(), file, ensure_ascii=False, indent=2)
                file.write("\n")
        except OSError as exc:
            self.info(f"cannot save to {path}: {exc.strerror or exc}")
            return
        self.info(f"saved {len(self.messages())} messages to {path}")

    def turn(self, text: str) -> ModelOutput | None:
        """Stream one answer; keep the turn in the history only when it completed."""
        user: dict[str, object] = {"role": "user", "content": text}
        printer = Printer(self.out, self.out)
        last: ModelOutput | None = None
        try:
            stream = self.client.sync_generate_stream(
                [*self.messages(), user], model=self.model, **self.params
            )
            with contextlib.closing(stream):
                for output in stream:
                    printer.thinking(output.thinking_delta)
                    printer.text(output.delta)
                    last = output
        except KeyboardInterrupt:
            printer.interrupted()
            self.info("[answer cancelled]")
            return None
        except (TongyiError, ValueError) as exc:
            printer.interrupted()
            self.err.write(f"aiotongyi: {describe(exc)}\n")
            self.err.flush()
            return None
        printer.end()
        if last is None:
            return None
        for call in last.tool_calls:
            self.info(f"[tool call {call.name}({call.arguments})]")
        self.history += [user, last.to_message()]
        if self.verbose:
            self.info(usage_line(last))
        return last
