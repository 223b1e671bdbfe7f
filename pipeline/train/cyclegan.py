"""CycleGAN training between the sim and real image sets (Zhu et al. 2017).

The algorithm is the reference one (junyanz/pytorch-CycleGAN-and-pix2pix,
``models/cycle_gan_model.py``): each step updates both generators with both discriminators
frozen (adversarial + cycle + identity losses), then both discriminators on history pools of
detached fakes, their loss halved. The learning rate is constant until ``decay_from`` and falls
linearly to zero at ``iters``: a pure function of the step, so it needs no scheduler state.

A run resumes from the newest checkpoint in ``out_dir/checkpoints`` and continues bit for bit
(on CPU) as if it had never stopped: the checkpoint holds the four nets, both optimizers, both
pools, every RNG (torch's global one also drives the kornia crops and flips) and the step.
SIGINT / SIGTERM write a checkpoint at the current step before the run stops.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kornia.augmentation as K
import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from pipeline import dist, runtime
from pipeline.config import CycleGANConfig, flatten
from pipeline.io import atomic_path, write_json, write_png
from pipeline.losses import GANLoss, cycle_loss, identity_loss
from pipeline.models.cyclegan import build_discriminator, build_generator
from pipeline.train.checkpoint import (
    check_compatible,
    list_checkpoints,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from pipeline.train.image_pool import ImagePool
from pipeline.translate import GENERATOR_SETTINGS, to_tensor, translate_batch
from pipeline.weights import SUFFIX as WEIGHTS_SUFFIX
from pipeline.weights import save_weights

NET_NAMES = ("gen_sim2real", "gen_real2sim", "disc_real", "disc_sim")
LOSS_NAMES = (
    "loss_gan_sim2real",  # gen_sim2real fooling disc_real
    "loss_gan_real2sim",
    "loss_cycle_sim",  # sim -> real -> sim
    "loss_cycle_real",
    "loss_idt_sim2real",  # gen_sim2real(real) kept equal to real
    "loss_idt_real2sim",
    "loss_disc_real",
    "loss_disc_sim",
)
# Settings the trained weights depend on. A checkpoint resumes only when they and the world
# size (one sampling stream and pool pair per rank) match; runtime knobs (precision,
# channels_last, compile, threads, logging and checkpoint intervals) may change.
RESUME_KEYS = (
    "netG",
    "ngf",
    "ndf",
    "n_layers_D",
    "norm",
    "gan_mode",
    "lambda_cycle",
    "lambda_identity",
    "pool_size",
    "lr",
    "beta1",
    "beta2",
    "iters",
    "decay_from",
    "batch",
    "crop",
    "flip",
    "seed",
)


class TrainingDiverged(RuntimeError):
    """Losses stayed non-finite for more than ``max_bad_steps`` consecutive steps."""


def lr_factor(step: int, iters: int, decay_from: int) -> float:
    """Multiplier of the base learning rate for the update made at 0-based `step`: 1 before
    `decay_from`, then linear down to 0 at `iters`."""
    if step < decay_from:
        return 1.0
    return max(0.0, 1.0 - (step - decay_from) / max(1, iters - decay_from))


class UnpairedSampler:
    """Random, independent batches from the two image sets: unpaired, as CycleGAN needs.

    Frame indices come from the sampler's own generator; the crops and flips are kornia's,
    which draw from torch's global RNG (seeded and checkpointed by the loop).
    """

    def __init__(
        self,
        sim: np.ndarray,
        real: np.ndarray,
        batch: int,
        crop: tuple[int, int],
        flip: bool,
        generator: torch.Generator,
        device: torch.device,
        channels_last: bool,
    ):
        for name, images in (("sim", sim), ("real", real)):
            if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
                raise ValueError(f"{name} images must be (N, H, W, 3), got {images.shape}")
            if images.shape[1] < crop[0] or images.shape[2] < crop[1]:
                raise ValueError(
                    f"cyclegan.crop {list(crop)} is larger than the {name} frames "
                    f"({images.shape[1]}x{images.shape[2]}); lower the crop or data.size"
                )
        self.sim, self.real = sim, real
        self.batch = batch
        self.generator = generator
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        augmentations: list[nn.Module] = [K.RandomCrop(tuple(crop))]
        if flip:
            augmentations.append(K.RandomHorizontalFlip())
        self.augment = nn.Sequential(*augmentations)

    def _draw(self, images: np.ndarray) -> torch.Tensor:
        rows = torch.randint(len(images), (self.batch,), generator=self.generator)
        batch = to_tensor(images[rows.numpy()], self.device)  # (B, 3, H, W) in [-1, 1]
        return self.augment(batch).contiguous(memory_format=self.memory_format)  # (B, 3, h, w)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sim, real) batches, each (batch, 3, crop_h, crop_w) in [-1, 1]."""
        return self._draw(self.sim), self._draw(self.real)


