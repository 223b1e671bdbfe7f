"""The one module that imports mlflow.

Loops get a `Tracker` and log scalars, images, tables and models by name; they never see mlflow.
The tracking store is `MLFLOW_TRACKING_URI` when set (for example a team's `mlflow server`),
otherwise a SQLite file at the repository root, also when DVC runs the stage in a temp copy.
Only rank 0 of a distributed run tracks anything; other ranks get a tracker that does nothing.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

import mlflow

DB_NAME = "mlflow.db"


class TrackingError(RuntimeError):
    """The tracking store cannot be reached or written; the message names it."""


def project_root(start: Path | None = None) -> Path:
    """The repository root, stepping out of DVC's experiment temp copies (.dvc/tmp/exps/...)."""
    path = (start or Path.cwd()).resolve()
    parts = path.parts
    for i in range(len(parts) - 2):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return path


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{project_root() / DB_NAME}"


def check_tracking(uri: str | None = None, timeout: float = 5.0) -> None:
    """Fail before training starts when the store is unreachable, locked or unwritable."""
    uri = uri or tracking_uri()
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as reply:
                if reply.status != 200:
                    raise TrackingError(f"MLflow server {uri} answered {reply.status} on /health")
        except (urllib.error.URLError, OSError) as err:
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({err}); start it, or unset "
                f"MLFLOW_TRACKING_URI to log to {project_root() / DB_NAME}"
            ) from err
        return
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(path, timeout=timeout)
            try:
                # Takes the write lock and lets go: fails now if another process holds it.
                connection.execute("BEGIN IMMEDIATE")
                connection.rollback()
            finally:
                connection.close()
        except sqlite3.Error as err:
            raise TrackingError(f"MLflow store {path} cannot be written ({err})") from err


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


class Tracker:
    """One MLflow run: created fresh, or reopened by id to add evaluation scores to it."""

    def __init__(
        self,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        run_id: str | None = None,
    ) -> None:
        mlflow.set_tracking_uri(tracking_uri())
        self._client = mlflow.MlflowClient()
        if run_id is None:
            experiment_id = _experiment_id(self._client, experiment)
            all_tags = {"mlflow.runName": run_name, **_default_tags(), **(tags or {})}
            run = self._retry(self._client.create_run, experiment_id, tags=all_tags)
            run_id = run.info.run_id
        else:
            self._retry(self._client.update_run, run_id, status="RUNNING")
            for key, value in (tags or {}).items():
                self._retry(self._client.set_tag, run_id, key, value)
        self.run_id = run_id

    @staticmethod
    def _retry(fn, *args, attempts: int = 3, **kwargs):
        # A shared SQLite store or server can be briefly busy; scores must not be dropped for it.
        for attempt in range(attempts):
            try:
                return fn(*args, **kwargs)
            except Exception as err:  # mlflow raises several unrelated types for I/O trouble
                if attempt == attempts - 1:
                    raise TrackingError(
                        f"MLflow ({tracking_uri()}): {fn.__name__} failed: {err}"
                    ) from err
                time.sleep(1.0 + attempt)
        return None

    def log_params(self, params: Mapping[str, Any]) -> None:
        entities = [mlflow.entities.Param(key, str(value)[:6000]) for key, value in params.items()]
        for start in range(0, len(entities), 100):
            self._retry(self._client.log_batch, self.run_id, params=entities[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        timestamp = int(time.time() * 1000)
        entities = [
            mlflow.entities.Metric(key, float(value), timestamp, step or 0)
            for key, value in metrics.items()
            if value is not None and np.isfinite(value)
        ]
        for start in range(0, len(entities), 500):
            self._retry(self._client.log_batch, self.run_id, metrics=entities[start : start + 500])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self._retry(self._client.set_tag, self.run_id, key, str(value))

    def log_image(self, name: str, image: np.ndarray, step: int | None = None) -> None:
        """Log a (H, W, 3) uint8 image; with `step`, as one frame of a step series."""
        if step is None:
            self._retry(self._client.log_image, self.run_id, image, artifact_file=f"{name}.png")
        else:
            self._retry(self._client.log_image, self.run_id, image, key=name, step=step)

    def log_figure(self, figure: Any, name: str) -> None:
        self._retry(self._client.log_figure, self.run_id, figure, f"{name}.png")

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self._retry(self._client.log_artifact, self.run_id, str(path), folder)

    def log_table(self, data: Any, name: str) -> None:
        """Log a pandas DataFrame as an MLflow table artifact, replacing an earlier one.

        (MLflow's own log_table appends rows to an existing table, so evaluating a run twice
        would double it; log_dict writes the same {"columns", "data"} layout and overwrites.)
        """
        table = {"columns": [str(c) for c in data.columns], "data": data.to_numpy().tolist()}
        self._retry(self._client.log_dict, self.run_id, table, f"{name}.json")

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        self._retry(self._client.log_dict, self.run_id, dict(data), f"{name}.json")

    def log_torch_model(self, model: Any, name: str, input_example: np.ndarray) -> None:
        """Log `model` as an MLflow PyTorch model that loads offline (requirements pinned)."""
        import torch

        with mlflow.start_run(run_id=self.run_id, nested=mlflow.active_run() is not None):
            mlflow.pytorch.log_model(
                model,
                name=name,
                input_example=input_example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            )

    def finish(self, status: str = "FINISHED") -> None:
        self._retry(self._client.set_terminated, self.run_id, status=status)


class NullTracker:
    """What non-zero ranks (and `tracking.enabled: false`) get: every call does nothing."""

    run_id: str | None = None

    def __getattr__(self, name: str):
        return lambda *args, **kwargs: None


def _experiment_id(client: Any, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name)
    except Exception:
        # Another process created it between our look-up and create.
        return client.get_experiment_by_name(name).experiment_id


def _default_tags() -> dict[str, str]:
    tags = {}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    return tags


def open_tracker(
    enabled: bool,
    experiment: str,
    run_name: str,
    tags: Mapping[str, str] | None = None,
    run_id: str | None = None,
    is_main: bool = True,
) -> Tracker | NullTracker:
    if not (enabled and is_main):
        return NullTracker()
    return Tracker(experiment, run_name, tags=tags, run_id=run_id)


def search_runs(experiment: str, filter_string: str = "") -> Any:
    """Runs of `experiment` as a pandas DataFrame (metrics.*, params.*, tags.* columns)."""
    mlflow.set_tracking_uri(tracking_uri())
    return mlflow.search_runs(experiment_names=[experiment], filter_string=filter_string)
