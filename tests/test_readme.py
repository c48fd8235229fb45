"""Every Python example in the README runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # examples that write (runs/...) write here
    exec(compile(BLOCKS[index], f"README.md example {index}", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip(), "each example prints what it shows"


def test_first_hour_walkthrough_runs_as_written(tmp_path, monkeypatch, capsys):
    """The README's "first hour" commands (all but the demo, which test_demo runs), as
    written, on the shipped MNIST subset; then the printed Next: command."""
    import shlex

    from superconv.cli import main

    text = README.read_text(encoding="utf-8")
    section = text.split("## Your first hour with superconv", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    commands = [shlex.split(line) for line in lines if line]
    assert [c[1] for c in commands] == ["demo", "lr-find", "train", "report"]
    monkeypatch.chdir(tmp_path)
    for words in commands[1:]:
        assert words[0] == "superconv"
        assert main([*words[1:], "--device", "cpu"] if words[1] != "report" else words[1:]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    nxt = shlex.split(lines[next(i for i, x in enumerate(lines) if x.startswith("Next")) + 1])
    assert main([*nxt[1:], "--out", "first/next"]) == 0
    assert (tmp_path / "first" / "train" / "curves.png").is_file()
    assert (tmp_path / "first" / "compare.png").is_file()
