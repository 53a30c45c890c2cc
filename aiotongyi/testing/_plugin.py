"""pytest plugin: the ``dashscope_emulator`` fixture.

Registered through the ``pytest11`` entry point ``aiotongyi``, so installing
aiotongyi is enough; without the entry point, use ``-p aiotongyi.testing._plugin``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._emulator import DashScopeEmulator

__all__ = ["dashscope_emulator"]


@pytest.fixture(scope="session")
def _dashscope_emulator_server() -> Iterator[DashScopeEmulator]:
    """One emulator for the whole session; starting a thread per test is wasted time."""
    with DashScopeEmulator() as emulator:
        yield emulator


@pytest.fixture
def dashscope_emulator(
    _dashscope_emulator_server: DashScopeEmulator,
) -> Iterator[DashScopeEmulator]:
    """A running :class:`~aiotongyi.testing.DashScopeEmulator`, reset for this test.

    The server runs on its own thread, so sync tests and async tests (any event
    loop) can both call it. Its queue, request log and connection count start
    empty; pass ``dashscope_emulator.base_url`` and ``.api_key`` to the client.
    """
    _dashscope_emulator_server.reset()
    yield _dashscope_emulator_server
