"""House rules that keep pipeline/ easy to change: short functions, and messages through logging."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
MAX_FUNCTION_LINES = 50
SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_function_is_longer_than_fifty_lines(path):
    tree = ast.parse(path.read_text())
    functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    long = {
        f.name: f.end_lineno - f.lineno + 1
        for f in functions
        if f.end_lineno - f.lineno >= MAX_FUNCTION_LINES
    }
    assert not long, f"split these: {long}"


@pytest.mark.parametrize(
    "path", [p for p in SOURCES if p.name != "__main__.py"], ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_messages_go_through_logging_not_print(path):
    """Only the CLI entry (__main__.py) prints: its one `error:` line, when logging may not be set up yet."""
    tree = ast.parse(path.read_text())
    prints = [
        n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "print"
    ]
    assert not prints, f"print() at lines {prints}: use logging.getLogger('pipeline.<stage>')"


def subpackage_of(module: str) -> str | None:
    """`pipeline.data` for `pipeline.data.sources`; None for top-level modules and other libraries."""
    parts = module.split(".")
    inside = len(parts) > 1 and parts[0] == "pipeline" and (PACKAGE / parts[1]).is_dir()
    return ".".join(parts[:2]) if inside else None


def test_subpackages_import_each_other_one_way_only():
    """Layers point one way: when data imports models, models imports nothing from data (deferred imports
    included), else the two can no longer be understood, tested or loaded apart."""
    imports: dict[tuple[str, str], str] = {}
    for path in (p for p in SOURCES if p.parent != PACKAGE):
        here = subpackage_of(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for there in {subpackage_of(name) for name in names} - {None, here}:
                imports[(here, there)] = str(path.relative_to(PACKAGE))
    circles = {(a, b): (imports[(a, b)], imports[(b, a)]) for a, b in imports if a < b and (b, a) in imports}
    assert not circles, f"imports both ways (one file each): {circles}"
