"""Fixtures of the reliability suite."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import pytest

from aiotongyi import RetryPolicy

from . import helpers


class RecordingPolicy(RetryPolicy):
    """The real policy's delays, recorded; the waits themselves are skipped."""

    def __init__(self, asked: list[float]) -> None:
        super().__init__()
        self.asked = asked

    def delay(self, attempt: int, headers: Mapping[str, str] | None, jitter: float) -> float:
        self.asked.append(super().delay(attempt, headers, jitter))
        return 0.0


@pytest.fixture(autouse=True)
def retry_delays() -> Iterator[list[float]]:
    """Backoffs the retry policy asked for, in order; the waits themselves are skipped.

    The policy (Retry-After honoured, else 0.5 s doubling) is still computed
    and recorded, so tests can assert on it, but the matrix does not sleep
    through hundreds of backoffs.  Clients get it through ``retry_policy=``.
    """
    asked: list[float] = []
    helpers.RETRY_POLICY = RecordingPolicy(asked)
    yield asked
    helpers.RETRY_POLICY = None
