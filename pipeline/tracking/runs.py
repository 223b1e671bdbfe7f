"""MLflow runs: `MlflowTracker`, the `Tracker` that logs to one run, and how stages get one.

Only rank 0 of a distributed run tracks anything; other ranks get a tracker that does nothing.
A run whose process is ended by SIGTERM or SIGHUP is ended KILLED first (pipeline.tracking.signals).

Every run is tagged with the git commit, the DVC experiment name (under `dvc exp run`) and a
`pipeline_run` id shared by every stage that one `dvc repro` / `dvc exp run` starts, and carries
the data it read (`Tracker.log_data`: MLflow dataset inputs, params and tags from the prepare
stage's dataset identity). Models go through pipeline.tracking.models.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import psutil
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from pipeline.data.identity import SHORT_DIGEST, identity_of_split
from pipeline.models.model_folder import weights_digest
from pipeline.tracking import models, signals
from pipeline.tracking.base import NullTracker, Tracker, TrackingError
from pipeline.tracking.models import MODEL_DIGEST_TAG
from pipeline.tracking.store import (
    artifact_location,
    is_local_path,
    open_store,
    retry,
    tracking_uri,
)

# MLflow's UI has no server-side default columns; it does open a view saved as an experiment tag
# by its key (the UI's "share" link): UI/#/experiments/<id>?viewStateShareKey=variants shows the
# variant runs, newest first, with their scores, data and pipeline run as columns.
VARIANTS_VIEW_KEY = "variants"
VARIANTS_VIEW = {
    "searchFilter": "tags.stage = 'train_seg'",
    "orderByKey": "attributes.start_time",
    "orderByAsc": False,
    "selectedColumns": [
        "tags.`variant`",
        "tags.`dataset`",
        "metrics.`val_miou`",
        "metrics.`val_pixel_accuracy`",
        "metrics.`val_mean_class_accuracy`",
        "metrics.`val_fwiou`",
        "tags.`git_commit`",
        "tags.`pipeline_run`",
        "attributes.`Dataset`",
        "attributes.`Models`",
    ],
}
EXPERIMENT_TAGS = {
    # Model training, not GenAI: MLflow 3 UIs that read the kind open the runs, not the traces
    # overview (3.17 follows a per-browser switch instead, which the link in docs/team.md sets).
    "mlflow.experimentKind": "custom_model_development",
    f"mlflow.sharedViewState.{VARIANTS_VIEW_KEY}": json.dumps(VARIANTS_VIEW),
}


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def pipeline_run() -> str | None:
    """An id shared by the stages of one `dvc repro` or `dvc exp run`; None outside DVC.

    DVC starts every stage command as a child of its own process and tells it nothing about the
    invocation (only DVC_STAGE and, for experiments, DVC_EXP_NAME), so the id is that DVC
    process: its pid and start time (unique on this host), the host and the experiment.
    """
    if "DVC_STAGE" not in os.environ:
        return None
    for process in psutil.Process().parents():
        try:
            command = process.cmdline()
        except psutil.Error:
            continue
        # `.../bin/dvc repro` or `python -m dvc repro`
        if command[1:3] == ["-m", "dvc"] or any(Path(part).name == "dvc" for part in command[:2]):
            key = [
                platform.node(),
                process.pid,
                process.create_time(),
                os.environ.get("DVC_EXP_NAME", ""),
            ]
            return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:SHORT_DIGEST]
    return None


class MlflowTracker(Tracker):
    """One MLflow run: created fresh, resumed by id (a training run continued after a kill), or
    reopened by id to add a later stage's scores to it (`adds_to`).

    Until `finish`, a SIGTERM or SIGHUP that would end the process ends the run KILLED first
    (pipeline.tracking.signals). A run a later stage adds to keeps the status its training gave
    it: nothing the later stage does (nor its death) marks the training unfinished.
    """

    def __init__(
        self,
        experiment: str,
        run_name: str,
        tags: Mapping[str, str] | None = None,
        run_id: str | None = None,
        adds_to: bool = False,
        log_models: bool = True,
    ) -> None:
        open_store()
        self.client = mlflow.MlflowClient()
        # Its models register as "<experiment>-<variant>".
        self.experiment = experiment
        # Reopened to add a later stage's scores: `finish` leaves the run's status as it was.
        self.adds_to = adds_to
        # tracking.log_models: false keeps model files out of MLflow (the run names them).
        self.log_models = log_models
        self.dataset = None
        if adds_to:
            assert run_id is not None
            self.run_id = run_id
            return
        if run_id is None:
            experiment_id = retry(_experiment_id, self.client, experiment)
            all_tags = {"mlflow.runName": run_name, **_default_tags(), **(tags or {})}
            run = retry(self.client.create_run, experiment_id, tags=all_tags)
            run_id = run.info.run_id
        else:
            retry(self.client.update_run, run_id, status="RUNNING")
            for key, value in (tags or {}).items():
                retry(self.client.set_tag, run_id, key, value)
        self.run_id = run_id
        signals.watch(self)

    def log_params(self, params: Mapping[str, Any]) -> None:
        entities = [mlflow.entities.Param(key, str(value)[:6000]) for key, value in params.items()]
        for start in range(0, len(entities), 100):
            retry(self.client.log_batch, self.run_id, params=entities[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        timestamp = int(time.time() * 1000)
        entities = [
            mlflow.entities.Metric(key, float(value), timestamp, step or 0)
            for key, value in metrics.items()
            if value is not None and np.isfinite(value)
        ]
        for start in range(0, len(entities), 500):
            retry(self.client.log_batch, self.run_id, metrics=entities[start : start + 500])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            retry(self.client.set_tag, self.run_id, key, str(value))

    def log_image(self, name: str, image: np.ndarray, step: int | None = None) -> None:
        if step is None:
            retry(self.client.log_image, self.run_id, image, artifact_file=f"{name}.png")
        else:
            retry(self.client.log_image, self.run_id, image, key=name, step=step)

    def log_figure(self, figure: Any, name: str) -> None:
        retry(self.client.log_figure, self.run_id, figure, f"{name}.png")

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        retry(self.client.log_artifact, self.run_id, str(path), folder)

    def log_table(self, data: Any, name: str) -> None:
        # MLflow's own log_table appends rows to an existing table, so evaluating a run twice
        # would double it; log_dict writes the same {"columns", "data"} layout and overwrites.
        table = {"columns": [str(c) for c in data.columns], "data": data.to_numpy().tolist()}
        retry(self.client.log_dict, self.run_id, table, f"{name}.json")

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        retry(self.client.log_dict, self.run_id, dict(data), f"{name}.json")

    def log_data(self, used: Mapping[str, Sequence[str | Path]]) -> None:
        """MLflow dataset inputs ("<dataset>/<split>", digest of the split's files, the raw root
        as source) for each prepared split folder in `used`, and the dataset's roots, size and
        digest as params and tags. Folders outside a prepared dataset (a translated split) are
        passed over."""
        inputs = []
        for context, roots in used.items():
            for root in roots:
                found = identity_of_split(root)
                if found is None:
                    continue
                identity, split = found
                info = identity.splits[split]
                dataset = Dataset(
                    name=f"{identity.name}/{split}",
                    digest=info["sha256"][:SHORT_DIGEST],
                    source_type="local",
                    source=json.dumps({"uri": identity.root_of(split)}),
                    profile=json.dumps({"frames": info["frames"], "size": list(identity.size)}),
                )
                inputs.append(
                    DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
                )
                self.dataset = identity
        if self.dataset is None:
            return
        self.log_params(self.dataset.params())
        self.set_tags(self.dataset.tags())
        retry(self.client.log_inputs, self.run_id, datasets=inputs)

    def log_segmentation_model(
        self, model_dir: str | Path, variant: str, example: np.ndarray
    ) -> None:
        """Log a model folder (models.model_folder) as a pyfunc named `variant` and register it as
        "<experiment>-<variant>" (pipeline.tracking.models.log_segmentation_model)."""
        if not self.log_models:
            # tracking.log_models false: the files stay in DVC's cache only; the run names them.
            self.set_tags(
                {"model_folder": str(model_dir), MODEL_DIGEST_TAG: weights_digest(model_dir)}
            )
            return
        models.log_segmentation_model(
            self.client,
            self.run_id,
            f"{self.experiment}-{variant}",
            model_dir,
            variant,
            example,
            self.dataset,
        )

    def log_torch_model(self, model: Any, name: str, input_example: np.ndarray) -> None:
        """An MLflow PyTorch model (pipeline.tracking.models.log_torch_model)."""
        if not self.log_models:
            return  # tracking.log_models false: the generator file is in DVC's cache only
        models.log_torch_model(self.run_id, model, name, input_example)

    def finish(self, status: str = "FINISHED") -> None:
        if self.adds_to:
            return
        retry(self.client.set_terminated, self.run_id, status=status)
        signals.unwatch(self)


def _experiment_id(client: Any, name: str) -> str:
    """The experiment's id, created (with its kind and the variants view) when missing.

    Through a server, an experiment whose artifacts live at a local path (one first made with a
    local store) is refused: every client would write that run's artifacts to its own disk.
    """
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            client.create_experiment(
                name, artifact_location=artifact_location(), tags=EXPERIMENT_TAGS
            )
        except Exception:
            # Another process may have created it between our look-up and create.
            if client.get_experiment_by_name(name) is None:
                raise
        experiment = client.get_experiment_by_name(name)
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")) and is_local_path(experiment.artifact_location):
        raise TrackingError(
            f"MLflow experiment {name!r} on {uri} keeps artifacts at "
            f"{experiment.artifact_location}, a local path: each client would write its "
            f"artifacts to its own disk. Log to a new experiment (tracking.experiment in "
            f"params.yaml), created through the server, which stores artifacts itself."
        )
    for key, value in EXPERIMENT_TAGS.items():
        if experiment.tags.get(key) is None:
            client.set_experiment_tag(experiment.experiment_id, key, value)
    return experiment.experiment_id


def _default_tags() -> dict[str, str]:
    tags = {}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
        tags["git_commit"] = commit
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
    run = pipeline_run()
    if run:
        tags["pipeline_run"] = run
    return tags


def open_tracker(
    enabled: bool,
    experiment: str,
    run_name: str,
    tags: Mapping[str, str] | None = None,
    run_id: str | None = None,
    is_main: bool = True,
    log_models: bool = True,
) -> Tracker:
    if not (enabled and is_main):
        return NullTracker()
    return MlflowTracker(experiment, run_name, tags=tags, run_id=run_id, log_models=log_models)


def reopen_run(enabled: bool, experiment: str, run_json: str | Path) -> Tracker:
    """The training run a later stage adds its scores to: the one named in `run_json` (the
    `{"run_id": ...}` a training stage writes beside its model). A NullTracker when tracking is
    off, the file is absent, or the model was trained with tracking off (said on stdout)."""
    path = Path(run_json)
    run_id = json.loads(path.read_text()).get("run_id") if path.is_file() else None
    if enabled and run_id is None:
        print(f"{path}: no MLflow run recorded (trained with tracking off?); scores not logged")
    if not (enabled and run_id):
        return NullTracker()
    return MlflowTracker(experiment, run_name="", run_id=run_id, adds_to=True)


def search_runs(experiment: str, filter_string: str = "") -> Any:
    """Runs of `experiment` as a pandas DataFrame (metrics.*, params.*, tags.* columns)."""
    open_store()
    return mlflow.search_runs(experiment_names=[experiment], filter_string=filter_string)
