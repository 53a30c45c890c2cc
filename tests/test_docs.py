"""Every ```python block in docs/*.md and README.md runs, in order, against the emulator.

How a page is run:

* Its ```python blocks run top to bottom in one namespace, like a notebook, on
  one event loop: a block with a top-level ``await`` runs on that loop, and
  ``asyncio.run(...)`` inside a block works as in a script.
* ``DASHSCOPE_API_KEY`` and ``DASHSCOPE_HTTP_BASE_URL`` point at the emulator,
  so ``TongyiLLMClient()`` with no arguments talks to it; name resolution of
  any host but localhost fails, so a block can never reach the network.
* Predefined names: ``client`` (a ``TongyiLLMClient`` on the emulator; a new
  one whenever a block left it closed or rebound it to something else) and
  ``emu`` (the emulator, reset before every block).
* ``<!-- emulator: EXPR -->`` on the line before a block queues replies for
  it: ``EXPR`` is a ``Reply`` or a tuple of them, with the names of
  ``aiotongyi.testing`` in scope. The comment does not show in the docs.
* Functions a page defines named ``test_*`` are then called (awaited when
  async), their ``dashscope_emulator``/``emu`` arguments given the emulator.

Illustrative blocks that cannot run use the fence ```py instead; they must
still compile.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
import re
import socket
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import aiotongyi.testing
from aiotongyi import TongyiLLMClient
from aiotongyi.testing import DashScopeEmulator

ROOT = Path(__file__).resolve().parent.parent
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\n]*)$")
DIRECTIVE = re.compile(r"^\s*<!--\s*emulator:\s*(?P<expr>.*?)\s*-->\s*$", re.DOTALL)
SNIPPET = re.compile(r'^--8<-- "([^"]+)"$')
TEST_DEF = re.compile(r"^(?:async )?def test_", re.MULTILINE)
LOOPBACK = {"localhost", "127.0.0.1", "::1"}
# A page's blocks may need an extra: its missing top-level module skips the page.
OPTIONAL_FRAMEWORKS = {"dbgpt": "dbgpt", "langchain_core": "langchain", "pydantic": "langchain"}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a Markdown page."""

    path: Path
    line: int  # 1-based line of the first code line
    info: str
    code: str
    directive: str | None  # the <!-- emulator: ... --> expression before it

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    def compile(self) -> Any:
        # Leading newlines make tracebacks point at the Markdown line numbers.
        source = "\n" * (self.line - 1) + self.code
        return compile(
            source, str(self.path), "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
        )


def expand_snippet(line: str) -> str:
    """pymdownx.snippets' ``--8<-- "path"`` line, replaced by that file (paths from the root)."""
    match = SNIPPET.match(line)
    if match is None:
        return line
    return (ROOT / match.group(1)).read_text(encoding="utf-8").rstrip("\n")


