"""Where runs are kept: the tracking store, its checks, and a local store that moved.

The tracking store is `MLFLOW_TRACKING_URI` when set (for example a team's `mlflow server`),
otherwise a SQLite file at the repository root with artifacts in mlruns/ beside it, also when DVC
runs the stage in a temp copy. MLflow records artifact locations as absolute paths; a local store
whose folder moved (a moved, renamed or copied checkout, a container mounting it elsewhere) has
them moved along when it is next opened (`open_store`).

Moving them takes SQL UPDATEs on MLflow's own tables, because MLflow (3.17) offers nothing that
does it. Its SQL store resolves a relative artifact root or experiment location (a plain path or
a `file:` URI) against the working folder when the experiment is created
(`resolve_uri_if_local`) and copies that absolute location into every run, logged model and
model version it makes, so no relative location is left to resolve at run time. MlflowClient
can create, rename, delete and tag an experiment, never change its artifact location, nor a
run's. A proxied artifact root (`mlflow-artifacts:`) is resolved through an HTTP tracking
server, which a local SQLite store has not. MLflow has no export / import of its own, and
re-creating runs elsewhere would give them new ids, while each model folder names its run by id.
So the UPDATEs stay, written for one schema: `relocate_artifacts` refuses a store of any other
alembic revision than KNOWN_SCHEMA, and tests/test_tracking_store.py checks that the pinned
MLflow writes that revision, with every table and column the UPDATEs touch.
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow

from pipeline.tracking.base import TrackingError

DB_NAME = "mlflow.db"
# Artifacts of a local store live beside it, not under whatever folder a stage runs in.
ARTIFACTS_DIR = "mlruns"
# The alembic revision (table alembic_version) of the stores the pinned MLflow writes: the
# schema `relocate_artifacts` rewrites locations in. A new MLflow pin brings a new one.
KNOWN_SCHEMA = "dc11669786a5"
# Where MLflow keeps an artifact location: (table, column). model_versions.source is a models:/
# URI for models logged by MLflow 3 and an artifact path for older ones.
LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
)


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


def retry(fn: Callable[..., Any], *args: Any, attempts: int = 3, **kwargs: Any) -> Any:
    """`fn(*args, **kwargs)`, tried again after a pause when MLflow fails; TrackingError after
    the last attempt."""
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


def artifact_location(uri: str | None = None) -> str | None:
    """Where a new experiment keeps its artifacts: mlruns/ beside a local SQLite store; for a
    server, its own default (with `--artifacts-destination`, proxied to the server's disk)."""
    uri = uri or tracking_uri()
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).resolve().parent / ARTIFACTS_DIR).as_uri()
    return None


def is_local_path(location: str) -> bool:
    return urllib.parse.urlparse(location).scheme in ("", "file")


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
    MLflow stored. Other locations (a bucket, a folder the user chose) are left alone. A store
    that has moved but is not of the KNOWN_SCHEMA revision is refused (TrackingError); one that
    has not moved is left to MLflow, which checks its schema itself.
    """
    if not db.is_file():
        return
    here = db.resolve().parent / ARTIFACTS_DIR
    connection = sqlite3.connect(db, timeout=30)
    try:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        if "experiments" not in tables or not _has_moved(connection, here):
            return
        check_schema(connection, db)
        try:
            with connection:
                # One writer at a time; a process that waited finds nothing left to move.
                connection.execute("BEGIN IMMEDIATE")
                moves = _moved_locations(connection, here)
                for table, column in LOCATION_COLUMNS:
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


def schema_revision(connection: sqlite3.Connection) -> str | None:
    """The store's alembic revision; None when it records none."""
    try:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def check_schema(connection: sqlite3.Connection, db: Path) -> None:
    """Refuse (TrackingError) a store whose schema is not KNOWN_SCHEMA: the UPDATEs of
    `relocate_artifacts` name its tables and columns."""
    revision = schema_revision(connection)
    if revision != KNOWN_SCHEMA:
        raise TrackingError(
            f"MLflow store {db} has moved, but its schema revision is {revision or 'unknown'}, not "
            f"{KNOWN_SCHEMA} (the pinned MLflow's): its artifact locations are not moved; "
            f"upgrade an older store with `mlflow db upgrade sqlite:///{db}`"
        )


def _has_moved(connection: sqlite3.Connection, here: Path) -> bool:
    try:
        return bool(_moved_locations(connection, here))
    except sqlite3.Error:
        return True  # not readable as MLflow stores are: `check_schema` says why


def _moved_locations(connection: sqlite3.Connection, here: Path) -> dict[str, str]:
    """{old prefix: new prefix} for the experiments whose artifacts folder is an ARTIFACTS_DIR
    other than `here`, in both forms MLflow stores locations in (file URI and plain path)."""
    moves = {}
    for (location,) in connection.execute("SELECT artifact_location FROM experiments"):
        if not location or not is_local_path(location):
            continue
        old = Path(urllib.parse.unquote(urllib.parse.urlparse(location).path))
        if old.name != ARTIFACTS_DIR or old == here:
            continue
        moves[location.rstrip("/")] = here.as_uri()
        moves[str(old)] = str(here)
    return moves
