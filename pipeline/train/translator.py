"""What the unpaired translators' training (CycleGAN, CUT) shares: the run set-up and loop
(`train_translator`), the batch sampler, the learning-rate schedule, the fused Adam optimizers and
what a step object holds besides its nets (`TranslatorTrainer`), how a step applies or skips its
update, and the generator folder a run ends with. A translator brings its nets and its step."""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from pipeline import dist, runtime
from pipeline.config import run_settings
from pipeline.data.tensors import to_gan_input
from pipeline.io import write_png
from pipeline.models.cyclegan import build_generator
from pipeline.models.generator_folder import write_generators
from pipeline.tracking.base import Tracker
from pipeline.train.run import Run, Stateful, spec_of


def lr_factor(step: int, iters: int, decay_from: int) -> float:
    """Multiplier of the base learning rate for the update made at 0-based `step`: 1 before
    `decay_from`, then linear down to 0 at `iters`."""
    if step < decay_from:
        return 1.0
    return max(0.0, 1.0 - (step - decay_from) / max(1, iters - decay_from))


class UnpairedSampler:
    """Random, independent batches from the two image sets: unpaired, as CycleGAN and CUT need.

    Each batch draws, in this order, frame rows, crop offsets and (with `flip`) horizontal
    flips from `generator`, a stream the run checkpoints, so a resumed run draws the same
    batches. `frames_on_device` decides where the frames live and so where `generator` must:

    - True (`generator` on `device`): the frames are uploaded once and each batch is one gather
      on the device (rows, crop window and flip together); nothing waits for the host or makes
      the host wait.
    - False (`generator` on the CPU): each crop window is read from the (memory-mapped) host
      arrays, flipped there and copied over, from page-locked memory on CUDA. Only the window
      is read, which matters for full-size frames that do not fit on the device.

    Both give the same batches for the same draws.
    `section` ("cyclegan", "cut") names the crop setting in errors.
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
        frames_on_device: bool,
        section: str = "cyclegan",
    ):
        for name, images in (("sim", sim), ("real", real)):
            if images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
                raise ValueError(f"{name} images must be (N, H, W, 3), got {images.shape}")
            if images.shape[1] < crop[0] or images.shape[2] < crop[1]:
                raise ValueError(
                    f"{section}.crop {list(crop)} is larger than the {name} frames "
                    f"({images.shape[1]}x{images.shape[2]}); lower the crop or data.size"
                )
        draws_on = device if frames_on_device else torch.device("cpu")
        if generator.device.type != draws_on.type:
            raise ValueError(f"the sampler's generator must be on {draws_on}")
        self.batch, self.crop, self.flip = batch, crop, flip
        self.generator = generator
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.frames_on_device = frames_on_device
        # (N, H, W, 3) uint8: tensors on the device, or the host arrays as given.
        self.sim: np.ndarray | Tensor = self._place(sim)
        self.real: np.ndarray | Tensor = self._place(real)

    def _place(self, images: np.ndarray) -> np.ndarray | Tensor:
        if not self.frames_on_device:
            return images
        frames = torch.empty(images.shape, dtype=torch.uint8, device=self.device)
        for first in range(0, len(images), 256):  # in chunks: no second host copy of the set
            chunk = np.ascontiguousarray(images[first : first + 256], dtype=np.uint8)
            frames[first : first + 256].copy_(torch.from_numpy(chunk))
        return frames

    def _draw(self, images: np.ndarray | Tensor) -> Tensor:
        """(B, 3, crop_h, crop_w) in [-1, 1] from one image set."""
        count, height, width = images.shape[:3]
        crop_h, crop_w = self.crop
        where = {"generator": self.generator, "device": self.generator.device}
        rows = torch.randint(count, (self.batch,), **where)
        tops = torch.randint(height - crop_h + 1, (self.batch,), **where)
        lefts = torch.randint(width - crop_w + 1, (self.batch,), **where)
        if self.flip:
            flips = torch.rand(self.batch, **where) < 0.5
        else:
            flips = torch.zeros(self.batch, dtype=torch.bool, device=self.generator.device)
        if isinstance(images, Tensor):
            crops = _gather_crops(images, rows, tops, lefts, flips, self.crop)
        else:
            windows = [
                images[row, top : top + crop_h, left : left + crop_w]
                for row, top, left in zip(rows.tolist(), tops.tolist(), lefts.tolist())
            ]
            crops = torch.from_numpy(
                np.stack([w[:, ::-1] if f else w for w, f in zip(windows, flips.tolist())])
            )
        batch = to_gan_input(crops, self.device)  # (B, 3, crop_h, crop_w)
        return batch.contiguous(memory_format=self.memory_format)

    def next(self) -> tuple[Tensor, Tensor]:
        """(sim, real) batches, each (batch, 3, crop_h, crop_w) in [-1, 1]."""
        return self._draw(self.sim), self._draw(self.real)


def _gather_crops(
    frames: Tensor,
    rows: Tensor,
    tops: Tensor,
    lefts: Tensor,
    flips: Tensor,
    crop: tuple[int, int],
) -> Tensor:
    """(B, crop_h, crop_w, 3) windows of (N, H, W, 3) `frames`, each mirrored left-right where
    `flips` says so, as one indexing kernel; `rows`, `tops`, `lefts`, `flips` are (B,)."""
    crop_h, crop_w = crop
    ys = tops[:, None, None] + torch.arange(crop_h, device=frames.device)[None, :, None]
    xs = torch.arange(crop_w, device=frames.device)
    xs = torch.where(flips[:, None, None], crop_w - 1 - xs, xs) + lefts[:, None, None]
    return frames[rows[:, None, None], ys, xs]  # (B, h, 1) and (B, 1, w) broadcast to (B, h, w)


def frames_fit_on_device(device: torch.device, *image_sets: np.ndarray) -> bool:
    """Whether the image sets may live on `device` for the whole run: CUDA, and together at
    most a quarter of its memory (the rest is for the nets, their activations and the pools)."""
    if device.type != "cuda":
        return False
    total = torch.cuda.get_device_properties(device).total_memory
    return sum(images.nbytes for images in image_sets) <= total // 4


def fused_adam(lr: float, betas: tuple[float, float], *modules: nn.Module) -> torch.optim.Adam:
    """Adam over the modules' parameters, fused: one kernel for all of them, and it can skip a
    step on the device (`apply_updates`)."""
    parameters = itertools.chain(*(m.parameters() for m in modules))
    return torch.optim.Adam(parameters, lr=lr, betas=betas, fused=True)


def linear_decay(
    optimizer: torch.optim.Optimizer, iters: int, decay_from: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule of `lr_factor`, stepped once per update."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, iters, decay_from)
    )


class TranslatorNets(Protocol):
    def named(self) -> dict[str, nn.Module]:
        """Every net by its checkpoint name, in construction order."""
        ...

    def generators(self) -> tuple[nn.Module, nn.Module | None]:
        """gen_sim2real and, where the translator has one, gen_real2sim: what a run ends with."""
        ...


@dataclasses.dataclass(kw_only=True)
class TranslatorTrainer(abc.ABC):
    """What every translator's step object holds besides its nets and objective: the generator
    side's and the discriminator side's Adam (`adam_updates`), their schedules, the fp16 loss
    scaler, and where and how the step computes.

    A translator adds its nets, objective and `wrap`, `step` and `sample_grid`; `train_translator`
    drives it."""

    nets: TranslatorNets  # the plain modules: their state dicts are what gets saved
    opt_gen: torch.optim.Adam
    opt_disc: torch.optim.Adam
    schedule_gen: torch.optim.lr_scheduler.LambdaLR
    schedule_disc: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    precision: str
    device: torch.device
    compile: str = "eager"  # set by `wrap`

    def lr(self) -> float:
        """The learning rate of the next update."""
        return self.schedule_gen.get_last_lr()[0]

    def held(self) -> dict[str, Stateful]:
        """What a checkpoint holds of the trainer, equal on every rank, in this order."""
        return {
            **self.nets.named(),
            "opt_gen": self.opt_gen,
            "opt_disc": self.opt_disc,
            "schedule_gen": self.schedule_gen,
            "schedule_disc": self.schedule_disc,
            "scaler": self.scaler,
        }

    def per_rank(self) -> dict[str, Stateful]:
        """What each rank has its own of (image pools); none unless a translator says so."""
        return {}

    def begin_step(self) -> None:
        """Before a step's first phase: a fresh CUDA-graph step and no gradients left."""
        if self.compile == "reduce-overhead":
            # The last step's graph outputs (losses, fakes) are consumed: their memory may be
            # reused by this step's replays.
            torch.compiler.cudagraph_mark_step_begin()
        self.opt_gen.zero_grad(set_to_none=True)
        self.opt_disc.zero_grad(set_to_none=True)

    @abc.abstractmethod
    def wrap(self, compile: str) -> None:
        """DDP-wrap the nets once the weights are final; compile the step's phases unless
        `compile` is "eager"."""

    @abc.abstractmethod
    def step(self, sim: Tensor, real: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """One update on (B, 3, h, w) batches: the losses (device scalars) and whether it was
        applied (a device bool, equal on every rank)."""

    @abc.abstractmethod
    def sample_grid(self, sim_image: np.ndarray, real_image: np.ndarray) -> np.ndarray:
        """A uint8 grid of what the generators make of one (H, W, 3) sim and one real frame."""


def place_nets(nets: TranslatorNets, device: torch.device, channels_last: bool) -> None:
    """Move every net to `device`, in `channels_last` memory format where asked."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for net in nets.named().values():
        net.to(device=device, memory_format=memory_format)


def adam_updates(
    config: Any,
    generator_side: Sequence[nn.Module],
    discriminator_side: Sequence[nn.Module],
    device: torch.device,
    precision: str,
) -> dict[str, Any]:
    """The `TranslatorTrainer` fields of a translator section (`config`: its lr, beta1, beta2,
    iters, decay_from), as keyword arguments: one fused Adam over each side's parameters, each
    with its `linear_decay`, the loss scaler (enabled for fp16), device and precision."""
    betas = (config.beta1, config.beta2)
    opt_gen = fused_adam(config.lr, betas, *generator_side)
    opt_disc = fused_adam(config.lr, betas, *discriminator_side)
    return {
        "opt_gen": opt_gen,
        "opt_disc": opt_disc,
        "schedule_gen": linear_decay(opt_gen, config.iters, config.decay_from),
        "schedule_disc": linear_decay(opt_disc, config.iters, config.decay_from),
        "scaler": torch.amp.GradScaler(device.type, enabled=precision == "fp16"),
        "precision": precision,
        "device": device,
    }


@contextlib.contextmanager
def evaluating(*generators: nn.Module) -> Iterator[None]:
    """The generators in eval mode inside the block, back in training mode after it."""
    for generator in generators:
        generator.eval()
    try:
        yield
    finally:
        for generator in generators:
            generator.train()


def image_grid(*rows: Sequence[np.ndarray]) -> np.ndarray:
    """(H, W, 3) images side by side in each row, the rows one above the other."""
    return np.concatenate([np.concatenate(list(row), axis=1) for row in rows], axis=0)


def compile_phases(trainer: object, mode: str, *phases: str) -> None:
    """Replace each named phase method of `trainer` by its torch.compile'd twin: one graph for
    the phase, one for its backward. Crop and batch are fixed, so the graphs are static."""
    for name in phases:
        setattr(trainer, name, torch.compile(getattr(trainer, name), mode=mode, dynamic=False))


def non_finite(losses: Mapping[str, Tensor]) -> Tensor:
    """1.0 on the device when any of `losses` is NaN or infinite, else 0.0 (no host sync)."""
    return (~torch.isfinite(torch.stack([v.detach() for v in losses.values()]))).any().float()


def apply_updates(
    optimizers: tuple[torch.optim.Optimizer, ...], scaler: torch.amp.GradScaler, bad: Tensor
) -> None:
    """Step `optimizers` unless `bad` (a device float, > 0 when a loss was non-finite on some
    rank, equal on every rank): no host synchronisation either way."""
    # Fused Adam skips an update only where found_inf is exactly 1.0: a count of bad ranks or
    # losses (2.0, ...) would let the update through.
    found_inf = (bad > 0).float()
    for optimizer in optimizers:
        if scaler.is_enabled():
            scaler.step(optimizer)  # fp16: the scaler skips non-finite gradients
        else:
            optimizer.found_inf = found_inf  # fused Adam skips the update on the device
            optimizer.step()
    scaler.update()


def save_generators(
    out_dir: Path,
    tracker: Tracker,
    crop: tuple[int, int],
    settings: tuple[str, int, str],
    gen_sim2real: nn.Module,
    gen_real2sim: nn.Module | None = None,
    family: str | None = None,
) -> None:
    """The run's generator folder (`write_generators`) and gen_sim2real as a tracked model;
    `settings` is (netG, ngf, norm)."""
    netG, ngf, norm = settings
    write_generators(out_dir, gen_sim2real, gen_real2sim, netG, ngf, norm, family)
    example = np.zeros((1, 3, *crop), dtype=np.float32)
    generator = build_generator(netG, ngf, norm)
    generator.load_state_dict(gen_sim2real.state_dict())
    tracker.log_torch_model(generator.eval(), "gen_sim2real", input_example=example)


def train_loop(
    run: Run,
    trainer: TranslatorTrainer,
    sampler: UnpairedSampler,
    sample_every: int,
    draw_sample: Callable[[], np.ndarray],
    samples_dir: Path,
    tracker: Tracker,
) -> dict[str, Any]:
    """Step `trainer` (its `lr()` and `step(sim, real)`) on the sampler's batches through the
    run layer, writing `draw_sample()` to samples_dir and the tracker every `sample_every` steps
    and at the end; returns the run's summary.

    A rerun of a finished run (DVC deletes the samples before it reruns a stage, the persisted
    checkpoints stay) resumes at the last step and trains nothing: the final sample is still
    part of the outputs.
    """

    def write_sample() -> None:
        grid = draw_sample()
        tracker.log_image("samples", grid, step=run.step)
        write_png(samples_dir / f"step_{run.step:08d}.png", grid)

    for _ in run:
        lr = trainer.lr()
        sim_batch, real_batch = sampler.next()
        losses, applied = trainer.step(sim_batch, real_batch)
        run.log(losses, applied, lr)
        if dist.is_main() and run.due(sample_every):
            write_sample()
    summary = run.finish()
    if dist.is_main() and not (samples_dir / f"step_{run.step:08d}.png").is_file():
        write_sample()
    return summary


@dataclasses.dataclass(frozen=True)
class Translator:
    """What one translator brings to `train_translator`; each function takes its params section.

    `section` ("cyclegan", "cut") prefixes its MLflow params, names its crop in errors and, for a
    translator without families, names its runs. `build_nets` draws the initial weights from
    torch's global RNG; `build_trainer(config, nets, run, device, precision, **inputs)` makes the
    step object over them, its random streams from `run`. `family` is the generator family a
    section trains (a run tag, the run's name and generator.json's "family"), or None.
    """

    section: str
    build_nets: Callable[[Any], TranslatorNets]
    build_trainer: Callable[..., TranslatorTrainer]
    family: Callable[[Any], str | None]


def train_translator(
    translator: Translator,
    config: Any,
    sim: np.ndarray,
    real: np.ndarray,
    out_dir: str | Path,
    tracker: Tracker,
    curves_path: str | Path | None = None,
    device: torch.device | None = None,
    **inputs: Any,
) -> dict[str, Any]:
    """Train `translator` with its params section `config` on (N, H, W, 3) uint8 sim and real
    frames; resume from out_dir if possible. `inputs` go to its `build_trainer` (CycleGAN:
    `semantic_net`, the frozen sim-trained segmentation net CyCADA's loss needs).

    The set-up order is what makes runs and resumes exact: torch's global RNG seeded from the
    section's seed, then the nets (every rank the same initial weights), then the run (which
    seeds each rank's own streams), then the step object (its own streams from the run), then
    the sampler's stream.

    Writes out_dir/checkpoints/, out_dir/samples/, the final generators (`save_generators`:
    gen_sim2real, gen_real2sim where the translator has one, generator.json) and, with
    `curves_path`, the loss curves as CSV. Only rank 0 writes. Returns the run summary (steps,
    img_per_s, train_seconds, the last logged losses) and the precision used.
    """
    out_dir = Path(out_dir)
    device = device or runtime.pick_device()
    precision = runtime.resolve_precision(config.precision, device)
    runtime.set_threads(config.threads)
    if device.type == "cuda":
        # Fixed crop size: let cuDNN pick the fastest kernels. Resume is then exact only up to
        # their non-determinism; on CPU every kernel used here is deterministic already.
        torch.backends.cudnn.benchmark = True

    torch.manual_seed(config.seed)
    nets = translator.build_nets(config)
    curves = Path(curves_path) if curves_path is not None else None
    folder = out_dir / "checkpoints"
    section, family = translator.section, translator.family(config)
    spec = spec_of(config, family or section, folder, run_settings(config), curves, f"{section}.")
    run = Run(spec, tracker, device)
    trainer = translator.build_trainer(config, nets, run, device, precision, **inputs)
    frames_on_device = frames_fit_on_device(device, sim, real)
    sampler = UnpairedSampler(
        sim,
        real,
        config.batch,
        config.crop,
        config.flip,
        run.generator("sampler", device if frames_on_device else None),
        device,
        config.channels_last,
        frames_on_device,
        section=section,
    )
    run.hold(**trainer.held())
    run.hold_per_rank(**trainer.per_rank())
    run.resume()
    trainer.wrap(config.compile)
    family_tag = {} if family is None else {"family": family}
    tracker.set_tags(
        {
            **family_tag,
            "precision": precision,
            "channels_last": config.channels_last,
            "compile": config.compile,
        }
    )

    summary = train_loop(
        run,
        trainer,
        sampler,
        config.sample_every,
        lambda: trainer.sample_grid(sim[0], real[0]),
        out_dir / "samples",
        tracker,
    )
    summary["precision"] = precision
    if dist.is_main():
        settings = (config.netG, config.ngf, config.norm)
        save_generators(
            out_dir, tracker, config.crop, settings, *trainer.nets.generators(), family=family
        )
    dist.barrier()
    return summary
