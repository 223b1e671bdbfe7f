"""The one module that imports mlflow.

Loops get a `Tracker` and log scalars, images, tables and models by name; they never see mlflow.
`Tracker` is the interface (annotate with it); `MlflowTracker` logs to one MLflow run and
`NullTracker` does nothing, each with every method of the interface and no others.
The tracking store is `MLFLOW_TRACKING_URI` when set (for example a team's `mlflow server`),
otherwise a SQLite file at the repository root with artifacts in mlruns/ beside it, also when DVC
runs the stage in a temp copy. MLflow records artifact locations as absolute paths; a local store
whose folder moved (a moved, renamed or copied checkout, a container mounting it elsewhere) has
them moved along when it is next opened (`open_store`). Only rank 0 of a distributed run tracks
anything; other ranks get a tracker that does nothing. A run whose process is ended by SIGTERM or
SIGHUP (which would kill it before any cleanup) is ended KILLED first.

Every run is tagged with the git commit, the DVC experiment name (under `dvc exp run`) and a
`pipeline_run` id shared by every stage that one `dvc repro` / `dvc exp run` starts, and carries
the data it read (`Tracker.log_data`: MLflow dataset inputs, params and tags from the prepare
stage's dataset identity). Segmentation models are logged as pyfuncs that take uint8 RGB frames
of any size and return train ids, and registered as "<experiment>-<variant>" unless the newest
version already holds the same files.
"""

from __future__ import annotations

import abc
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from pipeline.data.identity import SHORT_DIGEST, DatasetIdentity, identity_of_split
from pipeline.models.model_folder import weights_digest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

import mlflow
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

DB_NAME = "mlflow.db"
# Artifacts of a local store live beside it, not under whatever folder a stage runs in.
ARTIFACTS_DIR = "mlruns"
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
    # overview (3.17 follows a per-browser switch instead, which README's link sets).
    "mlflow.experimentKind": "custom_model_development",
    f"mlflow.sharedViewState.{VARIANTS_VIEW_KEY}": json.dumps(VARIANTS_VIEW),
}
# What the logged segmentation pyfunc imports (with the pipeline package it carries).
MODEL_REQUIREMENTS = (
    "torch",
    "torchvision",
    "segmentation-models-pytorch",
    "kornia",
    "cityscapesscripts",
    "safetensors",
    "numpy",
    "pillow",
    "tqdm",
    "pyyaml",
    "psutil",
)

# The registered version's tag holding `weights_digest` of its files: the same files are not
# registered twice in a row.
MODEL_DIGEST_TAG = "model_sha256"


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


def artifact_location(uri: str | None = None) -> str | None:
    """Where a new experiment keeps its artifacts: mlruns/ beside a local SQLite store; for a
    server, its own default (with `--artifacts-destination`, proxied to the server's disk)."""
    uri = uri or tracking_uri()
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).resolve().parent / ARTIFACTS_DIR).as_uri()
    return None


def _is_local_path(location: str) -> bool:
    return urllib.parse.urlparse(location).scheme in ("", "file")


# Where MLflow keeps an artifact location: (table, column). model_versions.source is a models:/
# URI for models logged by MLflow 3 and an artifact path for older ones.
_LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
)


def open_store() -> str:
    """Point MLflow at this project's store (`tracking_uri`) and return its URI.

    MLflow writes absolute artifact locations (file:///<folder>/mlruns/...) into the store. A
    local SQLite store found in another folder than the one its artifacts were placed beside
    (the checkout moved, was copied or is mounted elsewhere) first has every such location
    moved to mlruns/ beside it, so models load from, and runs log into, this folder. Code that
    reads this project's store with mlflow directly calls this first.
    """
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        relocate_artifacts(Path(uri[len("sqlite:///") :]))
    mlflow.set_tracking_uri(uri)
    return uri


def relocate_artifacts(db: Path) -> None:
    """Move the artifact locations in the SQLite store `db` to mlruns/ beside it.

    An experiment this module created keeps its artifacts in the folder named ARTIFACTS_DIR
    beside the store; one whose location is such a folder elsewhere was created where the store
    used to be. Every location under that old folder (the experiment's, its runs', its logged
    models' and its registered versions') is rewritten, as a file URI or a plain path, whichever
    MLflow stored. Other locations (a bucket, a folder the user chose) are left alone.
    """
    if not db.is_file():
        return
    here = db.resolve().parent / ARTIFACTS_DIR
    connection = sqlite3.connect(db, timeout=30)
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        if "experiments" not in tables or not _moved_locations(connection, here):
            return
        try:
            with connection:
                # One writer at a time; a process that waited finds nothing left to move.
                connection.execute("BEGIN IMMEDIATE")
                moves = _moved_locations(connection, here)
                for table, column in _LOCATION_COLUMNS:
                    if table not in tables:
                        continue
                    for old, new in moves.items():
                        connection.execute(
                            f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                            f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                            (new, len(old) + 1, old, len(old) + 1, old + "/"),
                        )
        except sqlite3.Error as err:
            # Left as they are, MLflow would read and write the old folder.
            raise TrackingError(
                f"MLflow store {db} has moved; its artifact locations cannot be moved to "
                f"{here} ({err})"
            ) from err
    finally:
        connection.close()
    if moves:
        old_folders = sorted({old for old in moves if not old.startswith("file:")})
        print(f"{db}: artifact locations moved from {', '.join(old_folders)} to {here}")


