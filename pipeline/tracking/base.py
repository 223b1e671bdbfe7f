"""What loops and stages log to, without mlflow: the `Tracker` interface, `NullTracker` and
`TrackingError`.

Loops get a `Tracker` and log scalars, images, tables and models by name; they never see mlflow.
`Tracker` is the interface (annotate with it); `pipeline.tracking.runs.MlflowTracker` logs to one
MLflow run and `NullTracker` does nothing, each with every method of the interface and no others.
Nothing here imports mlflow, so the loops and the benchmarks import without it.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.identity import DatasetIdentity


class TrackingError(RuntimeError):
    """The tracking store cannot be reached or written; the message names it."""


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
