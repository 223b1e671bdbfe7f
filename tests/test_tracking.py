"""Tracking store checks happen before training and name the store."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

from pipeline import tracking


def test_project_root_steps_out_of_dvc_temp_copies(tmp_path):
    inside = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "run" / "abc123"
    assert tracking.project_root(inside) == tmp_path / "repo"
    assert tracking.project_root(tmp_path / "repo") == tmp_path / "repo"


def test_default_store_is_sqlite_at_repo_root(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


def test_unreachable_server_is_reported_before_training():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free now, nothing listens after close
    with pytest.raises(tracking.TrackingError, match=f"127.0.0.1:{port}.*unreachable"):
        tracking.check_tracking(f"http://127.0.0.1:{port}", timeout=2)


def test_locked_sqlite_store_is_reported(tmp_path):
    store = tmp_path / "mlflow.db"
    holder = sqlite3.connect(store)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(tracking.TrackingError, match=r"mlflow\.db"):
            tracking.check_tracking(f"sqlite:///{store}", timeout=0.2)
    finally:
        holder.rollback()
        holder.close()
    tracking.check_tracking(f"sqlite:///{store}")


def test_run_logs_and_reopens(tmp_path):
    tracker = tracking.Tracker("unit", "first", tags={"stage": "test", "variant": "x"})
    tracker.log_params({"a": 1, "b.c": "text"})
    tracker.log_metrics({"loss": 1.5, "nan_is_skipped": float("nan")}, step=3)
    tracker.finish()
    again = tracking.Tracker("unit", "ignored", run_id=tracker.run_id)
    again.log_metrics({"val_miou": 0.5})
    again.finish()
    runs = tracking.search_runs("unit")
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["metrics.loss"] == 1.5 and row["metrics.val_miou"] == 0.5
    assert row["params.b.c"] == "text" and row["tags.variant"] == "x"
    assert "metrics.nan_is_skipped" not in runs.columns
    assert Path(tmp_path).exists()


def test_null_tracker_accepts_everything():
    null = tracking.open_tracker(True, "unit", "r", is_main=False)
    null.log_metrics({"x": 1}, step=1)
    null.finish()
    assert null.run_id is None
