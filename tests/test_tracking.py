"""Tracking store checks happen before training and name the store; runs carry their data and
the pipeline run that started them."""

from __future__ import annotations

import inspect
import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from pipeline.config import DataConfig, DatasetSpec
from pipeline.data.identity import SplitHasher, build_identity, read_identity, write_identity
from pipeline.tracking.base import NullTracker, Tracker, TrackingError
from pipeline.tracking.runs import MlflowTracker, open_tracker, pipeline_run, search_runs
from pipeline.tracking.store import check_tracking, project_root, tracking_uri
from tests.conftest import REPO_ROOT


def test_project_root_steps_out_of_dvc_temp_copies(tmp_path):
    inside = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "run" / "abc123"
    assert project_root(inside) == tmp_path / "repo"
    assert project_root(tmp_path / "repo") == tmp_path / "repo"


def test_default_store_is_sqlite_at_repo_root(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    assert tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


def test_unreachable_server_is_reported_before_training():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free now, nothing listens after close
    with pytest.raises(TrackingError, match=f"127.0.0.1:{port}.*unreachable"):
        check_tracking(f"http://127.0.0.1:{port}", timeout=2)


def test_locked_sqlite_store_is_reported(tmp_path):
    store = tmp_path / "mlflow.db"
    holder = sqlite3.connect(store)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TrackingError, match=r"mlflow\.db"):
            check_tracking(f"sqlite:///{store}", timeout=0.2)
    finally:
        holder.rollback()
        holder.close()
    check_tracking(f"sqlite:///{store}")


def test_run_logs_and_reopens(tmp_path):
    tracker = MlflowTracker("unit", "first", tags={"stage": "test", "variant": "x"})
    tracker.log_params({"a": 1, "b.c": "text"})
    tracker.log_metrics({"loss": 1.5, "nan_is_skipped": float("nan")}, step=3)
    tracker.finish()
    again = MlflowTracker("unit", "ignored", run_id=tracker.run_id)
    again.log_metrics({"val_miou": 0.5})
    again.finish()
    runs = search_runs("unit")
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["metrics.loss"] == 1.5 and row["metrics.val_miou"] == 0.5
    assert row["params.b.c"] == "text" and row["tags.variant"] == "x"
    assert "metrics.nan_is_skipped" not in runs.columns
    assert Path(tmp_path).exists()


def test_null_tracker_does_nothing_and_refuses_unknown_calls():
    null = open_tracker(True, "unit", "r", is_main=False)
    assert isinstance(null, NullTracker)
    null.log_metrics({"x": 1}, step=1)
    null.finish()
    assert null.run_id is None
    with pytest.raises(AttributeError, match="log_metric"):
        null.log_metric("x", 1)  # misspelt: log_metrics


def _public_methods(cls: type) -> dict[str, inspect.Signature]:
    return {
        name: inspect.signature(member)
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def test_both_trackers_have_exactly_the_interface():
    interface = _public_methods(Tracker)
    assert {"log_metrics", "log_segmentation_model", "finish"} <= interface.keys()
    assert Tracker.__abstractmethods__ == interface.keys()
    for cls in (MlflowTracker, NullTracker):
        assert _public_methods(cls) == interface, cls.__name__
        assert not hasattr(cls, "__getattr__"), cls.__name__


def test_experiment_is_for_model_training_and_keeps_artifacts_beside_the_store(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    MlflowTracker("kinds", "r").finish()
    client = MlflowClient()
    experiment = client.get_experiment_by_name("kinds")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(experiment.tags["mlflow.sharedViewState.variants"])
    assert "metrics.`val_miou`" in view["selectedColumns"]
    assert experiment.artifact_location == (tmp_path / "mlruns").as_uri()
    # An experiment made elsewhere without a kind gets one.
    bare = client.create_experiment("bare")
    MlflowTracker("bare", "r").finish()
    assert "mlflow.experimentKind" in client.get_experiment(bare).tags


def _prepared_dataset(root: Path) -> Path:
    data = DataConfig(
        DatasetSpec("gta5", "/data/x/gta5"),
        DatasetSpec("cityscapes", "/data/x/cs"),
        (8, 16),
        0,
        0.0,
        None,
    )
    hashers = {}
    for split in ("sim", "real_train", "real_val"):
        hashers[split] = SplitHasher()
        hashers[split].add(f"{split}_0", "ab" * 32)
        (root / split).mkdir(parents=True)
    write_identity(root, build_identity(data, hashers))
    return root


def test_log_data_records_dataset_inputs_params_and_tags(tmp_path):
    prepared = _prepared_dataset(tmp_path / "prepared")
    tracker = MlflowTracker("data", "r")
    tracker.log_data(
        {
            "training": [tmp_path / "translated", prepared / "sim"],  # not a prepared split
            "evaluation": [prepared / "real_val"],
        }
    )
    tracker.finish()
    run = MlflowClient().get_run(tracker.run_id)
    inputs = {
        i.dataset.name: {t.key: t.value for t in i.tags}["mlflow.data.context"]
        for i in run.inputs.dataset_inputs
    }
    assert inputs == {"x/sim": "training", "x/real_val": "evaluation"}
    identity = read_identity(prepared)
    assert run.data.tags["dataset"] == "x"
    assert run.data.tags["dataset_digest"] == identity.digest[:12]
    assert run.data.params["data.source.root"] == "/data/x/gta5"
    assert run.data.params["data.frames.sim"] == "1"
    assert tracker.dataset == identity


FAKE_DVC = """\
import os, subprocess, sys
env = {**os.environ, "DVC_STAGE": "stage"}
code = "from pipeline.tracking.runs import pipeline_run; print(pipeline_run())"
for _ in range(int(sys.argv[1])):
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
"""


def test_pipeline_run_is_shared_by_the_stages_one_dvc_process_starts(tmp_path, monkeypatch):
    fake = tmp_path / "dvc"  # what the stages see as their DVC parent process
    fake.write_text(FAKE_DVC)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

    def invocation(stages: int) -> list[str]:
        result = subprocess.run(
            [sys.executable, str(fake), str(stages)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        return result.stdout.split()

    first, second = invocation(2), invocation(1)
    assert first[0] == first[1] and len(first[0]) == 12
    assert second[0] != first[0]
    monkeypatch.delenv("DVC_STAGE", raising=False)
    assert pipeline_run() is None
