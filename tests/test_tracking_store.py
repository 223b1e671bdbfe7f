"""The local store follows its checkout when it moves (in the schema the pinned MLflow writes, and
no other), and the same model files registered twice in a row make one version."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from pipeline.data.labels import NUM_CLASSES
from pipeline.models.model_folder import MODEL_SPEC, model_spec, weights_digest, write_model
from pipeline.models.segmentation import build_segmentation_model
from pipeline.segment import Segmenter
from pipeline.tracking.base import TrackingError
from pipeline.tracking.models import MODEL_DIGEST_TAG
from pipeline.tracking.runs import MlflowTracker
from pipeline.tracking.store import (
    KNOWN_SCHEMA,
    LOCATION_COLUMNS,
    open_store,
    relocate_artifacts,
    schema_revision,
)

# About 0.1 M parameters: the smallest net the pipeline builds, so logging it stays quick.
ARCH, ENCODER = "Linknet", "tu-test_efficientnet"
# Another size than the working size (32, 32): the pyfunc resizes both ways.
FRAME = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)


def _model_folder(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = build_segmentation_model(ARCH, ENCODER, NUM_CLASSES)
    write_model(folder, model.eval(), model_spec(ARCH, ENCODER, (32, 32)))
    return folder


def _locations(db: Path) -> list[str]:
    """Every artifact location the store holds (model_versions.source: models:/<id>)."""
    with sqlite3.connect(db) as connection:
        return [
            value
            for table, column in LOCATION_COLUMNS
            for (value,) in connection.execute(f"SELECT {column} FROM {table}")
            if value
        ]


def test_a_moved_checkout_loads_models_from_and_logs_into_its_new_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the store at the project root
    original, moved = tmp_path / "original", tmp_path / "elsewhere" / "renamed"
    original.mkdir()
    monkeypatch.chdir(original)
    first = _model_folder(original / "models" / "seg", seed=0)
    tracker = MlflowTracker("proj", "train")
    tracker.log_metrics({"loss": 1.0}, step=1)
    tracker.log_segmentation_model(first, "oracle", FRAME)
    tracker.finish()
    expected = Segmenter.from_folder(first).predict(FRAME[None])
    # MLflow keeps absolute paths: the Default experiment's (mlruns/0, made in the working
    # folder), this experiment's, the run's, the logged model's and the version's.
    assert sum(str(original) in path for path in _locations(original / "mlflow.db")) == 5

    moved.parent.mkdir()
    shutil.move(original, moved)  # the old folder is gone: reading or writing there fails
    monkeypatch.chdir(moved)
    # As in a new process: MLflow exports the URI it was given to the environment.
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    open_store()
    model = mlflow.pyfunc.load_model("models:/proj-oracle/1")
    np.testing.assert_array_equal(model.predict(FRAME[None]), expected)

    again = MlflowTracker("proj", "train again")
    again.log_dict({"miou": 0.5}, "scores")
    again.log_segmentation_model(_model_folder(moved / "other", seed=1), "oracle", FRAME)
    again.finish()
    assert not original.exists()
    assert (moved / "mlruns" / again.run_id / "artifacts" / "scores.json").is_file()
    locations = _locations(moved / "mlflow.db")
    assert sum(str(moved) in path for path in locations) == 5 + 3  # one more run, model, version
    assert not any(str(original) in location for location in locations)
    download = MlflowClient().get_model_version_download_uri("proj-oracle", "2")
    assert download.startswith((moved / "mlruns").as_uri() + "/")
    assert mlflow.pyfunc.load_model("models:/proj-oracle/2").predict(FRAME[None]).shape == (
        1,
        *FRAME.shape[:2],
    )


def test_locations_the_store_did_not_place_are_left_alone(tmp_path, monkeypatch):
    db = tmp_path / "store" / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    open_store()
    chosen = (tmp_path / "chosen-artifacts").as_uri()
    MlflowClient().create_experiment("chosen", artifact_location=chosen)
    MlflowTracker("beside", "r").finish()
    moved = tmp_path / "moved"
    shutil.move(db.parent, moved)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{moved / 'mlflow.db'}")
    open_store()
    client = MlflowClient()
    assert client.get_experiment_by_name("chosen").artifact_location == chosen
    assert client.get_experiment_by_name("beside").artifact_location == (
        (moved / "mlruns").as_uri()
    )


def _fresh_store(db: Path) -> Path:
    """A store the pinned MLflow makes, with one experiment whose artifacts folder is mlruns/
    elsewhere: as if the store had moved away from it."""
    client = MlflowClient(f"sqlite:///{db}")
    client.create_experiment("old", artifact_location=(db.parent / "old" / "mlruns").as_uri())
    return db


def test_the_pinned_mlflow_writes_the_schema_the_locations_are_moved_in(tmp_path):
    db = _fresh_store(tmp_path / "mlflow.db")
    with sqlite3.connect(db) as connection:
        assert schema_revision(connection) == KNOWN_SCHEMA, f"MLflow {mlflow.__version__}"
        columns = {
            table: {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
            for table, _ in LOCATION_COLUMNS
        }
    missing = [
        f"{table}.{column}" for table, column in LOCATION_COLUMNS if column not in columns[table]
    ]
    assert not missing, f"MLflow {mlflow.__version__} stores have no {missing}"


def test_a_moved_store_of_another_schema_is_refused_and_left_as_it_was(tmp_path):
    db = _fresh_store(tmp_path / "mlflow.db")
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'a1b2c3d4e5f6'")
    before = _locations(db)
    with pytest.raises(TrackingError) as raised:
        relocate_artifacts(db)
    message = str(raised.value)
    assert "\n" not in message
    assert str(db) in message and "a1b2c3d4e5f6" in message and KNOWN_SCHEMA in message
    assert _locations(db) == before
    with sqlite3.connect(db) as connection:
        connection.execute("DELETE FROM alembic_version")
    with pytest.raises(TrackingError, match="revision is unknown"):
        relocate_artifacts(db)


def test_a_store_of_another_schema_that_has_not_moved_is_left_to_mlflow(tmp_path):
    db = tmp_path / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").search_experiments()  # only the Default experiment, beside it
    with sqlite3.connect(db) as connection:
        connection.execute("UPDATE alembic_version SET version_num = 'a1b2c3d4e5f6'")
    relocate_artifacts(db)


def test_the_same_model_files_are_registered_once_in_a_row(tmp_path, capsys):
    first = _model_folder(tmp_path / "first", seed=0)
    same = Path(shutil.copytree(first, tmp_path / "same"))  # equal files, another folder
    other = _model_folder(tmp_path / "other", seed=1)
    tracker = MlflowTracker("dedupe", "r")
    tracker.log_segmentation_model(first, "oracle", FRAME)
    capsys.readouterr()
    tracker.log_segmentation_model(same, "oracle", FRAME)
    assert "dedupe-oracle: version 1 holds these files already" in capsys.readouterr().out
    tracker.log_segmentation_model(other, "oracle", FRAME)
    tracker.log_segmentation_model(first, "oracle", FRAME)  # not the newest version's files
    tracker.finish()

    versions = MlflowClient().search_model_versions("name = 'dedupe-oracle'")
    digests = {int(v.version): v.tags[MODEL_DIGEST_TAG] for v in versions}
    assert digests == {1: weights_digest(first), 2: weights_digest(other), 3: weights_digest(first)}
    assert digests[1] != digests[2]


def test_the_weights_digest_covers_weights_and_spec(tmp_path):
    folder = _model_folder(tmp_path / "model", seed=0)
    before = weights_digest(folder)
    assert weights_digest(_model_folder(tmp_path / "again", seed=0)) == before
    spec = json.loads((folder / MODEL_SPEC).read_text())
    (folder / MODEL_SPEC).write_text(json.dumps({**spec, "input_size": [64, 64]}))
    assert weights_digest(folder) != before
