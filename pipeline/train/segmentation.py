"""The segmentation training loop: one net per training set (a `train_seg.variants` entry).

One loop trains every variant; what a step does is the variant's algorithm, a step object chosen
by name (`build_step`) in the shape of CycleGAN's trainer or DAFormer's `forward_train`: it holds
its own state (a teacher, a sampler, augmentations), says what the run must checkpoint
(`state()`), and each call draws its batches and runs its forward and backward passes, returning
the step's values (losses) by name. The loop then makes the optimizer and schedule step, lets the
step object follow the update (`after_update`: the EMA teacher), logs and validates.

The step objects and the registry `build_step` reads are pipeline.train.segmentation_steps'
(supervised, with FDA where asked; DACS and MIC self-training; labelled target frames); this
module is the loop, its set-up and what it checkpoints, validates and writes.

A variant with a `warm_start` block starts the student (and so its teacher) from another variant's
trained net, as DAFormer starts from a pretrained one. The learning rate follows poly decay,
after a linear warm-up (`train_seg.warmup`), with the decoder and head at
`train_seg.head_lr_mult` times the encoder's rate; a warm-started variant has its own two
(its `warm_start` block's).

Every random draw comes from torch's global generator, which the run layer (`pipeline.train.run`)
seeds per rank and checkpoints, so a resumed run continues bit for bit on CPU; the run layer also
handles signals, checkpoints and logging. Under torchrun the net is wrapped in
DistributedDataParallel (SyncBatchNorm on GPUs when `sync_bn` is set) and every rank draws its own
batches.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipeline import dist, runtime
from pipeline.config import TrainSegConfig, WarmStartSpec, run_settings
from pipeline.data.labels import NUM_CLASSES
from pipeline.data.split import PreparedSplit, check_same_frames
from pipeline.evaluate import evaluate_images
from pipeline.io import atomic_path
from pipeline.models.model_folder import MODEL_WEIGHTS, model_spec, write_model
from pipeline.models.segmentation import build_segmentation_model
from pipeline.tracking.base import Tracker
from pipeline.train.run import Run, spec_of
from pipeline.train.segmentation_steps import (
    Student,
    TrainingSplits,
    build_step,
    labelled_target_step,
)
from pipeline.weights import load_weights


def poly_factor(step: int, iters: int, power: float) -> float:
    """Learning-rate multiplier for the update at 0-based `step`: (1 - step / iters) ** power,
    0 from `iters` on."""
    return max(0.0, 1.0 - step / iters) ** power


# DAFormer's warm-up starts at this factor of the rate (configs/_base_/schedules/poly10warm.py).
WARMUP_RATIO = 1e-6


def lr_factor(step: int, iters: int, power: float, warmup_steps: int) -> float:
    """`poly_factor`, times DAFormer's linear warm-up over the first `warmup_steps` updates (0:
    none): mmcv's r + (1 - r) * step / warmup_steps, r = WARMUP_RATIO, so update 0 runs at r."""
    warm = 1.0
    if step < warmup_steps:
        warm = WARMUP_RATIO + (1.0 - WARMUP_RATIO) * step / warmup_steps
    return warm * poly_factor(step, iters, power)


def parameter_groups(
    model: nn.Module, lr: float, head_lr_mult: float, no_decay: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Optimizer groups: the encoder at `lr`, the rest (decoder and segmentation head, DAFormer's
    "head") at `lr * head_lr_mult`; encoder parameters whose name holds a word of `no_decay` go
    to a group of their own with weight decay 0 (mmcv 1.3's custom_keys with decay_mult 0).
    mmcv applies only the first key that matches, longest first: DAFormer's "head" comes before
    "norm", so head parameters keep their weight decay whatever their names. Empty groups are
    left out."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        in_head = not name.startswith("encoder.")
        decayed = in_head or not any(word in name for word in no_decay)
        groups.setdefault((in_head, decayed), []).append(param)
    out = []
    for (in_head, decayed), params in sorted(groups.items()):
        group: dict[str, Any] = {"params": params}
        if in_head:
            group["lr"] = lr * head_lr_mult
        if not decayed:
            group["weight_decay"] = 0.0
        out.append(group)
    return out


def warm_start_file(out_dir: Path, warm_start: WarmStartSpec) -> Path:
    """The trained net a warm start begins from: models/seg/INIT_FROM/model.safetensors, beside
    `out_dir` (models/seg/VARIANT)."""
    return Path(out_dir).parent / warm_start.init_from / MODEL_WEIGHTS


def _check_warm_start_file(path: Path, warm_start: WarmStartSpec) -> None:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no trained net to warm-start from (warm_start.init_from: "
            f"{warm_start.init_from}); train that variant first: dvc repro "
            f"train_seg@{warm_start.init_from}"
        )


def load_warm_start(model: nn.Module, path: Path, warm_start: WarmStartSpec) -> None:
    """Load the weights at `path` into `model`; a missing file or another net's names it."""
    _check_warm_start_file(path, warm_start)
    try:
        model.load_state_dict(load_weights(path))
    except RuntimeError as err:
        raise ValueError(
            f"{path}: not a net of this train_seg.arch and train_seg.encoder, so the warm start "
            f"from {warm_start.init_from} cannot load it: {err}"
        ) from err


def make_optimizer(
    params: Iterable[nn.Parameter] | Iterable[dict[str, Any]], config: TrainSegConfig
) -> torch.optim.Optimizer:
    # The fused kernels are 2-3x faster than the per-tensor loop on CPU (measured: AdamW on
    # Unet/resnet18, 9 vs 26 ms per step) and deterministic, so resumes stay bit-identical.
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            fused=True,
        )
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)


