"""No module of pipeline/ imports from a layer above its own (see pipeline/__init__.py)."""

from __future__ import annotations

import ast

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
