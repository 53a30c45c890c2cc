"""What hooks and the rate limiter know of one call."""

from __future__ import annotations

import contextvars
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._models import ModelOutput

__all__ = ["CallInfo"]


class CallInfo:
    """One call, as hooks see it (the same object from ``on_request`` to ``on_end``).

    :ivar operation: ``"chat"`` (``"embeddings"`` for embedding calls).
    :ivar stream: whether the answer is streamed (chat calls always are).
    :ivar model: the model the request names.
    :ivar base_url: the endpoint's ``.../api/v1`` base URL.
    :ivar context: the :mod:`contextvars` context of the code that made the
        call (captured in the calling thread, also for the sync API): run
        code in it with ``call.context.run(func)``.
    :ivar attempt: the current attempt, ``0`` for the first.
    :ivar started: :func:`time.perf_counter` when the first request was about
        to be sent (before any rate-limit wait).
    :ivar request_id: DashScope's request id of the latest response.
    :ivar output: on ``on_end``: the last :class:`~aiotongyi.ModelOutput`, or ``None``.
    :ivar error: on ``on_end``: the exception the call ended with, or ``None``.
    :ivar closed_early: on ``on_end``: the caller stopped before the end (not an error).
    :ivar cancelled: on ``on_end``: the task consuming the stream was cancelled.
    :ivar data: a dict for hooks to keep per-call state in (key it by your hook).
    """

    def __init__(
        self, operation: str, model: str, body: bytes, base_url: str, stream: bool = True
    ) -> None:
        self.operation = operation
        self.stream = stream
        self.model = model
        self.base_url = base_url
        self.context = contextvars.copy_context()
        self.attempt = 0
        self.started = 0.0
        self.request_id: str | None = None
        self.output: ModelOutput | None = None
        self.error: BaseException | None = None
        self.closed_early = False
        self.cancelled = False
        self.data: dict[object, Any] = {}
        self._body = body
        self._decoded: dict[str, Any] | None = None

    @property
    def body(self) -> Mapping[str, Any]:
        """The JSON body sent (``model``, ``input``, ``parameters``), decoded on first use."""
        if self._decoded is None:
            decoded = json.loads(self._body)
            self._decoded = decoded if isinstance(decoded, dict) else {}
        return self._decoded

    @property
    def parameters(self) -> Mapping[str, Any]:
        """The request's ``parameters`` object."""
        params = self.body.get("parameters")
        return params if isinstance(params, Mapping) else {}

    @property
    def messages(self) -> Sequence[Mapping[str, Any]]:
        """The request's messages."""
        body_input = self.body.get("input")
        messages = body_input.get("messages") if isinstance(body_input, Mapping) else None
        return messages if isinstance(messages, list) else []

    @property
    def body_size(self) -> int:
        """The size of the encoded request body in bytes."""
        return len(self._body)

    def __repr__(self) -> str:
        return (
            f"CallInfo(operation={self.operation!r}, model={self.model!r}, "
            f"attempt={self.attempt}, request_id={self.request_id!r})"
        )
