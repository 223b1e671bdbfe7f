"""Training-step time of the project's three translators, CycleGAN, CUT and FastCUT, at one
setting, measured in one process with the steps interleaved (round robin), so a machine whose
load drifts slows all three alike.

Issue 24's setting by default: ResNet generator with 9 blocks, ngf = ndf = 32, 128 x 256 crops,
batch 1, 2 threads, fp32; --precision bf16 and --compile default are options. Prints the median
seconds per step of each and the ratios CUT / CycleGAN and FastCUT / CycleGAN (the issue's
targets: FastCUT at most 1 / 2.5 of CycleGAN's time, CUT at most 1 / 1.5).

    python -m benchmarks.translators --steps 5
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

import torch

from pipeline import runtime
from pipeline.config import load_params
from pipeline.train import cut, cyclegan

TRANSLATORS = ("cyclegan", "cut", "fastcut")


def build_steps(
    precision: str, compile: str, device: torch.device
) -> dict[str, Callable[[torch.Tensor, torch.Tensor], object]]:
    """Each translator's `step`, on the issue's setting, from params.yaml's sections."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--compile", choices=("eager", "default", "reduce-overhead"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    runtime.set_threads(args.threads)
    steps = build_steps(args.precision, args.compile or "eager", device)
    batches = torch.Generator().manual_seed(0)

    def batch() -> torch.Tensor:
        images = torch.rand(1, 3, 128, 256, generator=batches) * 2 - 1
        return images.to(device)

    times: dict[str, list[float]] = {name: [] for name in TRANSLATORS}
    for round_ in range(args.warmup + args.steps):
        for name in TRANSLATORS:
            sim, real = batch(), batch()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            _, applied = steps[name](sim, real)
            bool(applied)  # waits for the step, on any device
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - start)

    median = {name: statistics.median(values) for name, values in times.items()}
    print(
        f"{args.steps} steps each after {args.warmup} warm-up, interleaved; {args.threads} "
        f"threads, {args.precision}, compile {args.compile or 'eager'}, {device}"
    )
    for name in TRANSLATORS:
        spread = f"{min(times[name]):.3f}-{max(times[name]):.3f}"
        print(f"  {name:9s} {median[name]:.3f} s/step (median; range {spread})")
    for name, target in (("cut", 1.5), ("fastcut", 2.5)):
        speedup = median["cyclegan"] / median[name]
        print(
            f"  {name} / cyclegan time {median[name] / median['cyclegan']:.3f}: "
            f"{speedup:.2f}x faster (target >= {target}x)"
        )


if __name__ == "__main__":
    main()