def _moved_locations(connection: sqlite3.Connection, here: Path) -> dict[str, str]:
    """{old prefix: new prefix} for the experiments whose artifacts folder is an ARTIFACTS_DIR
    other than `here`, in both forms MLflow stores locations in (file URI and plain path)."""
    moves = {}
    for (location,) in connection.execute("SELECT artifact_location FROM experiments"):
        if not location or not _is_local_path(location):
            continue
        old = Path(urllib.parse.unquote(urllib.parse.urlparse(location).path))
        if old.name != ARTIFACTS_DIR or old == here:
            continue
        moves[location.rstrip("/")] = here.as_uri()
        moves[str(old)] = str(here)
    return moves


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


class Tracker(abc.ABC):
    """What loops and stages log to: one MLflow run (`MlflowTracker`) or nothing
    (`NullTracker`, for non-zero ranks and tracking off). Annotate with this type."""

    # The MLflow run's id; None when nothing is tracked.
    run_id: str | None
    # The data this run read, once `log_data` found it; registered models are tagged with it.
    dataset: DatasetIdentity | None

    @abc.abstractmethod
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (values as text, cut at 6000 characters)."""

    @abc.abstractmethod
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log scalars at `step`; None and non-finite values are left out."""

    @abc.abstractmethod
    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Set run tags."""

    @abc.abstractmethod
    def log_image(self, name: str, image: np.ndarray, step: int | None = None) -> None:
        """Log a (H, W, 3) uint8 image; with `step`, as one frame of a step series."""

    @abc.abstractmethod
    def log_figure(self, figure: Any, name: str) -> None:
        """Log a matplotlib figure as `name`.png."""

    @abc.abstractmethod
    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        """Copy the file at `path` into the run's artifacts (under `folder`)."""

    @abc.abstractmethod
    def log_table(self, data: Any, name: str) -> None:
        """Log a pandas DataFrame as the table `name`.json, replacing an earlier one."""

    @abc.abstractmethod
    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        """Log `data` as `name`.json."""

    @abc.abstractmethod
    def log_data(self, used: Mapping[str, Sequence[str | Path]]) -> None:
        """Record the prepared splits this run read, by context ("training", "evaluation")."""

    @abc.abstractmethod
    def log_segmentation_model(
        self, model_dir: str | Path, variant: str, example: np.ndarray
    ) -> None:
        """Log the model folder `model_dir` (pipeline.segment) as a pyfunc named `variant` and
        register it; `example` is one (H, W, 3) uint8 frame."""

    @abc.abstractmethod
    def log_torch_model(self, model: Any, name: str, input_example: np.ndarray) -> None:
        """Log an image-to-image torch module; `input_example` is (N, C, H, W) float32."""

    @abc.abstractmethod
    def finish(self, status: str = "FINISHED") -> None:
        """End the run with `status`: FINISHED, FAILED or KILLED."""


