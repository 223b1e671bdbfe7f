"""The real DVC pipeline, every stage, on a tiny generated dataset in a temp repo.

Slow by nature (a minute or two on 2 cores): it runs `dvc repro` exactly as a user does, then
checks the outputs, that a second `dvc repro` does no work, and that changing one train_seg setting
reruns only what depends on it.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import TEST_PARAMS, temp_checkout
from tests.doc_pages import docs_text

pytestmark = pytest.mark.slow

TINY = {
    "data": {"size": [64, 128]},
    "demo_data": {"n_source": 12, "n_target_train": 12, "n_target_val": 6, "size": [64, 128]},
    "cyclegan": {
        "ngf": 8,
        "ndf": 8,
        "iters": 12,
        "decay_from": 6,
        "crop": [32, 64],
        "checkpoint_every": 5,
        "log_every": 4,
        "sample_every": 6,
    },
    # A contrastive translator beside CycleGAN, and a variant trained on its translation.
    "cut": {
        "ngf": 8,
        "ndf": 8,
        "num_patches": 16,
        "netF_nc": 16,
        "iters": 12,
        "decay_from": 6,
        "crop": [32, 64],
        "checkpoint_every": 5,
        "log_every": 4,
        "sample_every": 6,
    },
    "translate": {"batch": 4},
    "train_seg": {
        "iters": 6,
        "batch": 2,
        "crop": [32, 64],
        "checkpoint_every": 3,
        "log_every": 2,
        "variants": {
            "fastcut": {"images": "data/translated_fastcut", "labels": "data/prepared/sim"}
        },
    },
    "evaluate": {"batch": 4},
    "report": {"n_samples": 2},
}


def _merge(base: dict, override: dict) -> dict:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _run(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (
        f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    )
    return result


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    params = _merge(yaml.safe_load(TEST_PARAMS.read_text()), TINY)
    params["cut"]["translators"] = {"fastcut": {"mode": "fastcut"}}
    # The opt-in rows too: a semi-supervised variant and FDA's multi-band transfer (three
    # trained variants averaged; any three here, the run only has to go through).
    params["train_seg"]["variants"]["sim_ssl2"] = SEMI_SUPERVISED
    params["train_seg"]["ensembles"] = {"mbt": {"members": ["source_only", "fda", "cyclegan"]}}
    params["train_seg"]["rounds"] = {"ssl": ROUND}
    env = temp_checkout(root, params)
    first = _run([sys.executable, "-m", "dvc", "repro"], root, env)
    return root, env, first


SEMI_SUPERVISED = {
    "images": "data/prepared/sim",
    "labels": "data/prepared/sim",
    "target_labels": {"split": "data/prepared/real_train", "frames": 2, "seed": 0, "weight": 1.0},
}
# The shipped variants, then the CUT one and the semi-supervised one this test adds.
VARIANTS = [
    *yaml.safe_load(TEST_PARAMS.read_text())["train_seg"]["variants"],
    "fastcut",
    "sim_ssl2",
]
# FDA's self-supervised round: the ensemble labels real_train, fda's recipe trains again.
ROUND = {
    "variant": "fda",
    "images": "data/prepared/sim",
    "labels": "data/prepared/sim",
    "pseudo_labels": "mbt",
    "split": "data/prepared/real_train",
    "quantile": 0.66,
    "max_threshold": 0.9,
    "weight": 1.0,
}
# The comparison's rows: the variants, then the ensemble and the round; the marks beside them.
ROWS = [*VARIANTS, "mbt", "ssl"]
MARKS = {
    "sim_ssl2": " (semi-supervised, 2 target labels)",
    "mbt": " (ensemble)",
    "ssl": " (self-supervised round)",
}


def test_every_stage_writes_its_outputs(repo):
    root, env, _ = repo
    for variant in ROWS:
        metrics = json.loads((root / "reports" / "metrics" / f"{variant}.json").read_text())
        assert 0.0 <= metrics["pixel_accuracy"] <= 1.0
        assert len(metrics["per_class_iou"]) == 19
    translated = sorted(p.name for p in (root / "data" / "translated" / "images").glob("*.png"))
    sim = json.loads((root / "data" / "prepared" / "sim" / "names.json").read_text())
    assert translated == [f"{name}.png" for name in sim]
    by_fastcut = sorted(p.name for p in (root / "data/translated_fastcut/images").glob("*.png"))
    assert by_fastcut == translated
    generator = json.loads((root / "models/fastcut/generator.json").read_text())
    assert generator["family"] == "fastcut"
    comparison = (root / "reports" / "comparison.md").read_text()
    assert all(f"| {v}{MARKS.get(v, '')} |" in comparison for v in ROWS)
    summary = comparison.split("## Differences")[0].splitlines()
    rows = [line.split(" |")[0].removeprefix("| ") for line in summary if line.startswith("| ")]
    assert rows == ["variant", *(f"{v}{MARKS.get(v, '')}" for v in ROWS)]
    assert "- **sim_ssl2**: semi-supervised: also trained on 2 labelled frames" in comparison
    # The ensemble's model folder averages its three members' nets.
    assert json.loads((root / "models/seg/mbt/model.json").read_text())["ensemble"] == {
        "members": ["source_only", "fda", "cyclegan"]
    }
    # The translation-quality table has a row per translator, CycleGAN first.
    quality = comparison.split("## Translation quality")[1]
    assert quality.index("| cyclegan |") < quality.index("| fastcut |")
    assert (root / "reports" / "figures" / "per_class_iou.png").stat().st_size > 0
    assert (root / "mlflow.db").is_file()
    # Every stage kept its output in a log, without progress-bar refreshes.
    log = (root / "logs" / "train_seg_oracle.log").read_text()
    assert log and "\r" not in log
    assert "oracle: mIoU" in (root / "logs" / "evaluate_oracle.log").read_text()
    # README is no output of the pipeline: the stages leave it as it was.
    committed = _run(["git", "show", "HEAD:README.md"], root, env).stdout
    assert (root / "README.md").read_text() == committed


def test_mlflow_has_one_run_per_variant_with_scores(repo):
    root, env, _ = repo
    code = (
        "import json, mlflow; mlflow.set_tracking_uri('sqlite:///mlflow.db');"
        "runs = mlflow.search_runs(experiment_names=['sim2real']);"
        "seg = runs[runs['tags.stage'] == 'train_seg'];"
        "print(json.dumps(sorted(seg['tags.variant'].tolist())));"
        "print(json.dumps(bool(seg['metrics.val_miou'].notna().all())))"
    )
    out = _run([sys.executable, "-c", code], root, env).stdout.splitlines()
    assert json.loads(out[0]) == sorted([*VARIANTS, "ssl"])
    assert json.loads(out[1]) is True


def test_second_repro_does_nothing_and_one_setting_reruns_only_its_stages(repo):
    root, env, _ = repo
    status = _run([sys.executable, "-m", "dvc", "status", "--json"], root, env)
    assert json.loads(status.stdout or "{}") == {}
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train_seg"]["lr"] = params["train_seg"]["lr"] / 2
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    changed = set(
        json.loads(_run([sys.executable, "-m", "dvc", "status", "--json"], root, env).stdout)
    )
    stale = {name.split(":")[-1] for name in changed}
    assert stale == {f"train_seg@{v}" for v in VARIANTS} | {"train_seg_round@ssl", "check_params"}
    params["train_seg"]["lr"] = params["train_seg"]["lr"] * 2
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run([sys.executable, "-m", "dvc", "repro", "check_params"], root, env)


def _python(code: str, root: Path, env: dict) -> str:
    return _run([sys.executable, "-c", code], root, env).stdout


def test_runs_of_one_repro_share_a_pipeline_run_and_name_their_dataset(repo):
    root, env, _ = repo
    code = (
        "import json, mlflow; mlflow.set_tracking_uri('sqlite:///mlflow.db');"
        "runs = mlflow.search_runs(experiment_names=['sim2real']);"
        "models = mlflow.MlflowClient().search_registered_models();"
        "print(json.dumps({"
        "'pipeline_run': sorted(set(runs['tags.pipeline_run'])),"
        "'dataset': sorted(set(runs['tags.dataset'])),"
        "'stages': sorted(runs['tags.stage']),"
        "'registered': sorted(m.name for m in models)}))"
    )
    seen = json.loads(_python(code, root, env))
    assert len(seen["pipeline_run"]) == 1 and seen["pipeline_run"][0]
    assert seen["dataset"] == ["demo"]
    assert seen["stages"] == [
        "ensemble",
        "report",
        "train_cut",
        "train_cyclegan",
        *["train_seg"] * (len(VARIANTS) + 1),  # the round trains in a train_seg run too
    ]
    assert seen["registered"] == [f"sim2real-{v}" for v in sorted(ROWS)]


# The docs' command for a dvc exp show that fits a 200-column terminal.
EXP_SHOW = (
    "dvc exp show --drop '.*' --keep "
    "'Experiment$|data\\.source\\.root$|.*/(source_only|cyclegan|cyclegan_st|oracle)\\.json:miou$'"
)


def test_dvc_views_fit_and_plots_draw_the_right_fields(repo):
    root, env, _ = repo
    readme = docs_text()
    assert EXP_SHOW in readme
    dvc = [sys.executable, "-m", "dvc"]
    # An experiment row too: its name widens the first column.
    _run([*dvc, "exp", "save", "-n", "wide-experiment-name"], root, env)
    args = [*dvc, "exp", "show", "--no-pager", *shlex.split(EXP_SHOW)[3:]]
    table = _run(args, root, {**env, "COLUMNS": "200"}).stdout
    assert "wide-experiment-name" in table and "metrics/cyclegan.json:miou" in table
    assert "…" not in table and max(len(line) for line in table.splitlines()) <= 200

    metrics = json.loads(_run([*dvc, "metrics", "show", "--json"], root, env).stdout)
    files = metrics[next(iter(metrics))]["data"]
    assert sorted(files) == [f"metrics/{v}.json" for v in sorted(ROWS)]
    assert all(len(f["data"]) <= 6 for f in files.values())

    plots = json.loads(_run([*dvc, "plots", "show", "--json"], root, env).stdout)["data"]
    per_class = plots["reports/per_class_iou/cyclegan.csv"][0]["content"]["encoding"]
    assert per_class["y"] == {"field": "class", "type": "nominal", "title": "class"}
    assert per_class["x"]["field"] == "iou_percent" and per_class["x"]["type"] == "quantitative"
    losses = plots["cyclegan_losses"][0]["content"]
    drawn = {point["field"] for point in losses["data"]["values"]}
    # Every loss the run logged, as its curves CSV names them (the CyCADA terms only when their
    # weight is on), and nothing else: the learning rate is no loss.
    header = (root / "reports" / "cyclegan_losses.csv").read_text().splitlines()[0].split(",")
    assert drawn == {name for name in header if name.startswith("loss_")}
    assert sum(1 for name in plots if "cyclegan_losses" in name) == 1


def test_push_then_a_fresh_clone_pulls_the_models_and_data(repo, tmp_path_factory):
    root, env, _ = repo
    store, clone = tmp_path_factory.mktemp("store"), tmp_path_factory.mktemp("clone") / "repo"
    dvc = [sys.executable, "-m", "dvc"]
    _run([*dvc, "remote", "add", "-d", "store", str(store)], root, env)
    _run([*dvc, "push"], root, env)
    ignores = _run(["git", "ls-files", "--others", "--exclude-standard"], root, env).stdout
    tracked = [p for p in ignores.split() if p.endswith(".gitignore")]
    _run(["git", "add", "dvc.lock", ".dvc/config", *tracked], root, env)
    _run(["git", "commit", "-qm", "results"], root, env)
    _run(["git", "clone", "-q", str(root), str(clone)], root, env)
    _run([*dvc, "pull"], clone, env)
    pulled = [
        "models/cyclegan/gen_sim2real.safetensors",
        *(f"models/seg/{v}/model.safetensors" for v in ROWS),
        "data/prepared/sim/images.npy",
        "data/prepared/dataset.json",
        "data/translated/images.npy",
    ]
    for path in pulled:
        assert (clone / path).read_bytes() == (root / path).read_bytes(), path
    demo = sorted(p.relative_to(root) for p in (root / "data" / "demo").rglob("*.png"))
    assert demo and all((clone / p).read_bytes() == (root / p).read_bytes() for p in demo)


def test_a_bad_setting_stops_repro_before_any_output_is_deleted(repo):
    root, env, _ = repo
    original = (root / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["train_seg"]["iters"] = -5
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    kept = ["models/seg/oracle/run.json", "models/seg/oracle/curve.csv", "reports/data.json"]
    before = {path: (root / path).read_bytes() for path in kept}
    try:
        result = subprocess.run(
            [sys.executable, "-m", "dvc", "repro"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
        )
    finally:
        (root / "params.yaml").write_text(original)
    assert result.returncode != 0
    assert "train_seg.iters = -5 is not allowed" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert {path: (root / path).read_bytes() for path in kept} == before
    _run([sys.executable, "-m", "dvc", "repro", "check_params"], root, env)


def test_a_forced_rerun_trains_again_and_the_new_run_is_scored(repo):
    root, env, _ = repo
    dvc = [sys.executable, "-m", "dvc"]
    first = json.loads((root / "models/seg/oracle/run.json").read_text())["run_id"]
    forced = _run([*dvc, "repro", "-f", "-s", "train_seg@oracle"], root, env)
    assert "resuming" not in forced.stderr and "training starts over" in forced.stderr
    second = json.loads((root / "models/seg/oracle/run.json").read_text())["run_id"]
    assert second != first
    changed = set(json.loads(_run([*dvc, "status", "--json"], root, env).stdout))
    assert "evaluate@oracle" in {name.split(":")[-1] for name in changed}
    _run([*dvc, "repro"], root, env)
    code = (
        "import json, mlflow; mlflow.set_tracking_uri('sqlite:///mlflow.db');"
        f"run = mlflow.get_run('{second}');"
        "print(json.dumps([run.info.status, run.data.metrics.get('val_miou')]))"
    )
    status, miou = json.loads(_python(code, root, env))
    assert status == "FINISHED" and miou is not None
