"""No module of pipeline/ imports from a layer above its own (see pipeline/__init__.py), and the
training loops and the benchmarks import without mlflow."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "pipeline"
# Module (dotted, under pipeline) or package prefix -> layer, lowest first.
LAYERS = {
    "config": 1,
    "io": 1,
    "dist": 1,
    "runtime": 1,
    "fingerprint": 1,
    "weights": 1,
    "data": 2,
    "models": 3,
    "losses": 3,
    "metrics": 3,
    "fid": 3,
    "colour_stats": 3,
    "adapt": 3,
    "translate": 4,
    "evaluate": 4,
    "translation_scores": 4,
    "segment": 4,
    "tracking": 4,
    "pyfunc_model": 4,
    "preflight": 4,
    "train": 5,
    "report": 6,
    "blocks": 6,
    "compare": 6,
    "ablation": 6,
    "cli": 7,
}


def layer(module: str) -> int:
    """Layer of a dotted module under pipeline ("train.run"), by its most specific prefix."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        found = LAYERS.get(".".join(parts[:end]))
        if found is not None:
            return found
    raise AssertionError(f"pipeline.{module} has no layer: add it to LAYERS and the package doc")


def imports(path) -> list[tuple[int, str]]:
    """(line, module under pipeline) of every import of the file, function-level ones too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name.startswith("pipeline.") and name.count(".") >= 1:
                found.append((node.lineno, name.removeprefix("pipeline.")))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_from_a_higher_layer(path) -> None:
    here = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    own = layer(here)
    upward = []
    for line, module in imports(path):
        try:
            target = layer(module)
        except AssertionError:
            continue  # a name imported from a package (`from pipeline import dist`) is a module
        if target > own:
            upward.append(f"line {line}: pipeline.{module} (layer {target})")
    assert not upward, f"pipeline.{here} (layer {own}) imports upward: {upward}"


TRAINING = sorted((PACKAGE / "train").glob("*.py"))


@pytest.mark.parametrize("path", TRAINING, ids=lambda p: p.name)
def test_training_reaches_models_only_through_the_models_layer(path) -> None:
    """The loops write the model folders and draw samples through pipeline.models, never
    through the inference modules that read them (pipeline.translate, pipeline.segment)."""
    inference = [
        f"line {line}: pipeline.{module}"
        for line, module in imports(path)
        if module.split(".")[0] in ("translate", "segment")
    ]
    assert not inference, f"pipeline/train/{path.name} imports inference modules: {inference}"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# Imports the modules named after the package on its command line, in order, and prints the
# first one after which the package is loaded (or nothing).
FIRST_TO_IMPORT = """\
import importlib, sys
package, *modules = sys.argv[1:]
for name in modules:
    importlib.import_module(name)
    if package in sys.modules:
        print(name)
        break
"""


def _first_to_import(package: str, modules: list[str]) -> str:
    """The first of `modules` (imported in order, in a fresh process) that loads `package`."""
    result = subprocess.run(
        [sys.executable, "-c", FIRST_TO_IMPORT, package, *modules],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_the_training_loops_and_the_benchmarks_import_without_mlflow() -> None:
    """They log to pipeline.tracking.base's trackers, so they run where mlflow is not installed
    (the benchmarks' GPU machines)."""
    modules = [
        _module_name(path) for path in [*TRAINING, *sorted((REPO_ROOT / "benchmarks").glob("*.py"))]
    ]
    assert "pipeline.train.segmentation" in modules and "benchmarks.training" in modules
    first = _first_to_import("mlflow", modules)
    assert first == "", f"importing {first} imports mlflow"


# The stages that build no segmentation net (check_params without a weights file).
NO_SEGMENTATION_NET = [
    "stages.check_params",
    "stages.demo_data",
    "stages.prepare",
    "stages.train_cyclegan",
    "stages.train_cut",
    "stages.translate",
    "stages.report",
]


def test_the_stages_that_build_no_segmentation_net_start_without_smp() -> None:
    """smp, timm and torchvision take about 2 s to import; a stage that builds no segmentation
    net does not wait for them."""
    first = _first_to_import("segmentation_models_pytorch", NO_SEGMENTATION_NET)
    assert first == "", f"importing {first} imports smp"
