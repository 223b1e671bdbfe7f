"""The one door every stage goes through.

    with open_stage("evaluate", log=..., distributed=True, reopen=model / "run.json") as door:
        ...  # door.params, door.tracker, door.is_main

On the way in: the stage's output is copied to its log file (rank 0), params.yaml is loaded and
validated, the process group joined (stages that shard over torchrun), the tracking store
checked, and the tracker opened: a new MLflow run, the training run it resumes (`training`: the
checkpoint folder is claimed for this run's fingerprint), or the run a later stage adds scores to
(`reopen`). On the way out the run gets its status: FINISHED, KILLED (SIGINT / SIGTERM: exit code
128 + the signal, checkpoint kept) or FAILED. A mistake of the user's (a setting, a data file, a
model folder) ends the stage with one line naming it, exit code 2, no traceback. A stage that
fails keeps its previous log and writes its own beside it (`failed_log`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from pipeline import dist
from pipeline.config import ConfigError, Params, load_params
from pipeline.data.index import DatasetError
from pipeline.fingerprint import run_fingerprint
from pipeline.io import ImageReadError, InputError, OutputError, write_json
from pipeline.models.generator_folder import GeneratorFolderError
from pipeline.models.model_folder import ModelFolderError
from pipeline.segment import SegmentError
from pipeline.tracking.base import NullTracker, Tracker, TrackingError
from pipeline.tracking.runs import open_tracker, reopen_run
from pipeline.tracking.store import check_tracking
from pipeline.train.checkpoint import (
    CheckpointError,
    claim_checkpoint_folder,
    finish_run_record,
    record_run,
)
from pipeline.train.run import Interrupted, TrainingDiverged
from pipeline.translate import TranslateError
from pipeline.weights import WeightsError
from stages import loaded

# Errors whose message tells the user what to fix: printed as one line, without a traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DatasetError,
    InputError,
    ImageReadError,
    OutputError,
    WeightsError,
    ModelFolderError,
    GeneratorFolderError,
    CheckpointError,
    TrainingDiverged,
    SegmentError,
    TranslateError,
    TrackingError,
)


@dataclasses.dataclass(frozen=True)
class Training:
    """A training stage's run: checkpoints in `out_dir/checkpoints` resume only a run of the same
    settings and inputs (`settings_of` and `inputs_of` the validated params) and code that was
    interrupted, never a finished one."""

    out_dir: Path
    settings_of: Callable[[Params], Mapping[str, Any]]
    inputs_of: Callable[[Params], Sequence[str | Path]]


@dataclasses.dataclass
class Door:
    stage: str
    params: Params
    tracker: Tracker
    is_main: bool


class _Tee:
    """A text stream written to the terminal (or whatever the stream was) and to a log file.

    Progress-bar refreshes (carriage returns) go to the terminal only, so the log holds lines.
    """

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        if "\r" not in text:
            self._log.write(text)
            self._log.flush()
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()
        self._log.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def failed_log(path: Path) -> Path:
    """Where a stage's log goes when the stage fails (`path` keeps the last good run's)."""
    return path.with_name(f"{path.stem}.failed{path.suffix}")


@contextlib.contextmanager
def _kept_log(path: Path | None) -> Iterator[None]:
    """Copy stdout and stderr to a new log while the stage runs (rank 0 only).

    The new log replaces `path` only when the stage succeeds. A failed or stopped stage leaves
    `path` as the last successful run wrote it (dvc.yaml persists logs, so DVC does not delete
    them first) and its own output in `failed_log(path)`.
    """
    # Before the process group exists only torchrun's RANK says which process this is.
    if path is None or int(os.environ.get("RANK", 0)) != 0:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    attempt = path.with_name(f"{path.name}.part")
    succeeded = False
    with open(attempt, "w") as log:
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(out, log), _Tee(err, log)
        try:
            yield
            succeeded = True
        except SystemExit as exit_:
            succeeded = exit_.code in (None, 0)
            raise
        finally:
            sys.stdout, sys.stderr = out, err
            log.close()
            if succeeded:
                os.replace(attempt, path)
                failed_log(path).unlink(missing_ok=True)
            else:
                os.replace(attempt, failed_log(path))
                if path.is_file():
                    print(
                        f"{path} is the last successful run's log; this run's is "
                        f"{failed_log(path)}",
                        file=sys.stderr,
                    )


@contextlib.contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM outside the training loop (which checkpoints first) stops the stage as SIGINT
    does, so the MLflow run ends KILLED rather than staying RUNNING."""

    stage_process = os.getpid()

    def stop(signum: int, frame: Any) -> None:
        if os.getpid() != stage_process:
            # A forked worker (a process pool's, which its pool ends with SIGTERM): it dies of
            # the signal, as it would without this handler.
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Interrupted(f"stopped by {signal.Signals(signum).name}", signum)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def open_stage(
    stage: str,
    *,
    log: Path | None = None,
    distributed: bool = False,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    training: Training | None = None,
    reopen: Path | None = None,
) -> Iterator[Door]:
    """Open `stage` (see the module doc). A new MLflow run is opened when `run_name` is given
    (resumed when `training` finds this run's checkpoints), the run recorded in the `reopen` file
    ({"run_id"}) when that is given, none otherwise."""
    loaded()
    with _kept_log(log), _signals_raise():
        try:
            params = load_params()
            if distributed:
                dist.init()
            try:
                with _tracked(stage, params, run_name, tags, training, reopen) as door:
                    yield door
            finally:
                if distributed:
                    dist.cleanup()
        except USER_ERRORS as err:
            # Inside the log: the failed run's log ends with what to fix.
            print(f"{stage}: {err}", file=sys.stderr)
            raise SystemExit(2) from None


@contextlib.contextmanager
def _tracked(
    stage: str,
    params: Params,
    run_name: str | None,
    tags: Mapping[str, str] | None,
    training: Training | None,
    reopen: Path | None,
) -> Iterator[Door]:
    main = dist.is_main()
    tracking = params.tracking
    if tracking.enabled and main and (run_name or reopen):
        check_tracking()
    run_id, fingerprint, checkpoints, inputs = None, None, None, []
    if training is not None:
        checkpoints = Path(training.out_dir) / "checkpoints"
        inputs = list(training.inputs_of(params))
        fingerprint = run_fingerprint(dict(training.settings_of(params)), inputs)
        run_id = claim_checkpoint_folder(checkpoints, fingerprint) if main else None
        dist.barrier()
    if reopen is not None:
        tracker = reopen_run(tracking.enabled and main, tracking.experiment, reopen)
    elif run_name is not None:
        tracker = open_tracker(
            tracking.enabled,
            tracking.experiment,
            run_name=run_name,
            tags={"stage": stage, **(tags or {})},
            run_id=run_id,
            is_main=main,
            log_models=tracking.log_models,
        )
    else:
        tracker = NullTracker()
    if checkpoints is not None and main:
        record_run(checkpoints, fingerprint, tracker.run_id)
    if training is not None:
        tracker.log_data({"training": inputs})
    status = "FAILED"
    try:
        yield Door(stage, params, tracker, main)
        status = "FINISHED"
    except Interrupted as stopped:
        status = "KILLED"
        print(f"{stage}: {stopped}; rerun the stage to resume", file=sys.stderr)
        raise SystemExit(128 + stopped.signum) from None
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracker.finish(status)  # a reopened run keeps the status its training gave it
    if training is not None and main:
        finish_run_record(checkpoints)
        write_json(Path(training.out_dir) / "run.json", {"run_id": tracker.run_id})
