"""dvc.yaml says what each stage reads, so `dvc repro` reruns exactly what a change touches.

The code deps of a stage are derived from its script's imports (within pipeline/ and stages/):
every file that can change the stage's outputs must be declared, and no other code file. Its
params are derived from what the script reads of params.yaml and pipeline/config's runtime marks.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import shutil
import subprocess
import sys
import typing

import yaml

from pipeline.config import Params
from tests.conftest import REPO_ROOT, TEST_PARAMS
from tests.doc_pages import docs_text
from tests.test_pipeline_e2e import ROUND

# Files that cannot change any output, so a change to them must not rerun stages (imports made
# only through them are not followed either):
NOT_OUTPUT_CODE = {
    "stages/door.py",  # params loading, logs, tracker and status: no output is written there
    "stages/launch.py",  # how the stage's processes start (one, or torchrun)
    "stages/__init__.py",  # when the stage process collects garbage
    # The MLflow door: what is logged, never what is written.
    *(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "pipeline" / "tracking").glob("*.py")),
    "pipeline/fingerprint.py",  # whether a checkpoint resumes, not what the run computes
    "pipeline/dist.py",  # process-group plumbing; the process count is a runtime setting
}
# The foreach stages that train one entry of a runtime-marked list depend on that entry.
OWN_ENTRY = {
    "train_seg": {"train_seg.variants.${key}"},
    "train_cut": {"cut.translators.${key}"},
    "ensemble": {"train_seg.ensembles.${key}"},
    # A round trains its variant's recipe again.
    "train_seg_round": {"train_seg.rounds.${key}", "train_seg.variants.${item.variant}"},
}
# Settings a stage reads that are runtime-marked for the runs but still shape its outputs.
EXTRA_PARAMS = {
    # Which rows the comparison lists.
    "report": {"train_seg.variants", "train_seg.ensembles", "train_seg.rounds"},
}


def _stages() -> dict[str, dict]:
    return yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]


def _body(stage: dict) -> dict:
    return stage["do"] if "foreach" in stage else stage


def _script(stage: dict) -> str:
    """The stage module the command runs: `stages.X` (behind stages.launch when present)."""
    modules = [m for m in re.findall(r"\bstages\.\w+", _body(stage)["cmd"]) if m != "stages.launch"]
    assert len(modules) == 1, _body(stage)["cmd"]
    return modules[0].replace(".", "/") + ".py"


def _module_file(module: str) -> str | None:
    path = REPO_ROOT / module.replace(".", "/")
    if path.with_suffix(".py").is_file():
        return str(path.with_suffix(".py").relative_to(REPO_ROOT))
    if (path / "__init__.py").is_file():
        return str((path / "__init__.py").relative_to(REPO_ROOT))
    return None


def _imports(file: str) -> set[str]:
    """Project files `file` imports anywhere in its body (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse((REPO_ROOT / file).read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pipeline.data import prepare` imports the module pipeline/data/prepare.py.
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            if name.split(".")[0] in ("pipeline", "stages"):
                parts = name.split(".")
                # Packages on the way in run their __init__ too.
                for depth in range(1, len(parts) + 1):
                    target = _module_file(".".join(parts[:depth]))
                    if target is not None:
                        found.add(target)
    return found


def code_deps(script: str) -> set[str]:
    """Every project file `script` runs, minus NOT_OUTPUT_CODE and package __init__ files that
    hold no code (only a docstring)."""
    seen, todo = set(), [script]
    while todo:
        file = todo.pop()
        if file in seen or file in NOT_OUTPUT_CODE:
            continue
        seen.add(file)
        todo.extend(_imports(file))
    return {file for file in seen if not _docstring_only(file)}


def _docstring_only(file: str) -> bool:
    body = ast.parse((REPO_ROOT / file).read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _field_type(cls: type, name: str) -> typing.Any:
    tp = typing.get_type_hints(cls)[name]
    options = [t for t in typing.get_args(tp) if t is not type(None)] or [tp]
    return options[0]


def params_read(script: str) -> set[str]:
    """The params.yaml keys a stage script reads: `params.<section>[.<field>...]`, a section or
    a field handed on whole counting as all of its non-runtime fields."""
    keys: set[str] = set()
    source = (REPO_ROOT / script).read_text()
    for chain in re.findall(r"\bparams((?:\.\w+)+)", source):
        cls, path, runtime = Params, [], False
        for name in chain.strip(".").split("."):
            if not (dataclasses.is_dataclass(cls) and name in _fields(cls)):
                break
            runtime |= bool(_fields(cls)[name].metadata.get("runtime"))
            path.append(name)
            cls = _field_type(cls, name)
        if not path or runtime:
            continue
        if dataclasses.is_dataclass(cls) and len(path) == 1:
            keys |= {
                f"{path[0]}.{f.name}"
                for f in dataclasses.fields(cls)
                if not f.metadata.get("runtime")
            }
        else:
            keys.add(".".join(path))
    return keys


def test_every_stage_declares_exactly_the_code_it_runs() -> None:
    wrong = {}
    for name, stage in _stages().items():
        declared = {d for d in _body(stage).get("deps", []) if str(d).endswith(".py")}
        expected = code_deps(_script(stage))
        if declared != expected:
            wrong[name] = {
                "undeclared": sorted(expected - declared),
                "not run": sorted(declared - expected),
            }
    assert not wrong, wrong


def test_every_stage_depends_on_exactly_the_settings_that_change_its_outputs() -> None:
    wrong = {}
    for name, stage in _stages().items():
        body = _body(stage)
        declared = {str(p) for p in body.get("params", []) if isinstance(p, str)}
        if name == "check_params":
            assert body["params"] == [{"params.yaml": None}]  # every key of the file
            continue
        expected = params_read(_script(stage)) | EXTRA_PARAMS.get(name, set())
        if name in OWN_ENTRY:
            # Each variant's / translator's own entry (the list as a whole is runtime-marked).
            expected |= OWN_ENTRY[name]
        if declared != expected:
            wrong[name] = {
                "missing": sorted(expected - declared),
                "extra": sorted(declared - expected),
            }
    assert not wrong, wrong


def test_every_stage_runs_after_the_settings_check() -> None:
    stages = _stages()
    (marker,) = _body(stages["check_params"])["outs"][0]
    for name, stage in stages.items():
        if name != "check_params":
            assert marker in _body(stage)["deps"], name


def test_dvc_itself_sees_every_imported_file_as_a_dep_of_every_stage(tmp_path) -> None:
    """What `dvc status` hashes: each stage as DVC resolves it (foreach expanded, ${} filled in)
    lists every file its script imports, so changing any of them shows the stage as changed."""
    from dvc.repo import Repo

    shutil.copy(REPO_ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    params = yaml.safe_load(TEST_PARAMS.read_text())
    # Opt-in in the shipped settings; named here so their foreach stages resolve too.
    params["cut"]["translators"] = {"cut": {}, "fastcut": {"mode": "fastcut"}}
    params["train_seg"]["ensembles"] = {"mbt": {"members": ["source_only", "fda", "cyclegan"]}}
    params["train_seg"]["rounds"] = {"fda_ssl": ROUND}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(
        [sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True
    )
    stages = _stages()
    resolved = Repo(str(tmp_path)).index.stages
    assert {stage.name.split("@")[0] for stage in resolved} == set(stages)
    for stage in resolved:
        deps = {dep.def_path for dep in stage.deps}
        missing = code_deps(_script(stages[stage.name.split("@")[0]])) - deps
        assert not missing, (stage.name, sorted(missing))


def test_readme_draws_the_chain_as_dvc_does_with_the_shipped_settings(tmp_path) -> None:
    """The docs' diagram of the chain is `dvc dag --md` of dvc.yaml with the shipped variants and no
    contrastive translator (they are opt-in)."""
    shutil.copy(REPO_ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    params = yaml.safe_load(TEST_PARAMS.read_text())
    params["cut"]["translators"] = {}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    dag = subprocess.run(
        [*dvc, "dag", "--md"], cwd=tmp_path, check=True, capture_output=True, text=True
    ).stdout.strip()
    readme = docs_text()
    assert dag in readme, "docs/chain.md's pipeline diagram differs from `dvc dag --md`"


def test_the_dependency_scan_sees_a_library_file_a_stage_imports() -> None:
    """The scan itself: train_seg runs the input normalisation and config, evaluate the model
    factory; the tracking door is not followed."""
    assert {"pipeline/data/tensors.py", "pipeline/config/train_seg.py"} <= code_deps(
        "stages/train_seg.py"
    )
    assert "pipeline/models/segmentation.py" in code_deps("stages/evaluate.py")
    assert not any(dep.startswith("pipeline/tracking/") for dep in code_deps("stages/evaluate.py"))


if __name__ == "__main__":
    # What dvc.yaml should declare, for a maintainer updating it: python -m tests.test_dvc_yaml
    for name, stage in _stages().items():
        if name != "check_params":
            script = _script(stage)
            print(f"{name}:\n  deps: {sorted(code_deps(script))}")
            print(f"  params: {sorted(params_read(script))}")
