"""Every Python example in README.md and docs/*.md runs as written, and every relative
link in them points to a file that exists.

docs/integrations.md's examples are run by tests/test_integrations_docs.py (optional
extras, one shared folder), so not here. An example shown on two pages runs once.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
OWN_TEST = {REPO / "docs" / "integrations.md"}  # tests/test_integrations_docs.py


def _blocks() -> list[tuple[str, str]]:
    """(label, code) of every ```python block, each distinct block once, in page order."""
    seen, out = set(), []
    for page in PAGES:
        if page in OWN_TEST:
            continue
        found = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)
        for index, code in enumerate(found):
            if code not in seen:
                seen.add(code)
                out.append((f"{page.relative_to(REPO).as_posix()} example {index}", code))
    return out


BLOCKS = _blocks()


def test_the_pages_have_examples():
    readme = [label for label, _ in BLOCKS if label.startswith("README.md")]
    assert readme and len(BLOCKS) >= 5


@pytest.mark.parametrize("label, code", BLOCKS, ids=[label for label, _ in BLOCKS])
def test_example_runs(label, code, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # examples that write (runs/...) write here
    exec(compile(code, label, "exec"), {"__name__": "__docs__"})
    assert capsys.readouterr().out.strip(), "each example prints what it shows"


def test_the_readme_stays_short():
    """The README is the front page (under 12 KB); guides live in docs/, every
    experiment's tables in results/README.md."""
    assert len((REPO / "README.md").read_bytes()) < 12 * 1024


_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    links = [m.group(1) for m in _LINK.finditer(text)]
    return [x for x in links if not re.match(r"[a-z][a-z0-9+.-]*:", x) and not x.startswith("#")]


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(REPO).as_posix() for p in PAGES])
def test_relative_links_point_to_files(page):
    missing = [x for x in _relative_links(page) if not (page.parent / x.split("#")[0]).exists()]
    assert not missing, f"{page.relative_to(REPO)}: links to missing files: {missing}"


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[ok](page.md) [web](https://x.org) [a](#top) [gone](docs/nope.md#x)\n")
    assert _relative_links(page) == ["page.md", "docs/nope.md#x"]
