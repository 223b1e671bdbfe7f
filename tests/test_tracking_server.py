"""Train and evaluate against a real `mlflow server` with proxied artifacts
(`--artifacts-destination`), as a team sharing one tracking server does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest

from pipeline.tracking.base import TrackingError
from pipeline.tracking.runs import MlflowTracker, search_runs
from tests.test_evaluate import make_repo, train_and_evaluate

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT_S = 90


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("server")


@pytest.fixture(scope="module")
def server(server_root) -> Iterator[str]:
    """A tracking server on a free port, its own SQLite store and artifact folder; killed after.
    Started once for the module (it takes half a minute); tests use their own experiments."""
    port = _free_port()
    log_path = server_root / "server.log"
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        f"--backend-store-uri=sqlite:///{server_root / 'server.db'}",
        f"--artifacts-destination={server_root / 'artifacts'}",
        "--host=127.0.0.1",
        f"--port={port}",
        "--workers=1",
    ]
    with open(log_path, "w") as log:
        # Its own process group, so teardown stops the server's worker processes too.
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=server_root, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"mlflow server exited with {process.returncode}:\n{log_path.read_text()}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server unhealthy after {STARTUP_TIMEOUT_S} s:\n{log_path.read_text()}"
                )
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


def test_train_and_evaluate_log_one_run_to_a_tracking_server(
    server, server_root, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    monkeypatch.chdir(tmp_path)
    make_repo(tmp_path)
    train_and_evaluate("source_only")

    runs = search_runs("tiny")
    assert len(runs) == 1
    row = runs.iloc[0]
    assert row["tags.variant"] == "source_only" and row["status"] == "FINISHED"
    assert 0.0 <= row["metrics.val_miou"] <= 1.0
    assert row["metrics.val_pixel_accuracy"] > 0.0
    # Artifacts went through the server into its artifact folder, not next to the client.
    stored = {p.name for p in (server_root / "artifacts").rglob("*")}
    assert {"MLmodel", "model.safetensors", "val_confusion.json", "val_per_class.json"} <= stored
    assert not (tmp_path / "mlruns").exists()
    # Another client loads the registered model through the server alone.
    model = mlflow.pyfunc.load_model("models:/tiny-source_only/1")
    frame = np.random.default_rng(0).integers(0, 256, (1, 100, 150, 3), dtype=np.uint8)
    assert model.predict(frame).shape == (1, 100, 150)


def test_an_experiment_with_client_side_artifacts_is_refused(server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    mlflow.set_tracking_uri(server)
    mlflow.MlflowClient().create_experiment("made-locally", str(tmp_path / "client-disk"))
    with pytest.raises(TrackingError, match=r"made-locally.*client-disk, a local path"):
        MlflowTracker("made-locally", "r")
