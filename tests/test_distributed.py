"""The stages under torchrun with 2 gloo processes on CPU, as teams run them on N GPUs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.data.demo import DemoSpec
from tests.conftest import REPO_ROOT, tiny_workspace

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

TINY = {
    "data": {"size": [32, 64]},
    "cyclegan": {
        "ngf": 4,
        "ndf": 4,
        "iters": 8,
        "decay_from": 4,
        "crop": [32, 64],
        "checkpoint_every": 2,
        "log_every": 2,
        "sample_every": 4,
        "pool_size": 4,
    },
    "translate": {"batch": 3},
    "train_seg": {"iters": 6, "batch": 2, "crop": [32, 64], "checkpoint_every": 2, "log_every": 2},
    "evaluate": {"batch": 2},
}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    spec = DemoSpec(seed=1, n_source=10, n_target_train=10, n_target_val=5, size=(32, 64))
    return tiny_workspace(tmp_path_factory.mktemp("dist"), spec, TINY)


def _env(work: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "OMP_NUM_THREADS": "1",
    }


def _torchrun(nproc: int, module: str, *args: str) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", module, *args]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        module,
        *args,
    ]


def _run(work: Path, nproc: int, module: str, *args: str) -> str:
    result = subprocess.run(
        _torchrun(nproc, module, *args),
        cwd=work,
        env=_env(work),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout + result.stderr


def _runs(work: Path, stage: str) -> list[str]:
    code = (
        "import mlflow, json; mlflow.set_tracking_uri('sqlite:///mlflow.db');"
        "r = mlflow.search_runs(experiment_names=['sim2real']);"
        f"print(json.dumps(r[r['tags.stage'] == '{stage}']['run_id'].tolist()))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cyclegan_two_processes_then_translate_sharded(work):
    _run(
        work,
        2,
        "stages.train_cyclegan",
        "--prepared",
        "data/prepared",
        "--out",
        "models/cyclegan",
        "--metrics",
        "cyclegan.json",
        "--curves",
        "curves.csv",
    )
    # Rank 0 alone writes the run record; a finished run keeps no checkpoint.
    folder = work / "models/cyclegan/checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["run_record.json"]
    assert len(_runs(work, "train_cyclegan")) == 1
    metrics = json.loads((work / "cyclegan.json").read_text())
    assert metrics["steps"] == 8

    _run(
        work,
        2,
        "stages.translate",
        "--prepared",
        "data/prepared",
        "--generator",
        "models/cyclegan",
        "--out",
        "data/translated",
        "--metrics",
        "translate.json",
    )
    names = json.loads((work / "data/prepared/sim/names.json").read_text())
    written = sorted(p.stem for p in (work / "data/translated/images").glob("*.png"))
    assert written == sorted(names)
    assert json.loads((work / "translate.json").read_text())["translated"] == len(names)
    assert np.load(work / "data/translated/images.npy").shape[0] == len(names)


def test_segmentation_two_processes_and_evaluation_equals_one_process(work):
    _run(work, 2, "stages.train_seg", "--variant", "oracle", "--out", "models/seg/oracle")
    assert (work / "models/seg/oracle/model.safetensors").is_file()
    assert len(_runs(work, "train_seg")) == 1
    scores = {}
    for nproc in (1, 2):
        _run(
            work,
            nproc,
            "stages.evaluate",
            "--variant",
            "oracle",
            "--model",
            "models/seg/oracle",
            "--val",
            "data/prepared/real_val",
            "--metrics",
            f"m{nproc}.json",
            "--confusion",
            f"c{nproc}.csv",
            "--predictions",
            f"p{nproc}.npy",
        )
        scores[nproc] = json.loads((work / f"m{nproc}.json").read_text())
    assert scores[1] == scores[2]
    assert (work / "c1.csv").read_bytes() == (work / "c2.csv").read_bytes()


def _status(work: Path, run_id: str) -> str:
    code = (
        "import mlflow; mlflow.set_tracking_uri('sqlite:///mlflow.db');"
        f"print(mlflow.MlflowClient().get_run('{run_id}').info.status)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True)
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("stage", "first", "second"), [("train_seg", 2, 1), ("train_cyclegan", 1, 2)]
)
def test_a_run_stopped_by_sigterm_resumes_under_another_world_size(work, stage, first, second):
    """Both loops, through the shared run layer: SIGTERM writes a checkpoint, another number of
    processes continues from it, in the same MLflow run."""
    out = f"models/resume_{stage}"
    params = yaml.safe_load((work / "params.yaml").read_text())
    # Long enough to interrupt after the first checkpoint.
    iters = params[stage if stage == "train_seg" else "cyclegan"]["iters"] = 120
    params["train_seg"]["variants"]["resume"] = params["train_seg"]["variants"]["oracle"]
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    args = ["--out", out]
    if stage == "train_seg":
        args += ["--variant", "resume"]
    else:
        args += ["--prepared", "data/prepared", "--metrics", "r.json", "--curves", "r.csv"]
    process = subprocess.Popen(
        _torchrun(first, f"stages.{stage}", *args),
        cwd=work,
        env=_env(work),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not list((work / out / "checkpoints").glob("step_*.pt")) and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGTERM)  # what a scheduler sends before preemption
    process.wait(timeout=120)
    saved = sorted((work / out / "checkpoints").glob("step_*.pt"))
    assert saved, process.stdout.read().decode()[-3000:]
    stopped_at = int(saved[-1].stem.split("_")[1])
    assert 0 < stopped_at < iters
    run_id = json.loads((work / out / "checkpoints" / "run_record.json").read_text())["run_id"]

    log = _run(work, second, f"stages.{stage}", *args)
    assert f"at step {stopped_at} of {iters} with fresh random streams ({first} -> {second}" in log
    # Finished: the checkpoints served only a resume and are gone; the record says finished.
    assert list((work / out / "checkpoints").glob("step_*.pt")) == []
    assert json.loads((work / out / "checkpoints" / "run_record.json").read_text())["finished"]
    assert (
        work / out / ("model.safetensors" if stage == "train_seg" else "gen_sim2real.safetensors")
    ).is_file()
    assert json.loads((work / out / "run.json").read_text()) == {"run_id": run_id}
    assert _status(work, run_id) == "FINISHED"
