"""The segmentation model folder: a trained variant on disk, its one writer and its one reader.

A model folder (what the train_seg stage writes to models/seg/<variant>) holds
    model.safetensors  the net's weights
    model.json         what it takes to use them: architecture, encoder, the working input size
                       the net was trained at, the normalisation, and the class table
so a data team needs nothing else from the pipeline's settings. An ensemble's folder (the
ensemble stage's, FDA's multi-band transfer) holds its members' weights in one file and their
names in model.json's `ensemble`; it loads as one net (pipeline.models.ensemble).

It sits in the models layer, beside the factory that rebuilds the net, so that training (which
writes it) and inference, evaluation, CyCADA's frozen net and the MLflow model (which read it)
share one definition without importing each other.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from pipeline.data.labels import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES, TRAIN_ID_TO_COLOR
from pipeline.data.tensors import IMAGENET_MEAN, IMAGENET_STD
from pipeline.io import atomic_path, read_json, write_json
from pipeline.models.ensemble import ProbabilityAverage
from pipeline.weights import load_weights, save_weights

MODEL_WEIGHTS = "model.safetensors"
MODEL_SPEC = "model.json"


class ModelFolderError(ValueError):
    """A folder is not a complete model folder; the message names the missing file."""


def model_spec(arch: str, encoder: str, input_size: Sequence[int]) -> dict[str, Any]:
    """model.json: how to rebuild the net and feed it (input in RGB order, 0..255 scaled to
    0..1, then (x - mean) / std), and what its output channels mean."""
    return {
        "arch": arch,
        "encoder": encoder,
        "num_classes": NUM_CLASSES,
        "input_size": [int(s) for s in input_size],
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "ignore_index": IGNORE_INDEX,
        "classes": [
            {"train_id": i, "name": name, "color": TRAIN_ID_TO_COLOR[i].tolist()}
            for i, name in enumerate(CLASS_NAMES)
        ],
    }


def write_model(out_dir: str | Path, model: nn.Module, spec: dict[str, Any]) -> None:
    """Write model.safetensors and model.json into `out_dir`, each atomically."""
    out_dir = Path(out_dir)
    save_weights(out_dir / MODEL_WEIGHTS, model.state_dict())
    write_json(out_dir / MODEL_SPEC, spec)


def _check_complete(model_dir: Path) -> None:
    for name in (MODEL_SPEC, MODEL_WEIGHTS):
        if not (model_dir / name).is_file():
            raise ModelFolderError(
                f"{model_dir / name}: not found; a model folder is what the train_seg stage "
                f"writes (models/seg/<variant>)"
            )


def read_model_spec(model_dir: str | Path) -> dict[str, Any]:
    """The model.json of a complete model folder."""
    model_dir = Path(model_dir)
    _check_complete(model_dir)
    return read_json(model_dir / MODEL_SPEC)


def load_model(model_dir: str | Path) -> nn.Module:
    """The net saved in `model_dir` (an ensemble's: one `ProbabilityAverage`), in eval mode, on
    CPU."""
    spec = read_model_spec(model_dir)
    if "ensemble" in spec:
        model: nn.Module = ProbabilityAverage([_build(spec) for _ in spec["ensemble"]["members"]])
    else:
        model = _build(spec)
    model.load_state_dict(load_weights(Path(model_dir) / MODEL_WEIGHTS))
    return model.eval()


def _build(spec: dict[str, Any]) -> nn.Module:
    # smp, timm and torchvision take ~2 s to import; every stage reads this module (the door
    # names its error), only those that build a net pay for them.
    from pipeline.models.segmentation import build_segmentation_model

    return build_segmentation_model(spec["arch"], spec["encoder"], spec["num_classes"])


def write_ensemble(out_dir: str | Path, members: dict[str, Path]) -> dict[str, Any]:
    """The model folder of the ensemble of `members` (name -> model folder) in `out_dir`: their
    weights in one file, model.json the members' (which must agree on how the net is built and
    fed) with the names added. Returns that model.json."""
    specs = {name: read_model_spec(folder) for name, folder in members.items()}
    first, spec = next(iter(specs.items()))
    for name, other in specs.items():
        if other != spec:
            differing = sorted(k for k in spec.keys() | other.keys() if spec.get(k) != other.get(k))
            raise ModelFolderError(
                f"{members[name] / MODEL_SPEC}: its keys {', '.join(differing)} differ from "
                f"{members[first] / MODEL_SPEC}'s; an ensemble averages nets of one "
                f"architecture, encoder and input size"
            )
    model = ProbabilityAverage([_build(spec) for _ in members])
    for member, folder in zip(model.members, members.values()):
        member.load_state_dict(load_weights(folder / MODEL_WEIGHTS))
    ensemble_spec = {**spec, "ensemble": {"members": list(members)}}
    write_model(out_dir, model, ensemble_spec)
    return ensemble_spec


def weights_digest(model_dir: str | Path) -> str:
    """sha256 of the model's weights and model.json: which model made an output folder."""
    digest = hashlib.sha256()
    for name in (MODEL_WEIGHTS, MODEL_SPEC):
        digest.update((Path(model_dir) / name).read_bytes())
    return digest.hexdigest()


def copy_semantic_net(weight: float, model_dir: Path, out_dir: Path) -> None:
    """The semantic_net stage: `model_dir`'s model files copied to a fresh `out_dir` when
    CyCADA's semantic loss is on (`weight` > 0), else only a constant marker there."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    if weight == 0:
        write_json(out_dir / "disabled.json", {"lambda_semantic": 0.0})
        return
    for name in (MODEL_WEIGHTS, MODEL_SPEC):
        with atomic_path(out_dir / name) as tmp:
            shutil.copyfile(model_dir / name, tmp)
