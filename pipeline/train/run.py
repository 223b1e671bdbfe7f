"""The training-run layer every loop shares, so each loop reads as nets, a step and a plain loop.

A loop builds its nets and optimizers, hands the `Run` what a checkpoint must hold, and iterates:

    run = Run(spec, tracker, device)
    run.hold(gen=gen, opt=opt, schedule=schedule)    # equal on every rank, saved from rank 0
    run.hold_per_rank(pool=pool)                     # each rank its own, gathered on save
    run.resume()                                     # newest checkpoint, if any, loaded into them
    for step in run:                                 # 0-based index of the update to make
        values, ok = train_step(...)
        run.log(values, ok, lr)
    summary = run.finish()

Between two steps the run does everything else, the same way for every loop:
- **stop signals**: SIGINT / SIGTERM let the current step finish, write a checkpoint at that step
  and raise `Interrupted` (a second signal acts at once, for a step that hangs);
- **checkpoints** every `checkpoint_every` steps and at the end (two kept while running, one when
  finished), holding the held objects, every rank's RNG and generator states and the logging
  progress, so a resumed run continues bit for bit (on CPU) as if it had never stopped;
- **interval logging**: step values are summed on the device and read once per `log_every` steps
  (no host synchronisation inside a step), averaged over steps and ranks, logged to the tracker and
  kept as curves (CSV);
- **the non-finite guard**: a step whose `ok` flag is false was skipped by the loop's optimizers and
  counts for nothing; more than `max_bad_steps` bad steps in a row raise `TrainingDiverged`, and
  no checkpoint is written past the step where that happened.

Stages open a run through their door (stages/door.py), which claims the checkpoint folder for
this run's fingerprint (settings, code, data) and gives the run its MLflow status.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from pipeline import dist, runtime
from pipeline.config import flatten_mapping
from pipeline.io import atomic_path
from pipeline.tracking.base import Tracker
from pipeline.train.checkpoint import (
    check_compatible,
    latest_checkpoint,
    list_checkpoints,
    rng_state,
    save_checkpoint,
    set_rng_state,
)


class Interrupted(Exception):
    """A stop signal arrived; the run wrote a checkpoint at the step it stopped and can resume."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class TrainingDiverged(RuntimeError):
    """Step values stayed non-finite for more than ``max_bad_steps`` consecutive steps."""


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What a run is and how often it checkpoints and logs.

    `settings` are the values that define the run (a checkpoint written under others is
    refused); `images_per_step` counts one rank's images, for the throughput figure.
    """

    name: str  # "cyclegan", "train_seg oracle": progress bar and messages
    folder: Path  # where checkpoints go
    settings: Mapping[str, Any]
    iters: int
    checkpoint_every: int
    log_every: int
    seed: int
    images_per_step: int
    curves: Path | None = None  # CSV of the logged values, rewritten at every checkpoint
    max_bad_steps: int = 0
    param_prefix: str = ""  # MLflow param names: prefix + setting, e.g. "cyclegan.lr"


def spec_of(
    config: Any,
    name: str,
    folder: Path,
    settings: Mapping[str, Any],
    curves: Path | None,
    param_prefix: str,
) -> RunSpec:
    """The RunSpec of a training section (cyclegan, train_seg): its iters, checkpoint_every,
    log_every, seed, batch and, where it has one, max_bad_steps."""
    return RunSpec(
        name=name,
        folder=folder,
        settings=settings,
        iters=config.iters,
        checkpoint_every=config.checkpoint_every,
        log_every=config.log_every,
        seed=config.seed,
        images_per_step=config.batch,
        curves=curves,
        max_bad_steps=getattr(config, "max_bad_steps", 0),
        param_prefix=param_prefix,
    )


def stream_seed(seed: int, rank: int, stream: str) -> int:
    """Independent seed for one named random stream of one rank."""
    words = [seed, rank, *stream.encode()]
    return int(np.random.SeedSequence(words).generate_state(1, dtype=np.uint64)[0] >> 1)


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, Mapping):
        return {key: _to_cpu(v) for key, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _significant(value: float) -> float:
    """Six significant digits: enough for losses, and a decayed lr does not round to 0."""
    return float(f"{value:.6g}")


class Run:
    """One training run: steps, resume, signals, checkpoints, interval logging (see module doc)."""

    def __init__(self, spec: RunSpec, tracker: Tracker, device: torch.device):
        self.spec = spec
        self.tracker = tracker
        self.device = device
        self.step = 0  # updates made, counting the one in progress inside the loop body
        self.resumed_from = 0
        self._held: dict[str, Stateful] = {}
        self._per_rank: dict[str, Stateful] = {}
        self._generators: dict[str, torch.Generator] = {}
        self.history: list[dict[str, float]] = []
        self._names: list[str] = []
        # Device-side accumulators of the current logging interval (see `log`).
        self._sums: torch.Tensor | None = None
        self._good = torch.zeros((), dtype=torch.float32, device=device)
        self._streak = torch.zeros((), dtype=torch.int64, device=device)
        self._diverged_at = torch.zeros((), dtype=torch.int64, device=device)
        self._step_counter = torch.zeros((), dtype=torch.int64, device=device)
        self._lr = float("nan")
        self.images = 0  # trained images over all runs and ranks
        self.train_seconds = 0.0
        self._interval_start = time.perf_counter()
        self._excluded = 0.0  # seconds of the current interval spent writing checkpoints
        self._stop_signal: int | None = None
        runtime.seed_everything(stream_seed(spec.seed, dist.rank(), "global"))

    # What a checkpoint holds ---------------------------------------------------------------

    def hold(self, **objects: Stateful) -> None:
        """Objects equal on every rank (nets, optimizers, schedules): saved from rank 0."""
        self._held.update(objects)

    def hold_per_rank(self, **objects: Stateful) -> None:
        """Objects each rank has its own of (image pools): every rank's state is saved."""
        self._per_rank.update(objects)

    def generator(self, name: str, device: torch.device | None = None) -> torch.Generator:
        """A random stream of this rank, seeded from (seed, rank, name) and checkpointed."""
        device = device or torch.device("cpu")
        generator = torch.Generator(device=device)
        generator.manual_seed(stream_seed(self.spec.seed, dist.rank(), name))
        self._generators[name] = generator
        return generator

    def _rank_state(self) -> dict[str, Any]:
        return _to_cpu(
            {
                "rng": rng_state(),
                "generators": {k: g.get_state() for k, g in self._generators.items()},
                "objects": {k: obj.state_dict() for k, obj in self._per_rank.items()},
            }
        )

    def _load_rank_state(self, state: Mapping[str, Any]) -> None:
        set_rng_state(state["rng"])
        for name, generator in self._generators.items():
            generator.set_state(state["generators"][name])
        for name, obj in self._per_rank.items():
            obj.load_state_dict(state["objects"][name])

    def _gather_rank_states(self) -> list[dict[str, Any]]:
        """Every rank's state, on rank 0 (the other ranks get an empty list)."""
        local = self._rank_state()
        if dist.world_size() == 1:
            return [local]
        gathered: list[Any] | None = [None] * dist.world_size() if dist.is_main() else None
        torch.distributed.gather_object(local, gathered, dst=0)
        return gathered or []

    # Resume and save -----------------------------------------------------------------------

    def resume(self) -> int:
        """Load the newest checkpoint into the held objects; return the step it was written at.

        The checkpoint must come from the same settings (else `CheckpointError`). Under another
        world size the per-rank draws cannot be replayed: weights, optimizers and schedules
        continue, each rank's random streams and pools start afresh.
        """
        folder = self.spec.folder
        checkpoints = list_checkpoints(folder)
        if checkpoints:
            self._load(checkpoints[-1])
        # Params are what defines the run, so a resumed run logs the same ones again (MLflow
        # refuses changed params); facts of this execution are tags, which may change.
        self.tracker.log_params(flatten_mapping(self.spec.settings, self.spec.param_prefix))
        self.tracker.set_tags(
            {
                "device": str(self.device),
                "world_size": dist.world_size(),
                "resumed_from": self.resumed_from,
            }
        )
        return self.step

    def _load(self, path: Path) -> None:
        saved = latest_checkpoint(path.parent)
        check_compatible(saved["settings"], dict(self.spec.settings), str(path))
        for name, obj in self._held.items():
            obj.load_state_dict(saved["held"][name])
        progress = saved["progress"]
        self.step = self.resumed_from = saved["step"]
        self.history = list(progress["history"])
        self._names = list(progress["names"])
        self._sums = progress["sums"].to(self.device) if progress["sums"] is not None else None
        self._good.fill_(progress["good"])
        self._streak.fill_(progress["streak"])
        self._step_counter.fill_(self.step)
        self.images, self.train_seconds = progress["images"], progress["train_seconds"]
        ranks = saved["ranks"]
        if len(ranks) == dist.world_size():
            self._load_rank_state(ranks[dist.rank()])
            how = "exactly"
        else:
            seed = stream_seed(self.spec.seed, dist.rank(), f"resumed at {self.step}")
            runtime.seed_everything(seed)
            for name, generator in self._generators.items():
                generator.manual_seed(stream_seed(seed, dist.rank(), name))
            how = f"with fresh random streams ({len(ranks)} -> {dist.world_size()} processes)"
        if dist.is_main():
            print(
                f"{self.spec.name}: resuming from {path} at step {self.step} of "
                f"{self.spec.iters} {how}",
                file=sys.stderr,
            )

    def save(self) -> Path | None:
        """Write a checkpoint at the current step (rank 0); every rank must call it."""
        self._check_diverged()
        tic = time.perf_counter()
        ranks = self._gather_rank_states()
        path = None
        if dist.is_main():
            state = {
                "settings": dict(self.spec.settings),
                "step": self.step,
                "held": {name: obj.state_dict() for name, obj in self._held.items()},
                "ranks": ranks,
                "progress": {
                    "history": self.history,
                    "names": self._names,
                    "sums": None if self._sums is None else self._sums.cpu(),
                    "good": float(self._good.item()),
                    "streak": int(self._streak.item()),
                    "images": self.images,
                    "train_seconds": self.train_seconds,
                },
            }
            # A finished run keeps one checkpoint (it only serves a rerun); a running one two.
            keep = 1 if self.step >= self.spec.iters else 2
            path = save_checkpoint(self.spec.folder, self.step, state, keep=keep)
            self.write_curves()
        self._excluded += time.perf_counter() - tic
        return path

    # The loop ------------------------------------------------------------------------------

    def due(self, every: int) -> bool:
        """Whether the current update's 1-based number is a multiple of `every` or the last."""
        return self.step % every == 0 or self.step == self.spec.iters

    def __iter__(self) -> Iterator[int]:
        spec = self.spec
        # On a terminal only: in a log, refreshes are noise (interval logging reports there).
        bar = runtime.progress(
            total=spec.iters,
            initial=min(self.step, spec.iters),
            desc=spec.name,
            unit="it",
            enabled=dist.is_main(),
        )
        self._bar = bar
        self._interval_start, self._excluded = time.perf_counter(), 0.0
        with bar, self._catch_signals():
            while self.step < spec.iters:
                # From here on `step` counts the update the loop body makes, so `due` answers
                # for it in the body (sample grids) and after it (logging, checkpoints).
                self.step += 1
                self._step_counter += 1
                yield self.step - 1
                bar.update()
                if self.due(spec.log_every):
                    self._log_interval()
                # Ranks must agree to stop at the same step; asking all of them costs a
                # collective, so several processes ask only at logging and checkpoint steps.
                stopping = self._stop_requested(
                    every_step=dist.world_size() == 1,
                    now=self.due(spec.log_every) or self.due(spec.checkpoint_every),
                )
                if self.due(spec.checkpoint_every) or stopping:
                    path = self.save()
                if stopping:
                    name = signal.Signals(self._stop_signal or signal.SIGTERM).name
                    raise Interrupted(
                        f"{spec.name}: stopped by {name} at step {self.step}; checkpoint {path}",
                        self._stop_signal or signal.SIGTERM,
                    )

    @contextlib.contextmanager
    def _catch_signals(self) -> Iterator[None]:
        """Turn SIGINT / SIGTERM into a flag checked between steps; old handlers come back."""
        previous: dict[int, Any] = {}

        def handle(signum: int, frame: Any) -> None:
            self._stop_signal = signum
            # A second signal acts at once, for a step that hangs.
            signal.signal(signum, previous[signum])

        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                previous[signum] = signal.signal(signum, handle)
        except ValueError:
            pass  # not the main thread: signals cannot be caught here
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _stop_requested(self, every_step: bool, now: bool) -> bool:
        if every_step:
            return self._stop_signal is not None
        if not now:
            return False
        # On the device: NCCL reduces only CUDA tensors.
        flag = torch.tensor([0.0 if self._stop_signal is None else 1.0], device=self.device)
        dist.all_reduce_sum(flag)
        if flag.item() > 0 and self._stop_signal is None:
            self._stop_signal = signal.SIGTERM  # another rank was signalled
        return flag.item() > 0

    # Logging -------------------------------------------------------------------------------

    def log(
        self, values: Mapping[str, torch.Tensor], ok: torch.Tensor | None = None, lr: float = 0.0
    ) -> None:
        """Add one step's scalar values (device tensors) to the logging interval.

        `ok` (a device bool, the same on every rank) says the step was applied; a bad step's
        values are left out and counted towards the non-finite guard. `lr` is the learning rate
        the step used. Nothing here waits for the device.
        """
        if self._sums is None:
            self._names = list(values)
            self._sums = torch.zeros(len(values), dtype=torch.float32, device=self.device)
        stacked = torch.stack([values[name].detach().float() for name in self._names])
        if ok is None:
            self._sums += stacked
            self._good += 1
        else:
            self._sums += torch.where(ok, stacked, torch.zeros_like(stacked))
            self._good += ok.float()
            self._streak.copy_((self._streak + 1) * (~ok).long())
            newly = (self._diverged_at == 0) & (self._streak > self.spec.max_bad_steps)
            self._diverged_at.copy_(torch.where(newly, self._step_counter, self._diverged_at))
        self._lr = lr

    def _check_diverged(self) -> None:
        at = int(self._diverged_at.item())
        if not at:
            return
        kept = list_checkpoints(self.spec.folder)
        raise TrainingDiverged(
            f"{self.spec.name} step {at}: values were NaN/inf in more than "
            f"max_bad_steps={self.spec.max_bad_steps} step(s) in a row; stopped without saving. "
            f"Last good checkpoint: {kept[-1] if kept else 'none'}. Lower the learning rate or "
            f"use precision fp32 (a run-defining setting: training starts over)."
        )

    def _log_interval(self) -> None:
        self._check_diverged()
        if self._sums is None:
            return
        totals = torch.cat([self._sums, self._good[None]])
        dist.all_reduce_sum(totals)
        host = totals.tolist()  # the one wait for the device in an interval
        sums, good = host[:-1], host[-1]
        seconds = time.perf_counter() - self._interval_start - self._excluded
        self._interval_start, self._excluded = time.perf_counter(), 0.0
        self._sums.zero_()
        self._good.zero_()
        if good == 0:
            return  # every step of the interval was skipped: nothing to average
        means = {name: total / good for name, total in zip(self._names, sums)}
        images = good * self.spec.images_per_step  # good counts steps summed over ranks
        self.images += int(images)
        self.train_seconds += seconds
        self.history.append({"step": self.step, **means, "lr": self._lr})
        self.tracker.log_metrics(
            {**means, "lr": self._lr, "img_per_s": images / max(seconds, 1e-9)}, step=self.step
        )
        self._bar.set_postfix(
            {name: f"{value:.3f}" for name, value in list(means.items())[:3]}, refresh=False
        )

    def write_curves(self) -> None:
        """The logged values as CSV: step, the values, lr (rank 0; no-op without a path)."""
        if self.spec.curves is None or not dist.is_main():
            return
        columns = ["step", *self._names, "lr"]
        with atomic_path(self.spec.curves) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, restval="", extrasaction="ignore")
            writer.writeheader()
            for row in self.history:
                writer.writerow(
                    {k: (_significant(v) if isinstance(v, float) else v) for k, v in row.items()}
                )

    def finish(self) -> dict[str, Any]:
        """Write the curves; return steps, resumed_from, img_per_s, train_seconds and the last
        logged values."""
        self.write_curves()
        summary: dict[str, Any] = {
            "steps": self.step,
            "resumed_from": self.resumed_from,
            "img_per_s": round(self.images / self.train_seconds, 3) if self.train_seconds else None,
            "train_seconds": round(self.train_seconds, 3),
        }
        if self.history:
            last = self.history[-1]
            summary.update({k: _significant(v) for k, v in last.items() if k != "step"})
        return summary
