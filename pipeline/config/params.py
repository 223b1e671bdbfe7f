"""The sections after training (``evaluate``, ``fid``, ``report``), the runtime ones
(``tracking``, ``distributed``), and `Params`, the whole of params.yaml, which checks what one
section asks of another."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Literal

from pipeline.config.base import RUNTIME, Precision, check
from pipeline.config.data import DataConfig, DemoDataConfig, PrepareConfig
from pipeline.config.train_seg import TrainSegConfig
from pipeline.config.translators import CUTConfig, CycleGANConfig, TranslateConfig


@dataclasses.dataclass(frozen=True)
class SlidingWindowSpec:
    """`window`-sized crops of the working-size frame every `stride` pixels (H, W each), their
    logits averaged where they overlap: mmseg's slide_inference, which HRDA and MIC score with
    (1024x1024 windows, stride 512, on 1024x2048 frames)."""

    window: tuple[int, int]
    stride: tuple[int, int]

    def validate(self, key: str) -> None:
        check(
            all(side > 0 and side % 32 == 0 for side in self.window),
            f"{key}.window",
            list(self.window),
            "[H, W], positive multiples of 32 (the encoder downsamples 5 times)",
        )
        check(
            all(0 < step <= side for step, side in zip(self.stride, self.window)),
            f"{key}.stride",
            list(self.stride),
            f"[H, W], each in [1, its side of {key}.window={list(self.window)}]",
        )


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    batch: int
    precision: Precision
    # Predictions on the first N val frames are kept for the report's prediction grid.
    saved_predictions: int
    # Classes the headline mIoU averages: 19 (Cityscapes), 16 (the SYNTHIA protocol: no terrain,
    # truck, train) or 13 (also no wall, fence, pole). All three are reported either way.
    classes: Literal[19, 16, 13]
    # null: the net sees each working-size val frame whole (DAFormer's protocol when the working
    # size is 512x1024); else sliding windows over it (HRDA's and MIC's protocol at 1024x2048).
    sliding_window: SlidingWindowSpec | None

    def __post_init__(self) -> None:
        check(self.batch > 0, "evaluate.batch", self.batch, "an integer > 0")
        if self.sliding_window is not None:
            self.sliding_window.validate("evaluate.sliding_window")


@dataclasses.dataclass(frozen=True)
class FidConfig:
    # torch-fidelity's Inception-v3 state dict (a local file) for the translators' FID / KID;
    # null: not computed (docs/translators.md, "Translation quality").
    inception_weights: str | None


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    n_samples: int

    def __post_init__(self) -> None:
        check(self.n_samples > 0, "report.n_samples", self.n_samples, "an integer > 0")


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    experiment: str
    enabled: bool
    # Also log each trained model to MLflow (and register the segmentation nets). DVC's cache
    # keeps every model already; false keeps each model once, there, and the MLflow run records
    # the model folder and its weights digest instead.
    log_models: bool


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How `stages/launch.py` starts training stages: one process, or torchrun."""

    nproc_per_node: int
    nnodes: int
    rdzv_endpoint: str

    def __post_init__(self) -> None:
        check(self.nproc_per_node >= 1, "distributed.nproc_per_node", self.nproc_per_node, ">= 1")
        check(self.nnodes >= 1, "distributed.nnodes", self.nnodes, ">= 1")


@dataclasses.dataclass(frozen=True)
class Params:
    data: DataConfig
    demo_data: DemoDataConfig
    prepare: PrepareConfig
    cyclegan: CycleGANConfig
    cut: CUTConfig
    translate: TranslateConfig
    train_seg: TrainSegConfig
    evaluate: EvaluateConfig
    fid: FidConfig
    report: ReportConfig
    # Where runs are logged and how many processes train: neither changes an output.
    tracking: TrackingConfig = field(metadata=RUNTIME)
    distributed: DistributedConfig = field(metadata=RUNTIME)

    def __post_init__(self) -> None:
        # Crops are cut from images at the working resolution, so they must fit inside it. The
        # cut section's crop is only a default: each named translator's own must fit, named
        # where it is set.
        translators = [
            (f"cut.translators.{name}.crop" if "crop" in entry else "cut.crop", name)
            for name, entry in self.cut.translators.items()
        ]
        for key, crop in (
            ("cyclegan.crop", self.cyclegan.crop),
            *((key, self.cut.translator(name).crop) for key, name in translators),
            ("train_seg.crop", self.train_seg.crop),
        ):
            check(
                crop[0] <= self.data.size[0] and crop[1] <= self.data.size[1],
                key,
                list(crop),
                f"a crop no bigger than data.size={list(self.data.size)}",
            )


def cut_config(params: Params, name: str) -> CUTConfig:
    """The resolved settings of translator `name` of params.yaml's cut section."""
    return params.cut.translator(name)
