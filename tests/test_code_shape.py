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


def unit_of(module: str, package: Path) -> str | None:
    """`pipeline.data` for `pipeline.data.sources`, `pipeline.runner` for itself: the top-level module or
    subpackage a module belongs to; None for other libraries."""
    parts = module.split(".")
    if len(parts) < 2 or parts[0] != package.name:
        return None
    exists = (package / parts[1]).is_dir() or (package / f"{parts[1]}.py").is_file()
    return ".".join(parts[:2]) if exists else None


def import_graph(package: Path) -> dict[tuple[str, str], str]:
    """(unit, unit it imports) -> one file that does, deferred imports included."""
    edges: dict[tuple[str, str], str] = {}
    for path in sorted(package.rglob("*.py")):
        module = ".".join(path.relative_to(package.parent).with_suffix("").parts).removesuffix(".__init__")
        here = unit_of(module, package)
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            if isinstance(node, ast.ImportFrom) and node.module == package.name:
                names = [f"{package.name}.{alias.name}" for alias in node.names]
            names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            for there in {unit_of(name, package) for name in names} - {None, here}:
                edges.setdefault((here, there), str(path.relative_to(package)))
    return edges


def import_loops(package: Path) -> list[list[str]]:
    """Groups of units that reach each other through imports (strongly connected, more than one)."""
    edges = import_graph(package)
    reach = {a: {b for x, b in edges if x == a} for a, _ in edges}
    changed = True
    while changed:  # transitive closure: a few dozen units
        changed = False
        for found in reach.values():
            more = set().union(*(reach.get(b, set()) for b in found)) - found
            if more:
                found |= more
                changed = True
    loops = {frozenset({a} | {b for b in found if a in reach.get(b, set())}) for a, found in reach.items()}
    return sorted(sorted(loop) for loop in loops if len(loop) > 1)


def test_no_import_loop_between_top_level_modules_or_subpackages():
    """Layers point one way: when data imports models, models imports nothing from data, through any number
    of steps (deferred imports included), else they can no longer be understood, tested or loaded apart."""
    loops = import_loops(PACKAGE)
    edges = import_graph(PACKAGE)
    where = {f"{a} -> {b}": edges[(a, b)] for loop in loops for a in loop for b in loop if (a, b) in edges}
    assert not loops, f"import loops {loops}: {where}"


def test_a_planted_loop_between_two_top_level_modules_is_found(tmp_path):
    package = tmp_path / "pipeline"
    (package / "data").mkdir(parents=True)
    (package / "schema.py").write_text("from pipeline.data.decode import MAX_PIXELS\n")
    (package / "data" / "decode.py").write_text("def later():\n    from pipeline import tracking\n")
    (package / "tracking.py").write_text("import pipeline.schema\n")
    (package / "errors.py").write_text("")
    assert import_loops(package) == [["pipeline.data", "pipeline.schema", "pipeline.tracking"]]
