"""Optional dependencies stay optional: ``import aiotongyi`` never pulls in DB-GPT."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

VENDOR_MODULES = ("dbgpt", "dashscope", "openai", "tiktoken", "langchain_core")


def test_core_and_testing_import_no_framework_or_vendor_sdk() -> None:
    modules = ["aiotongyi", "aiotongyi.testing", "aiotongyi.integrations"]
    if importlib.util.find_spec("aiotongyi._cli") is not None:
        modules.append("aiotongyi._cli")
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in {VENDOR_MODULES!r} if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


@pytest.mark.skipif(
    importlib.util.find_spec("dbgpt") is not None, reason="DB-GPT is installed here"
)
def test_dbgpt_integration_without_dbgpt_names_the_extra() -> None:
    with pytest.raises(ImportError, match=r"aiotongyi\[dbgpt\]"):
        importlib.import_module("aiotongyi.integrations.dbgpt")


@pytest.mark.skipif(
    importlib.util.find_spec("langchain_core") is not None,
    reason="langchain-core is installed here",
)
def test_langchain_integration_without_langchain_names_the_extra() -> None:
    with pytest.raises(ImportError, match=r"aiotongyi\[langchain\]"):
        importlib.import_module("aiotongyi.integrations.langchain")