def variant_settings(config: TrainSegConfig, variant: str, out_dir: Path) -> dict[str, Any]:
    """The settings that define one variant's run (trained into `out_dir`): a checkpoint resumes
    only under the same. A warm-started run is also defined by the bytes it starts from."""
    spec = config.variants[variant]
    settings = {**run_settings(config), "variant": variant, **dataclasses.asdict(spec)}
    if spec.warm_start is not None:
        path = warm_start_file(out_dir, spec.warm_start)
        _check_warm_start_file(path, spec.warm_start)
        settings["warm_start_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return settings


VALIDATION_COLUMNS = ["step", "monitor_miou", "monitor_pixel_accuracy"]


class ValidationCurve:
    """Scores of the net on a labelled split during training, checkpointed with the run."""

    def __init__(self, split: PreparedSplit | None, every: int) -> None:
        self.split = split if every > 0 else None
        self.every = every
        self.rows: list[dict[str, float]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state["rows"])

    def write(self, path: Path) -> None:
        """The curve as CSV; only its header when validation is off (`train_seg.val_every`
        0), so the file DVC declares always exists."""
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=VALIDATION_COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows)


@dataclasses.dataclass
class SegmentationRun:
    """What the loop starts from (`start_run`)."""

    student: Student
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    run: Run
    validation: ValidationCurve

    def validate_if_due(self, tracker: Tracker) -> None:
        """Score the net on the validation split at working resolution every `val_every`
        steps and at the last (monitoring only: `monitor_miou`, not the evaluate stage's)."""
        curve, student = self.validation, self.student
        if curve.split is None or not self.run.due(curve.every):
            return
        student.model.eval()
        evaluation = evaluate_images(
            student.model,
            curve.split.images,
            curve.split.labels,
            16,
            student.precision,
            student.device,
        )
        student.model.train()
        scores = evaluation.confusion.scores()
        row = {"monitor_miou": scores["miou"], "monitor_pixel_accuracy": scores["pixel_accuracy"]}
        curve.rows.append({"step": self.run.step, **row})
        tracker.log_metrics(row, step=self.run.step)

    def resume(self, config: TrainSegConfig) -> None:
        """Load the newest checkpoint into everything held; then the steps call the net
        DDP-wrapped under torchrun, with SyncBatchNorm on GPUs when `sync_bn` is set."""
        self.run.resume()
        student = self.student
        net: nn.Module = student.model
        if dist.world_size() > 1 and config.sync_bn and student.device.type == "cuda":
            # SyncBatchNorm only runs on accelerators; CPU (gloo) ranks keep per-rank statistics.
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        student.net = dist.wrap(net, student.device).train()

    def update(self) -> None:
        """One optimizer and schedule step on the gradients the step's backward passes left."""
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()

    def finish(
        self,
        config: TrainSegConfig,
        variant: str,
        out_dir: Path,
        tracker: Tracker,
        example: np.ndarray,
    ) -> dict[str, Any]:
        """The run summary; rank 0 writes the model files and logs the model under `variant`
        (the row's name: a round's, for a round). `example` is one (H, W, 3) uint8 training
        frame: its size is the working size the net was trained at, and it is the logged
        model's input example."""
        summary = self.run.finish()
        if self.validation.rows:
            summary.update({k: v for k, v in self.validation.rows[-1].items() if k != "step"})
        if dist.is_main():
            self.validation.write(out_dir / "val_curve.csv")
            model = self.student.model.eval().to("cpu", memory_format=torch.contiguous_format)
            spec = model_spec(config.arch, config.encoder, example.shape[:2])
            write_model(out_dir, model, spec)
            tracker.log_segmentation_model(out_dir, variant, example)
        dist.barrier()
        return summary


