"""Fixtures for the differential tests against the official dashscope SDK.

The SDK keeps settings in process globals and reads many environment variables
and a config file; every test here starts from a clean slate and leaves one.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import dashscope
import pytest
from dashscope.api_entities.http_request import close_shared_sync_session

from . import _sdk_internals
from ._sdk import LEGACY_GLOBALS, v2_client


@pytest.fixture(autouse=True)
def _isolate_sdk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No DASHSCOPE_* environment, config file or global leaks into or out of a test."""
    for name in list(os.environ):
        if name.startswith("DASHSCOPE_"):
            monkeypatch.delenv(name)
    # Both would otherwise read files under the developer's home directory.
    monkeypatch.setenv("DASHSCOPE_CONFIG", str(tmp_path / "absent-config.toml"))
    monkeypatch.setenv("DASHSCOPE_API_KEY_FILE_PATH", str(tmp_path / "absent-key"))
    saved = {name: getattr(dashscope, name, None) for name in LEGACY_GLOBALS}
    explicit = _sdk_internals.saved_settings()
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(dashscope, name, value)
        _sdk_internals.restore_settings(explicit)
        # The legacy sync API pools connections in a process-wide Session.
        close_shared_sync_session()


@pytest.fixture(scope="session")
def sdk_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dashscope.Client]:
    """One v2 sync client for the session: building one costs ~50 ms (an SSL context).

    It has no retries, and its config is resolved with no DASHSCOPE_* environment
    and no config file, like every test's.
    """
    absent = tmp_path_factory.mktemp("sdk") / "absent"
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("DASHSCOPE_"):
                patch.delenv(name)
        patch.setenv("DASHSCOPE_CONFIG", str(absent))
        patch.setenv("DASHSCOPE_API_KEY_FILE_PATH", str(absent))
        client = v2_client()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
async def ours(dashscope_emulator: object) -> AsyncIterator[object]:
    """An aiotongyi client on the emulator, no retries (one request per call)."""
    from aiotongyi import TongyiLLMClient

    emu = dashscope_emulator
    async with TongyiLLMClient(
        api_key=emu.api_key,  # type: ignore[attr-defined]
        base_url=emu.base_url,  # type: ignore[attr-defined]
        max_retries=0,
    ) as client:
        yield client
