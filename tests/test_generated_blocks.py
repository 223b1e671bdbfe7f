"""Every generated block of README.md and docs/*.md is current: the command its written-by line
names, rerun in a temp copy of the page from committed inputs, writes the block as it stands.

What each command reads, and what stands in for the inputs the repository does not hold:

- `python -m pipeline.cli.readme` (the results block): reports/metrics/, reports/data.json,
  reports/seeds.json, reports/translators/ and params.yaml, all committed; and the dataset
  identity data/prepared/dataset.json, the prepare stage's output, which is not. The block prints
  only the identity's label (and its seed-spread column only when seeds.json was measured on that
  dataset), so an identity with the label reports/seeds.json records stands in for it.
- `python -m pipeline.cli.benchmark` (the benchmark blocks): the finished run folders (`--run`),
  checkouts outside the repository. The page folder the block links to keeps runs.json, the
  tables those runs gave; `--from-page` rewrites the block from it.

No training runs here. A command without a recipe below fails the test, naming itself.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline import blocks
from pipeline.data.identity import IDENTITY_FILE
from pipeline.io import read_json, write_json
from tests.conftest import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
RESULTS_INPUTS = [
    "params.yaml",
    "reports/metrics",
    "reports/data.json",
    "reports/seeds.json",
    "reports/translators",
]
PAGE_LINK = re.compile(r"Full page: \[[^\]]+\]\((?P<link>[^)]+)\)")


def _generated() -> list[tuple[Path, blocks.Block]]:
    return [(page, block) for page in PAGES if page.is_file() for block in blocks.page_blocks(page)]


def _copy_committed(root: Path, relative: str) -> None:
    """Copy a committed input into the temp checkout `root`; a missing one fails the test."""
    source = REPO_ROOT / relative
    if not source.exists():
        pytest.fail(f"{relative} is not in the repository: the block's command reads it")
    target = root / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy(source, target)


def _results_inputs(root: Path, page: Path, block: blocks.Block) -> list[str]:
    for relative in RESULTS_INPUTS:
        _copy_committed(root, relative)
    # data/prepared/dataset.json is not committed (module docstring): one with the label
    # reports/seeds.json records, its roots inside the demo data's folder, stands in.
    label = read_json(REPO_ROOT / "reports" / "seeds.json")["dataset"]
    name, digest = re.fullmatch(r"(.+) \(([0-9a-f]+)\)", label).groups()
    splits = {split: {"frames": 0, "sha256": ""} for split in ("sim", "real_train", "real_val")}
    identity = {
        "name": name,
        "source": {"kind": "gta5", "root": "data/demo/gta5"},
        "target": {"kind": "cityscapes", "root": "data/demo/cityscapes"},
        "size": [0, 0],
        "splits": splits,
        "digest": digest,
    }
    write_json(root / "data" / "prepared" / IDENTITY_FILE, identity)
    return []


def _benchmark_inputs(root: Path, page: Path, block: blocks.Block) -> list[str]:
    # The run folders are not committed (module docstring): the linked page's runs.json is.
    match = PAGE_LINK.search(block.body)
    if match is None:
        pytest.fail(f"{page.name}: block {block.name} links no full page to rebuild it from")
    folder = (page.parent / match["link"]).parent
    relative = os.path.relpath(folder, REPO_ROOT)
    _copy_committed(root, f"{relative}/runs.json")
    return ["--from-page", relative]


# Each command the written-by lines name: what it reads, set up in the temp checkout, and the
# options that point it there.
RECIPES: dict[str, Callable[[Path, Path, blocks.Block], list[str]]] = {
    "pipeline.cli.readme": _results_inputs,
    "pipeline.cli.benchmark": _benchmark_inputs,
}


def test_the_pages_hold_generated_blocks():
    names = {block.name for _, block in _generated()}
    assert {"results", "benchmark"} <= names, names


@pytest.mark.parametrize(
    ("page", "block"),
    _generated(),
    ids=lambda value: value.name if isinstance(value, (Path, blocks.Block)) else str(value),
)
def test_block_is_what_its_command_writes_now(page, block, tmp_path, monkeypatch):
    words = shlex.split(block.command)
    assert words[:2] == ["python", "-m"], f"{page.name}: block {block.name}: {block.command!r}"
    module = words[2]
    if module not in RECIPES:
        pytest.fail(
            f"{page.name}: block {block.name} is written by {module}, which this test cannot "
            "rerun: add a recipe naming the inputs it reads and whether they are committed"
        )
    relative = page.relative_to(REPO_ROOT)
    copy = tmp_path / relative
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(page, copy)
    extra = RECIPES[module](tmp_path, page, block)
    monkeypatch.chdir(tmp_path)
    importlib.import_module(module).main([*words[3:], *extra])
    rewritten = {b.name: b for b in blocks.page_blocks(copy)}[block.name]
    assert rewritten == block, (
        f"{relative}: block {block.name} is stale; rerun `{block.command}`"
        + (f" {shlex.join(extra)}" if extra else "")
    )
    assert copy.read_text() == page.read_text()
