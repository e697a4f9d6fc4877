"""Code shape (issue 17): no function or method in `distilnlp/` over 80 lines (its `def` line to its last line,
decorators not counted), no module over 400 lines. Split a long function into named steps, a long module by what
its parts do."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "distilnlp"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_the_package_has_modules():
    assert len(modules()) > 50


def test_no_function_is_over_80_lines():
    long = []
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(
                        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)"
                    )
    assert not long, "functions over 80 lines:\n" + "\n".join(long)


def test_no_module_is_over_400_lines():
    long = []
    for path in modules():
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            long.append(f"{path.relative_to(PACKAGE.parent)} ({lines} lines)")
    assert not long, "modules over 400 lines:\n" + "\n".join(long)
