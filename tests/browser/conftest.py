"""The ``browser`` marker: tests that drive Debian's chromium (run by .ci/docs.sh)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives a headless chromium through selenium (run by .ci/docs.sh)"
    )