def parse_blocks(path: Path) -> list[Block]:
    """The fenced blocks of ``path``, with the indentation of list items removed."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        previous = next((line for line in reversed(lines[:i]) if line.strip()), "")
        directive = DIRECTIVE.match(previous)
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        start = i - len(body) + 1
        body = [expand_snippet(line) for line in body]
        blocks.append(
            Block(
                path,
                start,
                opening["info"].strip(),
                "\n".join(body) + "\n",
                directive["expr"] if directive else None,
            )
        )
        i += 1
    return blocks


def runnable(path: Path) -> list[Block]:
    return [block for block in parse_blocks(path) if block.info == "python"]


def illustrative(path: Path) -> list[Block]:
    return [block for block in parse_blocks(path) if block.info.split(" ")[0] in ("py", "python")]


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.fixture
def quiet_logging() -> Iterator[None]:
    """Pages may configure logging (the errors page does); undo it afterwards."""
    root, ours = logging.getLogger(), logging.getLogger("aiotongyi")
    saved = (root.level, list(root.handlers), ours.level)
    yield
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    ours.setLevel(saved[2])


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse to resolve any host but the loopback (the emulator binds 127.0.0.1)."""
    real_getaddrinfo = socket.getaddrinfo

    def guarded(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in LOOPBACK:
            raise socket.gaierror(f"docs tests run offline: refusing to resolve {name!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


def call_tests(namespace: dict[str, Any], emu: DashScopeEmulator, run: Callable[[Any], Any]) -> int:
    """Call the ``test_*`` functions a page defined; return how many ran."""
    ran = 0
    for name, func in list(namespace.items()):
        if not (name.startswith("test_") and inspect.isfunction(func)):
            continue
        emu.reset()
        kwargs = dict.fromkeys(inspect.signature(func).parameters, emu)
        result = func(**kwargs)
        if inspect.iscoroutine(result):
            run(result)
        ran += 1
    return ran


@pytest.mark.parametrize("path", [p for p in PAGES if runnable(p)], ids=page_id)
@pytest.mark.usefixtures("offline", "quiet_logging")
def test_page_code_runs(
    path: Path, dashscope_emulator: DashScopeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = dashscope_emulator
    monkeypatch.setenv("DASHSCOPE_API_KEY", emu.api_key)
    monkeypatch.setenv("DASHSCOPE_HTTP_BASE_URL", emu.base_url)
    clients: list[TongyiLLMClient] = []
    namespace: dict[str, Any] = {"__name__": "__docs__", "emu": emu}
    scripting = {name: getattr(aiotongyi.testing, name) for name in aiotongyi.testing.__all__}
    loop = asyncio.new_event_loop()
    try:
        # Deprecations inside third-party packages a page imports (DB-GPT's
        # dependencies have some) are not the docs' business; ours still fail.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=PendingDeprecationWarning)
        warnings.filterwarnings("error", module=r"aiotongyi(\.|$)")
        for block in runnable(path):
            emu.reset()
            current = namespace.get("client")
            if not isinstance(current, TongyiLLMClient) or current.is_closed:
                clients.append(TongyiLLMClient(api_key=emu.api_key, base_url=emu.base_url))
                namespace["client"] = clients[-1]
            if block.directive is not None:
                replies = eval(block.directive, dict(scripting))
                emu.enqueue(*(replies if isinstance(replies, tuple) else (replies,)))
            try:
                result = eval(block.compile(), namespace)
                if inspect.iscoroutine(result):  # the block has a top-level await
                    loop.run_until_complete(result)
            except ModuleNotFoundError as exc:
                extra = OPTIONAL_FRAMEWORKS.get((exc.name or "").split(".")[0])
                if extra is None:
                    raise
                pytest.skip(f"{block.where} needs {extra}: pip install 'aiotongyi[{extra}]'")
            except Exception as exc:
                raise AssertionError(f"the code block at {block.where} failed: {exc!r}") from exc
        defined = sum(len(TEST_DEF.findall(block.code)) for block in runnable(path))
        assert call_tests(namespace, emu, loop.run_until_complete) == defined
    finally:
        for client in clients:
            loop.run_until_complete(client.aclose())
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def test_docs_have_runnable_code() -> None:
    counts = {page_id(p): len(runnable(p)) for p in PAGES}
    assert sum(counts.values()) >= 40, counts
    assert counts["README.md"] >= 3


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_illustrative_blocks_compile(path: Path) -> None:
    """```py blocks are not run, but they must at least be valid Python."""
    problems = [
        f"{block.where}: {error}" for block in illustrative(path) if (error := syntax_error(block))
    ]
    assert not problems, problems


def syntax_error(block: Block) -> str | None:
    try:
        block.compile()
    except SyntaxError as exc:
        return str(exc)
    return None


def test_runner_sees_fences_directives_and_indents(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Text\n\n<!-- emulator: Reply(text=['x']) -->\n```python\nx = 1\n```\n\n"
        "* item\n\n    ```python\n    if x:\n        y = 2\n    ```\n\n"
        "```py\nnot run\n```\n````markdown\n```python\nnested\n```\n````\n",
        encoding="utf-8",
    )
    first, second, third, fourth = parse_blocks(page)
    assert (first.info, first.line, first.code, first.directive) == (
        "python",
        5,
        "x = 1\n",
        "Reply(text=['x'])",
    )
    assert (second.line, second.code, second.directive) == (11, "if x:\n    y = 2\n", None)
    assert (third.info, third.code) == ("py", "not run\n")
    assert fourth.info == "markdown" and "nested" in fourth.code
    assert [b.line for b in runnable(page)] == [5, 11]


def nav_pages() -> Iterator[str]:
    for line in (ROOT / "mkdocs.yml").read_text(encoding="utf-8").splitlines():
        match = re.search(r"([\w./-]+\.md)\s*$", line)
        if match and line.lstrip().startswith("- "):
            yield match.group(1)


def test_every_page_is_in_the_nav() -> None:
    pages = {p.name for p in (ROOT / "docs").glob("*.md")}
    assert set(nav_pages()) == pages


@pytest.mark.parametrize("path", PAGES, ids=page_id)
def test_relative_links_resolve(path: Path) -> None:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        file = (path.parent / target.split("#")[0]).resolve()
        assert file.exists(), f"{page_id(path)} links to missing {target}"
        if path.parent.name == "docs":  # mkdocs --strict refuses links out of docs/
            assert file.is_relative_to(ROOT / "docs"), f"{page_id(path)} links out of docs/"