def start_run(
    config: TrainSegConfig,
    variant: str,
    out_dir: Path,
    tracker: Tracker,
    val: PreparedSplit | None = None,
    row: str | None = None,
    extra_settings: dict[str, Any] | None = None,
) -> SegmentationRun:
    """The net (identical on every rank; a warm start's weights), AdamW/SGD with its warm-up and
    poly schedule (the head at head_lr_mult times the rate), and the run that checkpoints them under
    out_dir/checkpoints and writes out_dir/curve.csv; with `val` and `config.val_every`, also the
    validation curve."""
    device = runtime.pick_device()
    precision = runtime.resolve_precision(config.precision, device)
    runtime.set_threads(config.threads)
    # Every rank builds the same initial weights; the run then seeds each rank's own streams.
    torch.manual_seed(config.seed)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    model = build_segmentation_model(
        config.arch, config.encoder, NUM_CLASSES, config.encoder_weights
    ).to(device, memory_format=memory_format)
    warm_start = config.variants[variant].warm_start
    if warm_start is not None:
        load_warm_start(model, warm_start_file(out_dir, warm_start), warm_start)
    warmup, head_lr_mult = config.schedule(variant)
    if head_lr_mult == 1 and not config.no_weight_decay:
        optimizer = make_optimizer(model.parameters(), config)
    else:
        groups = parameter_groups(model, config.lr, head_lr_mult, config.no_weight_decay)
        optimizer = make_optimizer(groups, config)
    warmup_steps = round(warmup * config.iters)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config.iters, config.poly_power, warmup_steps)
    )
    settings = {**variant_settings(config, variant, out_dir), **(extra_settings or {})}
    name, curves = f"train_seg {row or variant}", out_dir / "curve.csv"
    run = Run(
        spec_of(config, name, out_dir / "checkpoints", settings, curves, "train_seg."),
        tracker,
        device,
    )
    validation = ValidationCurve(val, config.val_every)
    run.hold(model=model, optimizer=optimizer, schedule=schedule, validation=validation)
    tracker.set_tags({"precision": precision, "channels_last": config.channels_last})
    student = Student(model, device, precision, memory_format, net=model)
    return SegmentationRun(student, optimizer, schedule, run, validation)


def train_segmentation(
    config: TrainSegConfig,
    variant: str,
    images: PreparedSplit,
    labels: PreparedSplit,
    style: PreparedSplit | None,
    out_dir: str | Path,
    tracker: Tracker,
    val: PreparedSplit | None = None,
    target: PreparedSplit | None = None,
    target_labels: PreparedSplit | None = None,
    pseudo_labels: tuple[PreparedSplit, float] | None = None,
    row: str | None = None,
    extra_settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train the net of `config.variants[variant]` on `images` with `labels` (the same frames in
    the same order; FDA styles from `style`, unlabelled real frames from `target`, labelled ones
    from `target_labels`, pseudo-labelled ones at their weight from `pseudo_labels` (a round),
    where the variant's step reads them), resuming from
    out_dir/checkpoints; write the model (model.safetensors, model.json), curve.csv and
    val_curve.csv (scored on `val`) to `out_dir`, the model logged under `row` (default: the
    variant; a round's name) with `extra_settings` defining the run beside the variant's.
    Returns the run summary: steps, resumed_from, img_per_s, train_seconds, the step's values
    (loss; DACS also loss_mix, pseudo_weight; MIC also loss_masked), lr (the encoder's; and the
    last monitor_* scores)."""
    if labels.labels is None:
        raise ValueError(f"{labels.root}: the label split has no labels.npy")
    check_same_frames(images, labels)
    out_dir = Path(out_dir)
    setup = start_run(config, variant, out_dir, tracker, val, row, extra_settings)
    splits = TrainingSplits(images, labels, style, target, target_labels, pseudo_labels)
    algorithm = build_step(config.variants[variant].step, setup.student, config, variant, splits)
    setup.run.hold(**algorithm.state())
    setup.resume(config)
    tracker.log_params(algorithm.params())
    labelled = labelled_target_step(algorithm)
    if labelled is not None:
        names = labelled.names
        drawn = {"split": str(labelled.split.root), "frames": names}
        tracker.log_dict(drawn, "target_label_frames")
        tracker.set_tags({"semi_supervised": "true", "target_label_frames": str(len(names))})
        print(
            f"{variant}: {len(names)} labelled target frames of {labelled.split.root}: "
            f"{', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"
        )

    for step in setup.run:
        lr = setup.schedule.get_last_lr()[0]
        values = algorithm(step)
        setup.update()
        algorithm.after_update(step)
        setup.run.log(values, lr=lr)
        setup.validate_if_due(tracker)
    return setup.finish(config, row or variant, out_dir, tracker, images.images[0])
