"""The package's module graph: no import cycles, and lower layers never import higher ones.

Imports under ``TYPE_CHECKING`` count too: a dependency hidden from the
interpreter is still a dependency of the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "aiotongyi"

# Each module's layer; a module may import only modules of its own layer or lower.
LAYERS: dict[str, int] = {
    # pure: no I/O
    "_version": 0,
    "_exceptions": 0,
    "_text": 0,
    "_sse": 0,
    "_semconv": 0,
    "_models": 1,
    "_errors": 2,
    "_config": 2,
    "_retry": 2,
    "_media": 2,
    "_embeddings": 2,
    "_accumulate": 3,
    "_request": 3,
    "_structured": 3,
    # transport (aiohttp) and what a call runs with
    "_call": 4,
    "_sessions": 5,
    "_transport": 5,
    "_callinfo": 4,
    "_ratelimit": 4,
    "_ratelimit_redis": 4,
    "_hooks": 5,
    "_telemetry": 5,
    "_observe": 6,
    "_context": 6,
    # calls
    "_upload": 7,
    "_stream": 7,
    "_embed_call": 7,
    # the sync bridge, the lifecycle, the client
    "_sync": 8,
    "_lifecycle": 9,
    "_client": 10,
    # on top of the client
    "_tools": 11,
    "_terminal": 0,
    "_repl": 11,
    "_cli_embed": 11,
    "_cli": 12,
    "__init__": 13,
    "__main__": 14,
}


# The one annotation-only edge allowed against the layers: an error's ``partial``
# is a ModelOutput, and ModelOutput.parse_json() raises JSONOutputError; the
# exceptions import the output type only for that annotation.
ANNOTATION_ONLY = {("_exceptions", "_models")}


def _imports(path: Path) -> set[str]:
    """The ``aiotongyi`` top-level modules that ``path`` imports (relative imports)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    return {
        path.stem: {
            m for m in _imports(path) & set(LAYERS) if (path.stem, m) not in ANNOTATION_ONLY
        }
        for path in PACKAGE.glob("*.py")
    }


def test_every_module_has_a_layer() -> None:
    assert {path.stem for path in PACKAGE.glob("*.py")} <= set(LAYERS)


@pytest.mark.parametrize("module", sorted(_graph()))
def test_no_module_imports_a_higher_layer(module: str) -> None:
    higher = {other for other in _graph()[module] if LAYERS[other] > LAYERS[module]}
    assert not higher, f"{module} (layer {LAYERS[module]}) imports {higher}"


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(graph.get(module, ())):
            if state.get(other) == 1:
                cycle = [*path[path.index(other) :], other]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if other not in state:
                visit(other, [*path, other])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_the_emulator_imports_nothing_from_the_client() -> None:
    for path in (PACKAGE / "testing").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= 1 and not (node.module or "").startswith("aiotongyi"), (
                    f"{path.name} imports {node.module}"
                )
