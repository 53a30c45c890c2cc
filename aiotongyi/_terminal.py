"""How the CLI and the interactive chat write answers to a terminal."""

from __future__ import annotations

from typing import Any, TextIO

__all__ = ["DIM", "RESET", "Printer", "describe", "usage_line"]

DIM = "\x1b[2m"
RESET = "\x1b[0m"


class Printer:
    """Writes a streamed answer: reasoning dimmed and set apart, then the answer.

    :param answer: where the answer goes.
    :param reasoning: where the reasoning goes (stderr for one-shot use, so
        that a pipe gets only the answer).
    """

    def __init__(self, answer: TextIO, reasoning: TextIO) -> None:
        self.answer = answer
        self.reasoning = reasoning
        self.dim = reasoning.isatty()
        self.thinking_open = False  # reasoning printed, not yet ended by a newline
        self.line_open = False  # answer text printed without a final newline

    def thinking(self, text: str) -> None:
        if not text:
            return
        self.reasoning.write(f"{DIM}{text}{RESET}" if self.dim else text)
        self.reasoning.flush()
        self.thinking_open = True

    def text(self, text: str) -> None:
        if not text:
            return
        self._close_thinking()
        self.answer.write(text)
        self.answer.flush()
        self.line_open = True

    def _close_thinking(self) -> None:
        if self.thinking_open:
            self.reasoning.write("\n")
            self.reasoning.flush()
            self.thinking_open = False

    def end(self) -> None:
        """Finish the lines begun (the answer's ends with a newline, as text output should)."""
        self._close_thinking()
        if self.line_open or self.answer is not self.reasoning:
            self.answer.write("\n")
            self.answer.flush()
        self.line_open = False

    def interrupted(self) -> None:
        """End open lines without adding a blank one."""
        self._close_thinking()
        if self.line_open:
            self.answer.write("\n")
            self.answer.flush()
            self.line_open = False


def describe(exc: BaseException) -> str:
    """``error: RateLimitError: 429 ...`` (the CLI's one-line form of a failure)."""
    return f"error: {type(exc).__name__}: {exc}"


def usage_line(output: Any) -> str:
    usage = output.usage.to_dict() if output.usage else {}
    return f"[finish_reason={output.finish_reason} usage={usage} request_id={output.request_id}]"
