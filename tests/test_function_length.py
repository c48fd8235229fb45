"""No function in src/superconv is longer than MAX_LINES lines without a stated reason.

A function's length runs from its ``def`` line to its last line (signature,
docstring, body and comments; decorators not counted). A longer one passes only
with a comment starting ``# long:`` and giving the reason, on the line directly
above the ``def`` (above its decorators, if any) or at the top of its body (the
comment lines just before its first statement)::

    # long: public API with 27 parameters, each documented in the docstring
    def range_test(...):

Long functions are split into named steps instead where that reads better (issue 26).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

MAX_LINES = 80
MARKER = "# long:"
SRC = Path(__file__).resolve().parents[1] / "src" / "superconv"

def _reason(line: str) -> str | None:
    """The reason of a ``# long:`` comment line, or None if the line is not one."""
    text = line.strip()
    return text[len(MARKER) :].strip() if text.startswith(MARKER) else None


def _marked(node: ast.FunctionDef | ast.AsyncFunctionDef, lines: list[str]) -> str | None:
    """The ``# long:`` reason given for ``node`` ("" when the comment gives none), or None."""
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])
    candidates = [lines[first - 2]] if first >= 2 else []
    # the comment lines at the top of the body: just above the first statement
    row = node.body[0].lineno - 2
    while row >= node.lineno and lines[row].strip().startswith("#"):
        candidates.append(lines[row])
        row -= 1
    reasons = [r for r in map(_reason, candidates) if r is not None]
    return reasons[0] if reasons else None


def long_functions(source: str, name: str = "<source>") -> list[str]:
    """One line per function of ``source`` over MAX_LINES lines without a reason."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source, filename=name)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        length = node.end_lineno - node.lineno + 1
        if length <= MAX_LINES:
            continue
        reason = _marked(node, lines)
        if reason is None:
            found.append(f"{name}:{node.lineno} {node.name}() is {length} lines")
        elif not reason:
            found.append(f"{name}:{node.lineno} {node.name}(): '{MARKER}' gives no reason")
    return found


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_no_function_is_longer_than_max_lines_without_a_reason():
    found = [
        line
        for path in _sources()
        for line in long_functions(path.read_text(encoding="utf-8"), str(path.relative_to(SRC)))
    ]
    assert not found, (
        f"functions over {MAX_LINES} lines: split them into named steps, or say why not "
        f"with a '{MARKER} REASON' comment above the def:\n  " + "\n  ".join(found)
    )


def test_the_check_sees_the_package():
    names = {p.name for p in _sources()}
    assert {"train.py", "cli.py", "demo.py", "fit.py"} <= names


def _function(lines: int, *, above: str = "", top: str = "", decorator: str = "") -> str:
    body = "".join(f"    x{i} = {i}\n" for i in range(lines - 1))
    return (
        "import functools\n\n"
        + (f"{above}\n" if above else "")
        + (f"{decorator}\n" if decorator else "")
        + "def f():\n"
        + (f"    {top}\n" if top else "")
        + body
    )


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        (_function(MAX_LINES), False),
        (_function(MAX_LINES + 1), True),
        (_function(MAX_LINES + 1, above="# long: a table of cases, read as one"), False),
        (_function(MAX_LINES + 1, top="# long: a table of cases, read as one"), False),
        (
            _function(
                MAX_LINES + 1, above="# long: a table, read as one", decorator="@functools.cache"
            ),
            False,
        ),
        (_function(MAX_LINES + 1, above="# long:"), True),  # no reason
        (_function(MAX_LINES + 1, above="# a comment"), True),
        (_function(MAX_LINES + 1, above="# long: x\n"), True),  # not directly above
    ],
    ids=[
        "at-limit",
        "over",
        "above",
        "top-of-body",
        "above-decorator",
        "no-reason",
        "other",
        "blank-between",
    ],  # fmt: skip
)
def test_the_check_itself(source, flagged):
    assert bool(long_functions(source)) is flagged


def test_a_nested_function_is_checked_too():
    inner = _function(MAX_LINES + 1).replace("def f():", "def g():")
    nested = "def outer():\n" + "".join(f"    {line}\n" for line in inner.splitlines())
    nested += "    return g\n"
    found = long_functions(nested)
    assert any("g()" in line for line in found)
