"""The stage door: MLflow run status, resume only of an interrupted run, one-line user errors,
and the stage's output kept in its log."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import yaml

from pipeline.io import read_json
from pipeline.tracking.runs import search_runs
from pipeline.train.checkpoint import list_checkpoints
from pipeline.weights import WeightsError
from stages.door import Training, failed_log, open_stage
from tests.conftest import REPO_ROOT, TEST_PARAMS
from tests.train.test_run import toy


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder with tests/params.yaml (experiment "door") as the stage's working directory."""
    params = yaml.safe_load(TEST_PARAMS.read_text())
    params["tracking"]["experiment"] = "door"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _status(run_id: str) -> str:
    return search_runs("door").set_index("run_id").loc[run_id, "status"]


def _training(workdir, data=b"frames") -> Training:
    (workdir / "data.bin").write_bytes(data)
    return Training(
        workdir / "model",
        settings_of=lambda params: {"lr": 0.1},
        inputs_of=lambda params: [workdir / "data.bin"],
    )


def test_a_killed_run_resumes_in_its_mlflow_run_and_a_finished_one_starts_over(
    workdir, capsys
) -> None:
    out = workdir / "model"
    door = dict(run_name="toy", training=_training(workdir))
    with pytest.raises(SystemExit) as stopped, open_stage("toy_stage", **door) as opened:
        toy(out, tracker=opened.tracker, signal_at=1)
    assert stopped.value.code == 128 + signal.SIGTERM
    first = opened.tracker.run_id
    assert _status(first) == "KILLED" and not (out / "run.json").exists()

    with open_stage("toy_stage", **door) as opened:
        summary, weights, _ = toy(out, tracker=opened.tracker)
    assert opened.tracker.run_id == first and summary["resumed_from"] == 2  # same run, resumed
    assert _status(first) == "FINISHED" and read_json(out / "run.json") == {"run_id": first}
    # A finished run keeps no checkpoint: it is never resumed.
    assert list_checkpoints(out / "checkpoints") == []

    # DVC reruns a finished stage when forced: the run is made again, in a new MLflow run.
    with open_stage("toy_stage", **door) as opened:
        again, weights_again, _ = toy(out, tracker=opened.tracker)
    assert opened.tracker.run_id != first and again["resumed_from"] == 0
    assert "this run finished before (dvc repro -f" in capsys.readouterr().err
    assert all((weights[k] == weights_again[k]).all() for k in weights)

    # Other data: a crash leaves the new run FAILED.
    door["training"] = _training(workdir, b"other frames")
    with pytest.raises(RuntimeError, match="power cut"), open_stage("toy_stage", **door) as opened:
        toy(out, tracker=opened.tracker, crash_at=0)
    assert _status(opened.tracker.run_id) == "FAILED"


def test_sigterm_outside_the_training_loop_ends_the_run_killed(workdir) -> None:
    with pytest.raises(SystemExit) as stopped, open_stage("toy_stage", run_name="toy") as opened:
        signal.raise_signal(signal.SIGTERM)
    assert stopped.value.code == 128 + signal.SIGTERM
    assert _status(opened.tracker.run_id) == "KILLED"


def test_a_bad_setting_is_one_line_without_a_traceback(tmp_path) -> None:
    params = yaml.safe_load(TEST_PARAMS.read_text())
    params["train_seg"]["iters"] = -5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = subprocess.run(
        [sys.executable, "-m", "stages.prepare", "--out", "p", "--report", "r.json"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "prepare: params.yaml: train_seg.iters = -5 is not allowed; expected an integer > 0"
    ]


def test_the_stage_output_is_kept_in_its_log(workdir) -> None:
    log = workdir / "logs" / "toy.log"
    with open_stage("toy_stage", log=log):
        print("a line the user should find later")
        sys.stderr.write("\rprogress 10%")
        print("done", file=sys.stderr)
    assert log.read_text() == "a line the user should find later\ndone\n"


def test_a_failed_stage_keeps_the_last_good_log_and_writes_its_own_beside_it(
    workdir, capsys
) -> None:
    log = workdir / "logs" / "toy.log"
    with open_stage("toy_stage", log=log):
        print("the good run")
    with pytest.raises(SystemExit) as failed, open_stage("toy_stage", log=log):
        print("the failing run")
        raise WeightsError("weights/r18.pth: not a state dict for this encoder (mit_b0)")
    assert failed.value.code == 2
    assert log.read_text() == "the good run\n"
    # The failed run's log ends with the one line that says what to fix.
    assert failed_log(log).read_text() == (
        "the failing run\ntoy_stage: weights/r18.pth: not a state dict for this encoder (mit_b0)\n"
    )
    assert f"{log} is the last successful run's log" in capsys.readouterr().err
    # A crash (not a user error) keeps the good log too; the next good run clears the failure.
    with pytest.raises(ZeroDivisionError), open_stage("toy_stage", log=log):
        print(1 / 0)
    assert log.read_text() == "the good run\n" and failed_log(log).is_file()
    with open_stage("toy_stage", log=log):
        print("fixed")
    assert log.read_text() == "fixed\n" and not failed_log(log).exists()
    assert sorted(p.name for p in log.parent.iterdir()) == ["toy.log"]


def test_a_forked_worker_dies_of_sigterm_inside_a_stage(workdir) -> None:
    """Process pools (the demo generator's, prepare's) end their forked workers with SIGTERM:
    a worker must die of it, not raise the stage's Interrupted (which left the demo_data stage
    waiting for its pool forever)."""
    import multiprocessing
    import time

    with open_stage("toy_stage"):
        worker = multiprocessing.get_context("fork").Process(target=time.sleep, args=(30,))
        worker.start()
        time.sleep(0.5)
        worker.terminate()  # SIGTERM
        worker.join(timeout=10)
    assert worker.exitcode == -signal.SIGTERM


def _gc_state(code: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", f"import gc, sys\n{code}"],
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.split()


def test_a_stage_process_collects_no_garbage_while_it_loads_and_as_usual_once_open() -> None:
    # `python -m stages.x` imports the package with argv[0] "-m".
    stage = "sys.argv = ['-m']\nimport stages\nprint(gc.isenabled())\nstages.loaded()\n"
    assert _gc_state(stage + "print(gc.isenabled(), gc.get_freeze_count() > 0)") == [
        "False",
        "True",
        "True",
    ]
    # A process that only imports the stages (a test, a notebook) keeps its collector as it was.
    other = "import stages\nprint(gc.isenabled())\nstages.loaded()\n"
    assert _gc_state(other + "print(gc.isenabled(), gc.get_freeze_count())") == [
        "True",
        "True",
        "0",
    ]
