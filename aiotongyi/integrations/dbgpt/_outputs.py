"""aiotongyi outputs and errors -> DB-GPT ``ModelOutput``s (one converter for both paths)."""

from __future__ import annotations

import logging

from dbgpt.core import ModelOutput

import aiotongyi

try:
    from dbgpt.core.interface.media import MediaContent
except ImportError:  # DB-GPT 0.5/0.6: no place for reasoning in an output
    MediaContent = None

__all__ = ["OutputConverter", "error_output"]

logger = logging.getLogger("aiotongyi.integrations.dbgpt")

_CAN_CARRY_THINKING = MediaContent is not None and hasattr(ModelOutput, "build")


def error_output(exc: BaseException) -> ModelOutput:
    """The one output that reports a failed call (the key never reaches it)."""
    reported = aiotongyi.ModelOutput.from_error(exc)
    logger.warning("Tongyi generation failed: %s", reported.text)
    return ModelOutput(text=reported.text, error_code=reported.error_code)


def _success_output(
    text: str, thinking: str, finish_reason: str | None, usage: dict[str, int] | None
) -> ModelOutput:
    if thinking:
        # ModelOutput.build(text, thinking) would leave out the text part while
        # only reasoning has arrived, and `.text` would then raise: keep an
        # (empty) text part so every caller can read it.
        return ModelOutput(
            error_code=0,
            content=[MediaContent.build_thinking(thinking), MediaContent.build_text(text)],
            finish_reason=finish_reason,
            usage=usage,
        )
    return ModelOutput(text=text, error_code=0, finish_reason=finish_reason, usage=usage)


class OutputConverter:
    """The DB-GPT outputs of one stream, for its sync and async loops alike.

    Frames that add nothing are skipped; each output carries the latest usage
    (a dict per output); reasoning goes into content parts on DB-GPT 0.7+ only.
    """

    __slots__ = ("_include_thinking", "_usage")

    def __init__(self, include_thinking: bool) -> None:
        self._include_thinking = include_thinking and _CAN_CARRY_THINKING
        self._usage: dict[str, int] | None = None

    def convert(self, output: aiotongyi.ModelOutput) -> list[ModelOutput]:
        """Nothing, or the DB-GPT output for ``output``."""
        if output.usage is not None:
            self._usage = output.usage.to_dict()
        adds_thinking = self._include_thinking and bool(output.thinking_delta)
        if not output.delta and not adds_thinking and output.finish_reason is None:
            return []
        thinking = output.thinking if self._include_thinking else ""
        usage = dict(self._usage) if self._usage is not None else None
        return [_success_output(output.text, thinking, output.finish_reason, usage)]
