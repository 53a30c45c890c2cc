"""The public surface matches API.md and stays tidy."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

import aiotongyi

CONTRACT = """TongyiLLMClient Stream ModelRequest ModelOutput ToolCall Usage Timeout TongyiError
APIError BadRequestError AuthenticationError NotFoundError RateLimitError ServerError
APIConnectionError APITimeoutError StreamInterruptedError ProtocolError
SearchInfo SearchResult TokenLogprob TopLogprob""".split()


def test_all_holds_the_contract() -> None:
    assert set(CONTRACT) <= set(aiotongyi.__all__)


def test_all_names_exist_and_are_rehomed() -> None:
    for name in aiotongyi.__all__:
        obj = getattr(aiotongyi, name)
        if isinstance(obj, type):
            assert obj.__module__ == "aiotongyi", name


def test_public_names_are_exported_and_private_ones_are_not() -> None:
    public = {
        name
        for name in dir(aiotongyi)
        if name.isidentifier()
        and not name.startswith("_")
        and not isinstance(getattr(aiotongyi, name), types.ModuleType)  # subpackages
    }
    assert public == set(aiotongyi.__all__) - {"__version__"}


def test_testing_package_exports() -> None:
    testing = importlib.import_module("aiotongyi.testing")
    for name in testing.__all__:
        assert getattr(testing, name).__module__ == "aiotongyi.testing"


def test_py_typed_ships() -> None:
    from importlib.resources import files

    assert files("aiotongyi").joinpath("py.typed").is_file()


def test_importing_loads_no_optional_or_peer_packages() -> None:
    code = (
        "import sys, aiotongyi, aiotongyi.testing; "
        "print(sorted(m for m in ('dbgpt', 'dashscope', 'openai', 'tiktoken', 'httpx') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
