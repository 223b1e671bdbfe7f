"""Models in MLflow: the segmentation pyfunc and the translators' PyTorch models, and the registry.

Segmentation models are logged as pyfuncs that take uint8 RGB frames of any size and return
train ids, and registered as "<experiment>-<variant>" unless the newest version already holds
the same files. `MlflowTracker.log_segmentation_model` and `log_torch_model` come here.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.models import ModelSignature
from mlflow.types.schema import Schema, TensorSpec

from pipeline.data.identity import SHORT_DIGEST, DatasetIdentity
from pipeline.models.model_folder import weights_digest
from pipeline.tracking.store import retry

# The pipeline package, which the logged models carry.
PACKAGE = Path(__file__).resolve().parents[1]
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


def log_segmentation_model(
    client: Any,
    run_id: str,
    registered_name: str,
    model_dir: str | Path,
    variant: str,
    example: np.ndarray,
    dataset: DatasetIdentity | None,
) -> None:
    """Log a model folder (models.model_folder) to the run `run_id` as a pyfunc named `variant`
    and register it as `registered_name`, the variant, `dataset` and MODEL_DIGEST_TAG as the
    version's tags; when the newest version already holds the same files it is not registered
    again (said on stdout).

    `mlflow.pyfunc.load_model` gives a model that takes (N, H, W, 3) uint8 RGB frames of any
    size and returns (N, H, W) uint8 train ids; the weights, model.json (normalisation,
    class table) and the pipeline package travel with it. `example`: one (H, W, 3) frame.
    """
    from pipeline.models.model_folder import MODEL_SPEC, MODEL_WEIGHTS

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1))]),
    )
    digest = weights_digest(model_dir)
    tags = {
        "variant": variant,
        **(dataset.tags() if dataset else {}),
        MODEL_DIGEST_TAG: digest,
    }
    newest = retry(
        client.search_model_versions,
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
        with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
            info = retry(
                mlflow.pyfunc.log_model,
                name=variant,
                python_model=str(PACKAGE / "pyfunc_model.py"),
                artifacts={"model": str(folder)},
                code_paths=[str(package_copy(Path(tmp)))],
                signature=signature,
                input_example=np.ascontiguousarray(example[None]),
                pip_requirements=pinned(MODEL_REQUIREMENTS),
                registered_model_name=None if same else registered_name,
                tags=tags,
            )
    if same is not None:
        return
    for key, value in tags.items():
        retry(
            client.set_model_version_tag,
            registered_name,
            info.registered_model_version,
            key,
            value,
        )


def log_torch_model(run_id: str, model: Any, name: str, input_example: np.ndarray) -> None:
    """Log `model` to the run `run_id` as an MLflow PyTorch model: (N, C, H, W) float32 in and
    out, any N, H and W; it loads offline (requirements pinned, the pipeline package with it,
    since the module is pickled by reference to its class)."""
    channels = input_example.shape[1]
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, channels, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, channels, -1, -1))]),
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None),
    ):
        retry(
            mlflow.pytorch.log_model,
            model,
            name=name,
            signature=signature,
            input_example=input_example,
            code_paths=[str(package_copy(Path(tmp)))],
            pip_requirements=pinned(("torch", "numpy")),
        )


def package_copy(folder: Path) -> Path:
    """The pipeline package copied into `folder`, without bytecode caches, for code_paths."""
    copy = folder / "pipeline"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def pinned(packages: Sequence[str]) -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in packages]
