"""The README's "Your first hour" walkthrough runs as written.

(Its Python examples, and those of docs/, run in tests/test_docs.py.)
"""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _walkthrough() -> list[list[str]]:
    import shlex

    section = README.read_text(encoding="utf-8").split("## Your first hour with superconv", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line]


def test_the_walkthroughs_train_line_is_what_lr_find_prints_next():
    """The docs' train command comes from the one Next: builder (issue 23 item 2): it is
    next_command() of the lr-find line's settings and budget, at the README's max_lr."""
    import shlex

    from superconv.cli import build_parser, lr_find_config, next_command

    lr_find, train = _walkthrough()[1:3]
    config, _ = lr_find_config(build_parser().parse_args(lr_find[1:]))
    max_lr = float(next(w for w in train if w.startswith("max_lr=")).split("=")[1])
    out = train.index("--out")
    assert train[:out] + train[out + 2 :] == shlex.split(
        next_command(config, max_lr, config.iterations)
    )


def test_first_hour_walkthrough_runs_as_written(tmp_path, monkeypatch, capsys):
    """The README's "first hour" commands (all but the demo, which test_demo runs), as
    written, on the shipped MNIST subset; then the printed Next: command."""
    import shlex

    from superconv.cli import main

    commands = _walkthrough()
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