class MlflowTracker(Tracker):
    """One MLflow run: created fresh, resumed by id (a training run continued after a kill), or
    reopened by id to add a later stage's scores to it (`adds_to`).

    Until `finish`, a SIGTERM or SIGHUP that would end the process ends the run KILLED first
    (see `_end_runs_on_signal`). A run a later stage adds to keeps the status its training gave
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
        self._client = mlflow.MlflowClient()
        self._experiment = experiment
        self._adds_to = adds_to
        self._log_models = log_models
        self.dataset = None
        if adds_to:
            assert run_id is not None
            self.run_id = run_id
            return
        if run_id is None:
            experiment_id = self._retry(_experiment_id, self._client, experiment)
            all_tags = {"mlflow.runName": run_name, **_default_tags(), **(tags or {})}
            run = self._retry(self._client.create_run, experiment_id, tags=all_tags)
            run_id = run.info.run_id
        else:
            self._retry(self._client.update_run, run_id, status="RUNNING")
            for key, value in (tags or {}).items():
                self._retry(self._client.set_tag, run_id, key, value)
        self.run_id = run_id
        _watch(self)

    @staticmethod
    def _retry(fn, *args, attempts: int = 3, **kwargs):
        # A shared SQLite store or server can be briefly busy; scores must not be dropped for it.
        for attempt in range(attempts):
            try:
                return fn(*args, **kwargs)
            except TrackingError:
                raise
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
        if step is None:
            self._retry(self._client.log_image, self.run_id, image, artifact_file=f"{name}.png")
        else:
            self._retry(self._client.log_image, self.run_id, image, key=name, step=step)

    def log_figure(self, figure: Any, name: str) -> None:
        self._retry(self._client.log_figure, self.run_id, figure, f"{name}.png")

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        self._retry(self._client.log_artifact, self.run_id, str(path), folder)

    def log_table(self, data: Any, name: str) -> None:
        # MLflow's own log_table appends rows to an existing table, so evaluating a run twice
        # would double it; log_dict writes the same {"columns", "data"} layout and overwrites.
        table = {"columns": [str(c) for c in data.columns], "data": data.to_numpy().tolist()}
        self._retry(self._client.log_dict, self.run_id, table, f"{name}.json")

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        self._retry(self._client.log_dict, self.run_id, dict(data), f"{name}.json")

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
        self._retry(self._client.log_inputs, self.run_id, datasets=inputs)

    def log_segmentation_model(
        self, model_dir: str | Path, variant: str, example: np.ndarray
    ) -> None:
        """Log a model folder (models.model_folder) as a pyfunc named `variant` and register it as
        "<experiment>-<variant>", the variant, dataset and MODEL_DIGEST_TAG as the version's
        tags; when the newest version already holds the same files it is not registered again
        (said on stdout).

        `mlflow.pyfunc.load_model` gives a model that takes (N, H, W, 3) uint8 RGB frames of any
        size and returns (N, H, W) uint8 train ids; the weights, model.json (normalisation,
        class table) and the pipeline package travel with it. `example`: one (H, W, 3) frame.
        """
        from pipeline.models.model_folder import MODEL_SPEC, MODEL_WEIGHTS

        if not self._log_models:
            # tracking.log_models false: the files stay in DVC's cache only; the run names them.
            self.set_tags(
                {"model_folder": str(model_dir), MODEL_DIGEST_TAG: weights_digest(model_dir)}
            )
            return
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),
            outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1))]),
        )
        digest = weights_digest(model_dir)
        tags = {
            "variant": variant,
            **(self.dataset.tags() if self.dataset else {}),
            MODEL_DIGEST_TAG: digest,
        }
        registered_name = f"{self._experiment}-{variant}"
        newest = self._retry(
            self._client.search_model_versions,
            f"name = '{registered_name}'",
            max_results=1,
            order_by=["version_number DESC"],
        )
        same = newest[0] if newest and newest[0].tags.get(MODEL_DIGEST_TAG) == digest else None
        if same is not None:
            print(
                f"{registered_name}: version {same.version} holds these files already "
                f"({MODEL_DIGEST_TAG} {digest[:SHORT_DIGEST]}); not registered again"
            )
        with tempfile.TemporaryDirectory() as tmp:
            # Only the two model files: checkpoints/ beside them are large.
            folder = Path(tmp) / "model"
            folder.mkdir()
            for name in (MODEL_WEIGHTS, MODEL_SPEC):
                shutil.copy(Path(model_dir) / name, folder / name)
            with mlflow.start_run(run_id=self.run_id, nested=mlflow.active_run() is not None):
                info = self._retry(
                    mlflow.pyfunc.log_model,
                    name=variant,
                    python_model=str(Path(__file__).with_name("pyfunc_model.py")),
                    artifacts={"model": str(folder)},
                    code_paths=[str(_package_copy(Path(tmp)))],
                    signature=signature,
                    input_example=np.ascontiguousarray(example[None]),
                    pip_requirements=_pinned(MODEL_REQUIREMENTS),
                    registered_model_name=None if same else registered_name,
                    tags=tags,
                )
        if same is not None:
            return
        for key, value in tags.items():
            self._retry(
                self._client.set_model_version_tag,
                registered_name,
                info.registered_model_version,
                key,
                value,
            )

    def log_torch_model(self, model: Any, name: str, input_example: np.ndarray) -> None:
        """An MLflow PyTorch model: (N, C, H, W) float32 in and out, any N, H and W; it loads
        offline (requirements pinned, the pipeline package with it, since the module is pickled
        by reference to its class)."""
        if not self._log_models:
            return  # tracking.log_models false: the generator file is in DVC's cache only
        channels = input_example.shape[1]
        signature = ModelSignature(
            inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, channels, -1, -1))]),
            outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, channels, -1, -1))]),
        )
        with (
            tempfile.TemporaryDirectory() as tmp,
            mlflow.start_run(run_id=self.run_id, nested=mlflow.active_run() is not None),
        ):
            self._retry(
                mlflow.pytorch.log_model,
                model,
                name=name,
                signature=signature,
                input_example=input_example,
                code_paths=[str(_package_copy(Path(tmp)))],
                pip_requirements=_pinned(("torch", "numpy")),
            )

    def finish(self, status: str = "FINISHED") -> None:
        if self._adds_to:
            return
        self._retry(self._client.set_terminated, self.run_id, status=status)
        _unwatch(self)

    def _end_killed(self, signum: int) -> None:
        """From the signal handler: one attempt (no retry sleeps while being killed)."""
        name = signal.Signals(signum).name
        try:
            self._client.set_terminated(self.run_id, status="KILLED")
            print(f"MLflow run {self.run_id}: KILLED by {name}", file=sys.stderr)
        except Exception as err:  # the process dies next whatever went wrong
            print(f"MLflow run {self.run_id}: not ended on {name} ({err})", file=sys.stderr)


class NullTracker(Tracker):
    """What non-zero ranks (and `tracking.enabled: false`) get: every call does nothing."""

    run_id: str | None = None
    dataset: DatasetIdentity | None = None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def log_image(self, name: str, image: np.ndarray, step: int | None = None) -> None:
        pass

    def log_figure(self, figure: Any, name: str) -> None:
        pass

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        pass

    def log_table(self, data: Any, name: str) -> None:
        pass

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        pass

    def log_data(self, used: Mapping[str, Sequence[str | Path]]) -> None:
        pass

    def log_segmentation_model(
        self, model_dir: str | Path, variant: str, example: np.ndarray
    ) -> None:
        pass

    def log_torch_model(self, model: Any, name: str, input_example: np.ndarray) -> None:
        pass

    def finish(self, status: str = "FINISHED") -> None:
        pass


# MLflow runs this process opened and has not finished, and the handlers `_watch` replaced.
# SIGINT is not among the signals: it raises KeyboardInterrupt, and the code unwinding from it
# ends the run (pipeline.train.run.stage_run ends it KILLED).
_TERMINATING = (signal.SIGTERM, signal.SIGHUP)
_unfinished: set[MlflowTracker] = set()
_replaced: dict[int, Any] = {}
_handler_pid: int | None = None


def _watch(tracker: MlflowTracker) -> None:
    global _handler_pid
    _unfinished.add(tracker)
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set from the main thread
    for signum in _TERMINATING:
        current = signal.getsignal(signum)
        # An ignored signal kills nothing; None: a handler not set from Python, left alone.
        if current in (_end_runs_on_signal, signal.SIG_IGN, None):
            continue
        _replaced[signum] = current
        signal.signal(signum, _end_runs_on_signal)
    _handler_pid = os.getpid()


def _unwatch(tracker: MlflowTracker) -> None:
    _unfinished.discard(tracker)
    if _unfinished or threading.current_thread() is not threading.main_thread():
        return
    for signum in _TERMINATING:
        # A handler set over ours (a training loop's) puts ours back later; ours then passes the
        # signal on to the one it replaced.
        if signal.getsignal(signum) is _end_runs_on_signal:
            signal.signal(signum, _replaced.pop(signum))


def _end_runs_on_signal(signum: int, frame: Any) -> None:
    """End this process's unfinished runs KILLED, then let the signal act as it would have
    (by default: the process dies of it)."""
    # A forked child (a data loader worker) inherits the handler, not the runs.
    if os.getpid() == _handler_pid:
        for tracker in list(_unfinished):
            tracker._end_killed(signum)
            _unfinished.discard(tracker)
    previous = _replaced.pop(signum, signal.SIG_DFL)
    signal.signal(signum, previous)
    if callable(previous):
        previous(signum, frame)
    else:
        os.kill(os.getpid(), signum)


class SegmentationModel(mlflow.pyfunc.PythonModel):
    """What `MlflowTracker.log_segmentation_model` logs: uint8 RGB frames in, train ids out."""

    def load_context(self, context: Any) -> None:
        from pipeline.segment import Segmenter

        self._segmenter = Segmenter.from_folder(context.artifacts["model"])

    def predict(self, context: Any, model_input: np.ndarray, params: Any = None) -> np.ndarray:
        return self._segmenter.predict(np.asarray(model_input))


def declare_segmentation_model() -> None:
    """Make `SegmentationModel` the model MLflow loads from code (pipeline/pyfunc_model.py)."""
    mlflow.models.set_model(SegmentationModel())


def _package_copy(folder: Path) -> Path:
    """The pipeline package copied into `folder`, without bytecode caches, for code_paths."""
    copy = folder / "pipeline"
    shutil.copytree(
        Path(__file__).resolve().parent, copy, ignore=shutil.ignore_patterns("__pycache__")
    )
    return copy


def _pinned(packages: Sequence[str]) -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in packages]


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
    if uri.startswith(("http://", "https://")) and _is_local_path(experiment.artifact_location):
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
