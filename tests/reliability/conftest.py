"""Fixtures of the reliability suite."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

import aiotongyi._stream
from aiotongyi._retry import retry_delay


@pytest.fixture(autouse=True)
def retry_delays(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoffs the retry policy asked for, in order; the waits themselves are skipped.

    The policy (Retry-After honoured, else 0.5 s doubling) is still computed
    and recorded, so tests can assert on it, but the matrix does not sleep
    through hundreds of backoffs.
    """
    asked: list[float] = []

    def recording(attempt: int, headers: Mapping[str, str] | None, jitter: float) -> float:
        asked.append(retry_delay(attempt, headers, jitter))
        return 0.0

    monkeypatch.setattr(aiotongyi._stream, "retry_delay", recording)
    return asked
