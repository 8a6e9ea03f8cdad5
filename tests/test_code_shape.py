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
