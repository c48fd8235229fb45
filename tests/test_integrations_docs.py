"""Every Python example in docs/integrations.md runs as written (issue 25, item 7).

As tests/test_docs.py does for README.md and the other pages, but in one temporary
folder shared by the page's examples in order (the ImageNet recipe uses the folder the
image example made). An example that imports an optional extra is skipped, by name, without it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

PAGE = Path(__file__).resolve().parents[1] / "docs" / "integrations.md"
BLOCKS = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)
EXTRAS = {  # module an example imports -> the extra that installs it
    "lightning": "lightning",
    "transformers": "hf",
    "tensorboard": "tensorboard",
    "superconv.integrations.tensorboard": "tensorboard",
    "PIL": "images",
    "superconv.data.folder": "images",
}


def test_page_has_an_example_per_integration():
    text = "\n".join(BLOCKS)
    for needle in ("lightning", "transformers", "TensorBoardLogger", "FolderLoader", "apply("):
        assert needle in text, needle


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("integrations-docs")


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_integrations_example_runs(index, workdir, monkeypatch, capsys):
    block = BLOCKS[index]
    for module, extra in EXTRAS.items():
        if re.search(rf"^\s*(import|from) {re.escape(module)}\b", block, flags=re.M):
            top = "tensorboard" if extra == "tensorboard" else module.split(".")[0]
            top = "PIL" if extra == "images" else top
            pytest.importorskip(
                top, reason=f"{top} not installed: pip install 'superconv[{extra}]'"
            )
    monkeypatch.chdir(workdir)  # examples that write (logs, images) write here
    torch.set_num_threads(1)  # small models: threads only fight other jobs (conftest restores)
    code = compile(block, f"docs/integrations.md example {index}", "exec")
    exec(code, {"__name__": "__integrations_docs__"})
    assert capsys.readouterr().out.strip(), "each example prints what it shows"