@dataclasses.dataclass
class _Models:
    nets: dict[str, nn.Module]  # the plain modules: their state dicts are what gets saved
    runners: dict[str, nn.Module]  # what the step calls: possibly DDP-wrapped and compiled
    opt_gen: torch.optim.Adam
    opt_disc: torch.optim.Adam
    scaler: torch.amp.GradScaler


def build_nets(config: CycleGANConfig) -> dict[str, nn.Module]:
    """The two generators and two discriminators, initialised from torch's global RNG."""
    return {
        "gen_sim2real": build_generator(config.netG, config.ngf, config.norm),
        "gen_real2sim": build_generator(config.netG, config.ngf, config.norm),
        "disc_real": build_discriminator("n_layers", config.ndf, config.n_layers_D, config.norm),
        "disc_sim": build_discriminator("n_layers", config.ndf, config.n_layers_D, config.norm),
    }


def _build_models(config: CycleGANConfig, device: torch.device, precision: str) -> _Models:
    nets = build_nets(config)
    memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
    for net in nets.values():
        net.to(device=device, memory_format=memory_format)
    betas = (config.beta1, config.beta2)
    opt_gen = torch.optim.Adam(
        itertools.chain(nets["gen_sim2real"].parameters(), nets["gen_real2sim"].parameters()),
        lr=config.lr,
        betas=betas,
    )
    opt_disc = torch.optim.Adam(
        itertools.chain(nets["disc_real"].parameters(), nets["disc_sim"].parameters()),
        lr=config.lr,
        betas=betas,
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    return _Models(nets, dict(nets), opt_gen, opt_disc, scaler)


def _wrap_runners(models: _Models, config: CycleGANConfig, device: torch.device) -> None:
    """DDP-wrap (several ranks) and compile (if asked) after the weights are final."""
    for name, net in models.nets.items():
        runner: nn.Module = net
        if dist.world_size() > 1:
            device_ids = [device.index] if device.type == "cuda" else None
            runner = DistributedDataParallel(net, device_ids=device_ids)
        if config.compile:
            runner = torch.compile(runner)
        models.runners[name] = runner


def _all_finite(values: list[float], device: torch.device) -> bool:
    """True when every value is finite on every rank (ranks must skip a step together, or
    their gradient all-reduces would pair up with different steps)."""
    # On the device: NCCL reduces only CUDA tensors.
    bad = torch.tensor([0.0 if all(math.isfinite(v) for v in values) else 1.0], device=device)
    if dist.world_size() > 1:
        dist.all_reduce_sum(bad)
    return bad.item() == 0.0


def _train_step(
    models: _Models,
    sim: torch.Tensor,
    real: torch.Tensor,
    pools: dict[str, ImagePool],
    gan_loss: GANLoss,
    config: CycleGANConfig,
    precision: str,
    device: torch.device,
) -> dict[str, float] | None:
    """One generator + discriminator update on (B, 3, h, w) batches; the losses, or None when
    one was non-finite and nothing was updated."""
    run = models.runners
    models.opt_gen.zero_grad(set_to_none=True)
    models.opt_disc.zero_grad(set_to_none=True)

    # Generators, with the discriminators frozen so the adversarial terms move only G.
    for name in ("disc_real", "disc_sim"):
        models.nets[name].requires_grad_(False)
    with runtime.autocast(precision, device):
        fake_real = run["gen_sim2real"](sim)  # (B, 3, h, w)
        rec_sim = run["gen_real2sim"](fake_real)
        fake_sim = run["gen_real2sim"](real)
        rec_real = run["gen_sim2real"](fake_sim)
        losses = {
            "loss_gan_sim2real": gan_loss(run["disc_real"](fake_real), True),
            "loss_gan_real2sim": gan_loss(run["disc_sim"](fake_sim), True),
            "loss_cycle_sim": cycle_loss(rec_sim, sim) * config.lambda_cycle,
            "loss_cycle_real": cycle_loss(rec_real, real) * config.lambda_cycle,
        }
        if config.lambda_identity > 0:
            # A generator fed an image already in its output domain should leave it alone;
            # the reference scales this term by the cycle weight.
            weight = config.lambda_cycle * config.lambda_identity
            losses["loss_idt_sim2real"] = identity_loss(run["gen_sim2real"](real), real) * weight
            losses["loss_idt_real2sim"] = identity_loss(run["gen_real2sim"](sim), sim) * weight
    loss_gen = sum(losses.values())
    gen_values = torch.stack([loss.detach() for loss in losses.values()]).tolist()
    if not _all_finite(gen_values, device):
        return None
    models.scaler.scale(loss_gen).backward()

    # Discriminators, on pooled fakes; the pools detach, so no gradient reaches G.
    for name in ("disc_real", "disc_sim"):
        models.nets[name].requires_grad_(True)
    pooled_fake_real = pools["fake_real"].query(fake_real.detach())
    pooled_fake_sim = pools["fake_sim"].query(fake_sim.detach())
    with runtime.autocast(precision, device):
        loss_disc_real = 0.5 * (
            gan_loss(run["disc_real"](real), True)
            + gan_loss(run["disc_real"](pooled_fake_real), False)
        )
        loss_disc_sim = 0.5 * (
            gan_loss(run["disc_sim"](sim), True) + gan_loss(run["disc_sim"](pooled_fake_sim), False)
        )
    disc_values = torch.stack([loss_disc_real.detach(), loss_disc_sim.detach()]).tolist()
    if not _all_finite(disc_values, device):
        return None
    models.scaler.scale(loss_disc_real + loss_disc_sim).backward()

    # D's loss never depended on G's update (its fakes are detached), so stepping both here
    # equals the reference's G-step-then-D-step order, and a bad step leaves both untouched.
    models.scaler.step(models.opt_gen)
    models.scaler.step(models.opt_disc)
    models.scaler.update()
    values = dict(zip(losses, gen_values))
    values["loss_disc_real"], values["loss_disc_sim"] = disc_values
    return values


class _StopRequest:
    """Turns SIGINT / SIGTERM into a flag the loop checks after each step."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum
        # A second signal acts at once, for a step that hangs.
        signal.signal(signum, self._previous[signum])

    @contextmanager
    def installed(self) -> Iterator[_StopRequest]:
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        except ValueError:
            pass  # not the main thread: signals cannot be caught here
        try:
            yield self
        finally:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)

    def requested(self, device: torch.device) -> bool:
        """True when any rank got a signal, so that all ranks stop at the same step."""
        flag = torch.tensor([0.0 if self.signal is None else 1.0], device=device)
        if dist.world_size() > 1:
            dist.all_reduce_sum(flag)
        return flag.item() > 0

    def stop(self) -> None:
        if self.signal == signal.SIGINT:
            raise KeyboardInterrupt("interrupted; checkpoint written at this step")
        raise SystemExit(128 + (self.signal or signal.SIGTERM))


def _stream_seed(seed: int, rank: int, stream: str) -> int:
    """Independent seed for one named random stream of one rank."""
    words = [seed, rank, *stream.encode()]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> 1)


def _resume_settings(config: CycleGANConfig) -> dict[str, Any]:
    settings = {key: getattr(config, key) for key in RESUME_KEYS}
    settings["crop"] = list(config.crop)
    return settings


def _rank_state(sampler: UnpairedSampler, pools: dict[str, ImagePool]) -> dict[str, Any]:
    state = {
        "sampler": sampler.generator.get_state(),
        "rng": rng_state(),
    }
    for name, pool in pools.items():
        pool_state = pool.state_dict()
        pool_state["images"] = pool_state["images"].cpu()
        state[f"pool_{name}"] = pool_state
    return state


def _gather_rank_states(local: dict[str, Any]) -> list[dict[str, Any]]:
    """Every rank's sampling streams and pools, on rank 0 (others get an empty list)."""
    if dist.world_size() == 1:
        return [local]
    gathered: list[Any] | None = [None] * dist.world_size() if dist.is_main() else None
    torch.distributed.gather_object(local, gathered, dst=0)
    return gathered or []


@dataclasses.dataclass
class _Progress:
    """Loop bookkeeping that a checkpoint carries so a resumed run logs the same numbers."""

    step: int = 0
    bad_streak: int = 0
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    interval_sums: dict[str, float] = dataclasses.field(default_factory=dict)
    interval_steps: int = 0
    images: int = 0  # trained images over all runs and ranks, for img_per_s
    train_seconds: float = 0.0


def _sample_grid(
    models: _Models,
    sim_image: np.ndarray,
    real_image: np.ndarray,
    precision: str,
    device: torch.device,
) -> np.ndarray:
    """(2H, 3W, 3) uint8: sim | sim->real | reconstruction over real | real->sim | recon."""
    gen_sim2real, gen_real2sim = models.nets["gen_sim2real"], models.nets["gen_real2sim"]
    gen_sim2real.eval()
    gen_real2sim.eval()
    try:
        fake_real = translate_batch(gen_sim2real, sim_image[None], precision, device)
        rec_sim = translate_batch(gen_real2sim, fake_real, precision, device)
        fake_sim = translate_batch(gen_real2sim, real_image[None], precision, device)
        rec_real = translate_batch(gen_sim2real, fake_sim, precision, device)
    finally:
        gen_sim2real.train()
        gen_real2sim.train()
    top = np.concatenate([sim_image, fake_real[0], rec_sim[0]], axis=1)
    bottom = np.concatenate([real_image, fake_sim[0], rec_real[0]], axis=1)
    return np.concatenate([top, bottom], axis=0)


def _significant(value: float) -> float:
    """Six significant digits: enough for losses, and a decayed lr does not round to 0."""
    return float(f"{value:.6g}")


def write_curves(path: str | Path, history: list[dict[str, float]]) -> None:
    """Loss curves as CSV: one row per logged step, columns step, the losses, lr."""
    columns = ["step", *LOSS_NAMES, "lr"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="", extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow(
                {k: (_significant(v) if isinstance(v, float) else v) for k, v in row.items()}
            )


def _save_generators(out_dir: Path, models: _Models, config: CycleGANConfig) -> None:
    """Small weights-only files for translation, and the settings to rebuild the net."""
    for name in ("gen_sim2real", "gen_real2sim"):
        save_weights(out_dir / f"{name}{WEIGHTS_SUFFIX}", models.nets[name].state_dict())
    write_json(
        out_dir / GENERATOR_SETTINGS,
        {"netG": config.netG, "ngf": config.ngf, "norm": config.norm},
    )


def train_cyclegan(
    config: CycleGANConfig,
    sim: np.ndarray,
    real: np.ndarray,
    out_dir: str | Path,
    tracker: Any,
    curves_path: str | Path | None = None,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Train CycleGAN on (N, H, W, 3) uint8 sim and real frames; resume from out_dir if possible.

    Writes out_dir/checkpoints/, out_dir/samples/, the final generators (gen_sim2real.safetensors,
    gen_real2sim.safetensors, generator.json) and, with `curves_path`, the loss curves as CSV. Only
    rank 0 writes and logs. Returns the final metrics: the last logged losses, img_per_s,
    steps, precision, train_seconds.
    """
    out_dir = Path(out_dir)
    checkpoint_dir = out_dir / "checkpoints"
    device = device or runtime.pick_device()
    precision = runtime.resolve_precision(config.precision, device)
    is_main = dist.is_main()
    runtime.set_threads(config.threads)
    if device.type == "cuda":
        # Fixed crop size: let cuDNN pick the fastest kernels. Resume is then exact only up to
        # their non-determinism; on CPU every kernel used here is deterministic already.
        torch.backends.cudnn.benchmark = True

    # Every rank builds the same initial weights (DDP also broadcasts rank 0's), then draws
    # its own crops, flips and pool swaps.
    torch.manual_seed(config.seed)
    models = _build_models(config, device, precision)
    runtime.seed_everything(config.seed + dist.rank())
    sampler = UnpairedSampler(
        sim,
        real,
        config.batch,
        config.crop,
        config.flip,
        torch.Generator().manual_seed(_stream_seed(config.seed, dist.rank(), "sampler")),
        device,
        config.channels_last,
    )
    pools = {
        name: ImagePool(
            config.pool_size,
            torch.Generator().manual_seed(_stream_seed(config.seed, dist.rank(), name)),
        )
        for name in ("fake_real", "fake_sim")
    }
    progress = _Progress()
    settings = _resume_settings(config)

    checkpoints = list_checkpoints(checkpoint_dir)
    if checkpoints:
        # Assumes rank 0's output folder is visible to every rank (one node or a shared disk).
        saved = load_checkpoint(checkpoints[-1])
        check_compatible(saved["settings"], settings, str(checkpoints[-1]))
        for name, net in models.nets.items():
            net.load_state_dict(saved[name])
        models.opt_gen.load_state_dict(saved["opt_gen"])
        models.opt_disc.load_state_dict(saved["opt_disc"])
        if saved["scaler"] and models.scaler.is_enabled():
            models.scaler.load_state_dict(saved["scaler"])
        progress = _Progress(**saved["progress"])
        if len(saved["ranks"]) == dist.world_size():
            local = saved["ranks"][dist.rank()]
            sampler.generator.set_state(local["sampler"])
            for name, pool in pools.items():
                pool.load_state_dict(local[f"pool_{name}"])
            set_rng_state(local["rng"])
        elif is_main:
            # Another world size cannot replay the saved per-rank draws: weights, optimizers and
            # schedule continue, each rank's sampling stream and image pools start afresh.
            print(
                f"checkpoint written by {len(saved['ranks'])} processes, resuming with "
                f"{dist.world_size()}: sampling streams and image pools restart"
            )
        if is_main:
            print(f"resuming from {checkpoints[-1]} (step {progress.step} of {config.iters})")
    _wrap_runners(models, config, device)

    def save(step: int) -> None:
        ranks = _gather_rank_states(_rank_state(sampler, pools))
        if not is_main:
            return
        state = {
            "settings": settings,
            **{name: net.state_dict() for name, net in models.nets.items()},
            "opt_gen": models.opt_gen.state_dict(),
            "opt_disc": models.opt_disc.state_dict(),
            "scaler": models.scaler.state_dict() if models.scaler.is_enabled() else {},
            "progress": dataclasses.asdict(progress),
            "ranks": ranks,
        }
        save_checkpoint(checkpoint_dir, step, state)
        if curves_path is not None:
            write_curves(curves_path, progress.history)

    if is_main:
        tracker.log_params(
            {
                **flatten(config, "cyclegan."),
                "precision_resolved": precision,
                "device": str(device),
                "world_size": dist.world_size(),
                "resumed_from_step": progress.step,
            }
        )
    gan_loss = GANLoss(config.gan_mode)
    images_per_step = config.batch * dist.world_size()
    interval_seconds = 0.0
    stop = _StopRequest()
    bar = tqdm(
        total=config.iters,
        initial=min(progress.step, config.iters),
        desc="cyclegan",
        unit="it",
        dynamic_ncols=True,
        disable=not is_main,
    )
    with bar, stop.installed():
        while progress.step < config.iters:
            step = progress.step
            lr = config.lr * lr_factor(step, config.iters, config.decay_from)
            for group in (*models.opt_gen.param_groups, *models.opt_disc.param_groups):
                group["lr"] = lr
            tic = time.perf_counter()
            sim_batch, real_batch = sampler.next()
            values = _train_step(
                models, sim_batch, real_batch, pools, gan_loss, config, precision, device
            )
            seconds = time.perf_counter() - tic
            progress.step = step + 1
            bar.update()
            if values is None:
                progress.bad_streak += 1
                if progress.bad_streak > config.max_bad_steps:
                    kept = list_checkpoints(checkpoint_dir)
                    last = kept[-1] if kept else "none"
                    raise TrainingDiverged(
                        f"cyclegan step {progress.step}: a loss was NaN/inf in "
                        f"{progress.bad_streak} step(s) in a row, more than "
                        f"cyclegan.max_bad_steps={config.max_bad_steps}; stopped without saving. "
                        f"Last good checkpoint: {last}. Lower cyclegan.lr or use precision fp32."
                    )
            else:
                progress.bad_streak = 0
                progress.images += images_per_step
                progress.train_seconds += seconds
                interval_seconds += seconds
                progress.interval_steps += 1
                for key, value in values.items():
                    progress.interval_sums[key] = progress.interval_sums.get(key, 0.0) + value

            done = progress.step
            if (done % config.log_every == 0 or done == config.iters) and progress.interval_steps:
                means = {k: v / progress.interval_steps for k, v in progress.interval_sums.items()}
                progress.history.append({"step": done, **means, "lr": lr})
                img_per_s = progress.interval_steps * images_per_step / max(interval_seconds, 1e-9)
                if is_main:
                    tracker.log_metrics({**means, "lr": lr, "img_per_s": img_per_s}, step=done)
                    bar.set_postfix(
                        cycle=f"{means['loss_cycle_sim'] + means['loss_cycle_real']:.3f}",
                        disc=f"{means['loss_disc_real'] + means['loss_disc_sim']:.3f}",
                        refresh=False,
                    )
                progress.interval_sums, progress.interval_steps = {}, 0
                interval_seconds = 0.0
            if is_main and (done % config.sample_every == 0 or done == config.iters):
                grid = _sample_grid(models, sim[0], real[0], precision, device)
                tracker.log_image("samples", grid, step=done)
                write_png(out_dir / "samples" / f"step_{done:08d}.png", grid)
            stopping = stop.requested(device)
            if done % config.checkpoint_every == 0 or done == config.iters or stopping:
                save(done)
            if stopping:
                stop.stop()

    metrics: dict[str, Any] = {
        "steps": progress.step,
        "precision": precision,
        "img_per_s": round(progress.images / progress.train_seconds, 3)
        if progress.train_seconds
        else None,
        "train_seconds": round(progress.train_seconds, 3),
    }
    if progress.history:
        metrics.update({k: _significant(v) for k, v in progress.history[-1].items() if k != "step"})
    if is_main:
        _save_generators(out_dir, models, config)
        if curves_path is not None:
            write_curves(curves_path, progress.history)
        example = np.zeros((1, 3, *config.crop), dtype=np.float32)
        generator = build_generator(config.netG, config.ngf, config.norm)
        generator.load_state_dict(models.nets["gen_sim2real"].state_dict())
        tracker.log_torch_model(generator.eval(), "gen_sim2real", input_example=example)
        tracker.log_metrics(
            {k: v for k, v in metrics.items() if isinstance(v, float)}, step=progress.step
        )
    dist.barrier()
    return metrics
