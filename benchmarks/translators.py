"""Training-step time of the project's three translators, CycleGAN, CUT and FastCUT, at one
setting, measured in one process with the steps interleaved (round robin), so a machine whose
load drifts slows all three alike.

The default setting: ResNet generator with 9 blocks, ngf = ndf = 32, 128 x 256 crops, batch 1,
2 threads, fp32; --precision bf16 and --compile default are options. Prints the median seconds
per step of each and the ratios CUT / CycleGAN and FastCUT / CycleGAN (the targets: FastCUT at
most 1 / 2.5 of CycleGAN's time, CUT at most 1 / 1.5).

    python -m benchmarks translators
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from benchmarks.harness import (
    CPU,
    DEFAULT_THREADS,
    Results,
    interleaved,
    measurement,
    median,
    partial,
)
from pipeline import runtime
from pipeline.config import load_params
from pipeline.train import cut, cyclegan

TRANSLATORS = ("cyclegan", "cut", "fastcut")


def build_steps(
    precision: str, compile: str, device: torch.device
) -> dict[str, Callable[[torch.Tensor, torch.Tensor], object]]:
    """Each translator's `step`, on the module's setting, from params.yaml's sections."""
    params = load_params()
    setting = dict(
        netG="resnet_9blocks",
        ngf=32,
        ndf=32,
        crop=(128, 256),
        batch=1,
        precision=precision,
        compile=compile,
    )
    steps: dict[str, Callable[[torch.Tensor, torch.Tensor], object]] = {}
    torch.manual_seed(0)
    gan = cyclegan.build_trainer(dataclasses.replace(params.cyclegan, **setting), device, precision)
    gan.wrap(compile)
    steps["cyclegan"] = gan.step
    modes = {"cut": {"mode": "cut"}, "fastcut": {"mode": "fastcut"}}
    section = dataclasses.replace(params.cut, translators=modes)
    for name in ("cut", "fastcut"):
        config = dataclasses.replace(section.translator(name), **setting)
        torch.manual_seed(0)
        draws = torch.Generator(device=device).manual_seed(0)
        trainer = cut.build_trainer(cut.build_nets(config), config, device, precision, draws)
        trainer.wrap(compile)
        steps[name] = trainer.step
    return steps


@measurement(
    "translators",
    page="bench",
    title="Translators' training steps: CycleGAN, CUT, FastCUT",
    columns="precision|translator|s_per_step=s/step|speedup=x faster than CycleGAN|target",
    intro="ResNet generator with 9 blocks, ngf = ndf = 32, 128 x 256 crops, batch 1, 2 threads, "
    "interleaved round robin in one process (median over the rounds). The public CUT code "
    "measured this way: CycleGAN 2.25, CUT 1.36 (1.66x), FastCUT 0.71 s/step (3.19x).",
)
def translators(quick: bool) -> Results:
    """The targets: CUT >= 1.5x and FastCUT >= 2.5x faster per step than our CycleGAN."""
    runtime.set_threads(2)
    rows = []
    batches = torch.Generator().manual_seed(0)
    for precision in ("fp32", "bf16"):
        steps = build_steps(precision, "eager", CPU)

        def call(step: Callable[..., object]) -> Callable[[], object]:
            def run() -> object:
                images = torch.rand(2, 3, 128, 256, generator=batches) * 2 - 1
                _, applied = step(images[:1], images[1:])
                return bool(applied)  # waits for the step

            return run

        samples = interleaved(
            {name: call(step) for name, step in steps.items()}, 2 if quick else 8, warmup=1
        )
        per_step = {name: median(values) for name, values in samples.items()}
        for name in TRANSLATORS:
            rows.append(
                {
                    "precision": precision,
                    "translator": name,
                    "s_per_step": per_step[name],
                    "speedup": per_step["cyclegan"] / per_step[name],
                    "target": {"cut": ">= 1.5x", "fastcut": ">= 2.5x"}.get(name, ""),
                }
            )
        partial({"rows": rows})
    runtime.set_threads(DEFAULT_THREADS)
    return {"rows": rows}
