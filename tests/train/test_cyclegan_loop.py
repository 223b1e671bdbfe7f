"""CycleGAN: the step's semantics, the schedule, learning, exact resume, NaN guard, bad resumes."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import pipeline.train.cyclegan as loop
from pipeline.config import CycleGANConfig
from pipeline.data.labels import NUM_CLASSES
from pipeline.data.tensors import to_gan_input
from pipeline.io import read_rgb
from pipeline.models.generator_folder import load_trained_generator
from pipeline.tracking.base import NullTracker
from pipeline.train.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from pipeline.train.cyclegan import (
    NET_NAMES,
    CycleGANObjective,
    SemanticConsistency,
    build_nets,
    build_trainer,
    lr_factor,
    train_cyclegan,
)
from pipeline.train.run import Interrupted, TrainingDiverged
from tests.conftest import params_section

CPU = torch.device("cpu")


def tiny_config(**overrides) -> CycleGANConfig:
    settings = dict(
        netG="resnet_6blocks",
        ngf=8,
        ndf=8,
        crop=(32, 32),
        iters=10,
        decay_from=5,
        pool_size=4,
        precision="fp32",
        checkpoint_every=4,
        log_every=1,
        sample_every=100,
        threads=1,  # a shared 2-core machine: more threads only wait on each other
    )
    settings.update(overrides)
    return params_section("cyclegan", **settings)


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    """The loop applies config.threads process-wide; later tests get the default back."""
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def frames() -> tuple[np.ndarray, np.ndarray]:
    """Four sim and four real (32, 64, 3) frames: grey left-right ramps with noisy rows, and
    green top-down ramps with noisy columns."""
    rng = np.random.default_rng(0)
    across = np.linspace(0, 200, 64, dtype=np.float32)[None, None, :, None]
    sim = across + rng.uniform(0, 50, (4, 32, 1, 3))  # (4, 32, 64, 3)
    down = np.linspace(30, 220, 32, dtype=np.float32)[None, :, None, None]
    real = down * np.array([0.4, 1.0, 0.6]) + rng.uniform(0, 30, (4, 1, 64, 3))
    return sim.astype(np.uint8), real.astype(np.uint8)


class Recorder(NullTracker):
    """Keeps logged metrics; optionally acts at one step (a signal or a crash)."""

    def __init__(self, at_step: int | None = None, action=None):
        self.metrics: dict[int, dict[str, float]] = {}
        self.at_step, self.action = at_step, action

    def log_params(self, params):
        self.params = dict(params)

    def set_tags(self, tags):
        self.tags = {**self.__dict__.get("tags", {}), **tags}

    def log_metrics(self, metrics, step=None):
        self.metrics[step] = dict(metrics)
        if step == self.at_step and self.action is not None:
            self.action()


def weights(out_dir: Path) -> dict[str, dict[str, torch.Tensor]]:
    saved = load_checkpoint(list_checkpoints(out_dir / "checkpoints")[-1])
    return {name: saved["held"][name] for name in (*NET_NAMES, "opt_gen", "opt_disc")}


def assert_same(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_lr_is_constant_then_linear_to_zero() -> None:
    assert [lr_factor(s, 100, 60) for s in (0, 59, 60)] == [1.0, 1.0, 1.0]
    assert lr_factor(80, 100, 60) == pytest.approx(0.5)
    assert lr_factor(99, 100, 60) == pytest.approx(1 / 40)
    assert lr_factor(100, 100, 60) == 0.0
    assert all(lr_factor(s, 50, 50) == 1.0 for s in range(50))
    assert lr_factor(0, 10, 0) == 1.0 and lr_factor(5, 10, 0) == pytest.approx(0.5)


def test_training_lowers_cycle_loss_and_writes_outputs(tmp_path: Path, frames) -> None:
    sim, real = frames
    config = tiny_config(iters=60, decay_from=40, lambda_cycle=50.0, log_every=10, sample_every=30)
    recorder = Recorder()
    metrics = train_cyclegan(
        config, sim, real, tmp_path, recorder, curves_path=tmp_path / "curves.csv", device=CPU
    )
    cycle = [
        m["loss_cycle_sim"] + m["loss_cycle_real"] for _, m in sorted(recorder.metrics.items())
    ]
    assert cycle[-1] < 0.7 * cycle[0], cycle
    # The logged learning rate is the schedule's value at the last update of each interval.
    for step, logged in recorder.metrics.items():
        if "lr" in logged and step < config.iters:
            assert logged["lr"] == pytest.approx(config.lr * lr_factor(step - 1, 60, 40))

    assert metrics["steps"] == 60 and metrics["precision"] == "fp32" and metrics["img_per_s"] > 0
    with open(tmp_path / "curves.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [10, 20, 30, 40, 50, 60]
    assert float(rows[-1]["loss_cycle_sim"]) == pytest.approx(metrics["loss_cycle_sim"], abs=1e-5)
    assert json.loads((tmp_path / "generator.json").read_text()) == {
        "netG": "resnet_6blocks",
        "ngf": 8,
        "norm": "instance",
    }
    generator = load_trained_generator(tmp_path / "gen_sim2real.safetensors", CPU)
    saved = load_checkpoint(list_checkpoints(tmp_path / "checkpoints")[-1])
    assert_same(generator.state_dict(), saved["held"]["gen_sim2real"])
    grid = read_rgb(tmp_path / "samples" / "step_00000060.png")
    assert grid.shape == (2 * 32, 3 * 64, 3)


def test_kill_and_resume_is_bit_identical(tmp_path: Path, frames) -> None:
    sim, real = frames
    config = tiny_config()
    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    handler = signal.getsignal(signal.SIGINT)  # ignored under nohup, Python's own otherwise
    train_cyclegan(config, sim, real, whole, NullTracker(), whole / "curves.csv", device=CPU)

    def crash() -> None:
        raise RuntimeError("power cut")

    # A hard crash at step 7 loses steps 5-7: the newest checkpoint is step 4.
    with pytest.raises(RuntimeError, match="power cut"):
        train_cyclegan(config, sim, real, pieces, Recorder(7, crash), device=CPU)
    assert [p.name for p in list_checkpoints(pieces / "checkpoints")] == ["step_00000004.pt"]

    # SIGINT at step 6: a checkpoint at that very step, then Interrupted.
    def interrupt() -> None:
        os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted, match="SIGINT at step 6"):
        train_cyclegan(config, sim, real, pieces, Recorder(6, interrupt), device=CPU)
    assert list_checkpoints(pieces / "checkpoints")[-1].name == "step_00000006.pt"
    assert signal.getsignal(signal.SIGINT) is handler

    train_cyclegan(config, sim, real, pieces, NullTracker(), pieces / "curves.csv", device=CPU)
    assert_same(weights(whole), weights(pieces))
    for name in ("gen_sim2real.safetensors", "gen_real2sim.safetensors"):
        assert (whole / name).read_bytes() == (pieces / name).read_bytes()
    assert (whole / "curves.csv").read_text() == (pieces / "curves.csv").read_text()

    # A rerun of the finished run (as `dvc repro` does after deleting the stage's outputs but
    # not its persisted checkpoints) trains nothing and writes every output again.
    shutil.rmtree(pieces / "samples")
    for name in ("gen_sim2real.safetensors", "gen_real2sim.safetensors", "generator.json"):
        (pieces / name).unlink()
    metrics = train_cyclegan(config, sim, real, pieces, NullTracker(), device=CPU)
    assert metrics["steps"] == config.iters
    assert (pieces / "samples" / "step_00000010.png").is_file()
    for name in ("gen_sim2real.safetensors", "gen_real2sim.safetensors"):
        assert (whole / name).read_bytes() == (pieces / name).read_bytes()


@pytest.mark.parametrize("max_bad_steps", [0, 2])
def test_nan_guard_stops_and_keeps_last_good_checkpoint(
    tmp_path: Path, frames, monkeypatch, max_bad_steps: int
) -> None:
    sim, real = frames
    calls = {"n": 0}
    real_cycle_loss = loop.cycle_loss

    def poisoned(reconstructed, original):
        # Two cycle losses per step: from the 4th step on, every step's loss is NaN.
        calls["n"] += 1
        loss = real_cycle_loss(reconstructed, original)
        return loss * float("nan") if calls["n"] > 6 else loss

    monkeypatch.setattr(loop, "cycle_loss", poisoned)
    config = tiny_config(checkpoint_every=2, max_bad_steps=max_bad_steps)
    with pytest.raises(TrainingDiverged, match="max_bad_steps") as error:
        train_cyclegan(config, sim, real, tmp_path, NullTracker(), device=CPU)
    # The run stops at the (max_bad_steps + 1)-th bad step in a row, without saving there.
    assert f"cyclegan step {4 + max_bad_steps}:" in str(error.value)
    newest = list_checkpoints(tmp_path / "checkpoints")[-1]
    assert newest.name == ("step_00000002.pt" if max_bad_steps == 0 else "step_00000004.pt")
    assert str(newest) in str(error.value)
    saved = load_checkpoint(newest)
    for name in NET_NAMES:
        assert all(torch.isfinite(t).all() for t in saved["held"][name].values())


def test_nan_guard_skips_an_isolated_bad_step(tmp_path: Path, frames, monkeypatch) -> None:
    sim, real = frames
    calls = {"n": 0}
    real_cycle_loss = loop.cycle_loss

    def one_bad_step(reconstructed, original):
        calls["n"] += 1
        loss = real_cycle_loss(reconstructed, original)
        return loss * float("nan") if calls["n"] == 7 else loss

    monkeypatch.setattr(loop, "cycle_loss", one_bad_step)
    recorder = Recorder()
    config = tiny_config(iters=6, max_bad_steps=1)
    metrics = train_cyclegan(config, sim, real, tmp_path, recorder, device=CPU)
    assert metrics["steps"] == 6
    assert 4 not in recorder.metrics  # nothing to log for the skipped step
    saved = load_checkpoint(list_checkpoints(tmp_path / "checkpoints")[-1])
    assert all(torch.isfinite(t).all() for t in saved["held"]["gen_sim2real"].values())


def test_resume_refuses_changed_weight_settings_but_not_runtime_knobs(
    tmp_path: Path, frames
) -> None:
    sim, real = frames
    config = tiny_config(iters=4, decay_from=2, checkpoint_every=2)

    def crash() -> None:
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        train_cyclegan(config, sim, real, tmp_path, Recorder(3, crash), device=CPU)
    changed = dataclasses.replace(config, netG="resnet_9blocks")
    with pytest.raises(CheckpointError, match=r"\(netG: 'resnet_6blocks' -> 'resnet_9blocks'\)"):
        train_cyclegan(changed, sim, real, tmp_path, NullTracker(), device=CPU)
    with pytest.raises(CheckpointError, match="precision: 'fp32' -> 'bf16'"):
        train_cyclegan(
            dataclasses.replace(config, precision="bf16"),
            sim,
            real,
            tmp_path,
            NullTracker(),
            device=CPU,
        )
    runtime_only = dataclasses.replace(config, channels_last=True, log_every=5, checkpoint_every=3)
    recorder = Recorder()
    metrics = train_cyclegan(runtime_only, sim, real, tmp_path, recorder, device=CPU)
    assert metrics["steps"] == 4 and recorder.tags["resumed_from"] == 2
    assert recorder.params["cyclegan.netG"] == "resnet_6blocks"
    assert "cyclegan.log_every" not in recorder.params  # a runtime knob: a tag at most


def crops(frames, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One (1, 3, 32, 32) sim and one real batch in [-1, 1]."""
    sim, real = frames
    rows = np.random.default_rng(seed).integers(0, len(sim), 2)
    return (
        to_gan_input(sim[rows[0] : rows[0] + 1, :, :32], CPU),
        to_gan_input(real[rows[1] : rows[1] + 1, :, :32], CPU),
    )


def test_objective_weights_each_term_as_the_reference(frames) -> None:
    torch.manual_seed(0)
    nets = build_nets(tiny_config())
    objective = CycleGANObjective("lsgan", lambda_cycle=7.0, lambda_identity=0.3)
    sim, real = crops(frames)
    with torch.no_grad():
        losses, fake_real, fake_sim = objective.generator_losses(nets, sim, real)
        expected = {
            "loss_gan_sim2real": F.mse_loss(nets.disc_real(fake_real), torch.ones(1, 1, 2, 2)),
            "loss_gan_real2sim": F.mse_loss(nets.disc_sim(fake_sim), torch.ones(1, 1, 2, 2)),
            "loss_cycle_sim": 7.0 * F.l1_loss(nets.gen_real2sim(nets.gen_sim2real(sim)), sim),
            "loss_cycle_real": 7.0 * F.l1_loss(nets.gen_sim2real(nets.gen_real2sim(real)), real),
            # Identity is weighted by lambda_cycle * lambda_identity, as the reference does.
            "loss_idt_sim2real": 7.0 * 0.3 * F.l1_loss(nets.gen_sim2real(real), real),
            "loss_idt_real2sim": 7.0 * 0.3 * F.l1_loss(nets.gen_real2sim(sim), sim),
        }
        assert losses.keys() == expected.keys()
        for name, value in expected.items():
            torch.testing.assert_close(losses[name], value, msg=name)

        pooled_real, pooled_sim = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
        disc = objective.discriminator_losses(nets, sim, real, pooled_real, pooled_sim)
        ones, zeros = torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)
        # Halved: the discriminators learn at half the generators' pace.
        torch.testing.assert_close(
            disc["loss_disc_real"],
            0.5
            * (
                F.mse_loss(nets.disc_real(real), ones)
                + F.mse_loss(nets.disc_real(pooled_real), zeros)
            ),
        )
        torch.testing.assert_close(
            disc["loss_disc_sim"],
            0.5
            * (F.mse_loss(nets.disc_sim(sim), ones) + F.mse_loss(nets.disc_sim(pooled_sim), zeros)),
        )
    without_identity = CycleGANObjective("lsgan", lambda_cycle=7.0, lambda_identity=0.0)
    assert "loss_idt_sim2real" not in without_identity.generator_losses(nets, sim, real)[0]


def test_step_gives_each_net_the_gradient_of_its_own_losses_only(frames) -> None:
    """D gets nothing from the generator loss (frozen), G nothing from D's loss (detached)."""
    torch.manual_seed(0)
    trainer = build_trainer(tiny_config(pool_size=0), CPU, "fp32")
    before = copy.deepcopy(trainer.nets)
    sim, real = crops(frames)
    _, applied = trainer.step(sim, real)
    assert bool(applied)

    objective = trainer.objective
    gen_losses, fake_real, fake_sim = objective.generator_losses(before, sim, real)
    disc_losses = objective.discriminator_losses(
        before, sim, real, fake_real.detach(), fake_sim.detach()
    )
    for losses, names in (
        (gen_losses, ("gen_sim2real", "gen_real2sim")),
        (disc_losses, ("disc_real", "disc_sim")),
    ):
        params = [p for n in names for p in getattr(before, n).parameters()]
        expected = torch.autograd.grad(sum(losses.values()), params)
        actual = [p.grad for n in names for p in getattr(trainer.nets, n).parameters()]
        for want, got in zip(expected, actual, strict=True):
            torch.testing.assert_close(got, want)


def test_discriminator_sees_the_pooled_fakes(frames) -> None:
    torch.manual_seed(0)
    trainer = build_trainer(tiny_config(pool_size=1), CPU, "fp32")
    trainer.pool_fake_real.generator = torch.Generator().manual_seed(3)
    seen: list[torch.Tensor] = []
    trainer.nets.disc_real.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    returned: list[torch.Tensor] = []
    query = trainer.pool_fake_real.query
    trainer.pool_fake_real.query = lambda images, accept=None: (
        returned.append((images.detach().clone(), query(images, accept))) or returned[-1][1]
    )
    swapped = 0
    for seed in range(8):
        seen.clear()
        trainer.step(*crops(frames, seed))
        fresh, pooled = returned[-1]
        # Calls: G phase on the fresh fake, then D phase on real and on the pool's output.
        assert torch.equal(seen[0], fresh) and torch.equal(seen[-1], pooled)
        swapped += not torch.equal(pooled, fresh)
    assert 0 < swapped < 8  # the pool both swapped in history and passed fakes through


def test_a_non_finite_step_changes_nothing(frames) -> None:
    torch.manual_seed(0)
    trainer = build_trainer(tiny_config(pool_size=1), CPU, "fp32")
    sim, real = crops(frames)
    trainer.step(sim, real)  # fills the pools
    nets = copy.deepcopy(trainer.nets)
    moments = copy.deepcopy(trainer.opt_gen.state_dict())
    pooled = trainer.pool_fake_real.state_dict()["images"].clone()
    losses, applied = trainer.step(torch.full_like(sim, float("nan")), real)
    assert not bool(applied) and not torch.isfinite(losses["loss_cycle_sim"])
    for name in NET_NAMES:
        assert_same(
            getattr(trainer.nets, name).state_dict(), getattr(nets, name).state_dict(), name
        )
    assert_same(trainer.opt_gen.state_dict()["state"], moments["state"], "opt_gen")
    assert torch.equal(trainer.pool_fake_real.state_dict()["images"], pooled)


def colour_classifier() -> nn.Module:
    """Labels a pixel red (0), green (1) or blue (2) by its strongest channel: a 1x1 conv."""
    net = nn.Conv2d(3, NUM_CLASSES, 1, bias=False)
    with torch.no_grad():
        net.weight.zero_()
        for channel in range(3):
            net.weight[channel, channel] = 10.0
    return net


def test_semantic_loss_is_low_when_labels_survive_and_high_when_they_change() -> None:
    semantic = SemanticConsistency(colour_classifier())
    red = torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1).expand(1, 3, 4, 4)  # GAN range
    dark_red = red * torch.tensor([0.5, 1.0, 1.0]).view(1, 3, 1, 1)
    blue = red.flip(1)
    kept, changed = semantic(red, dark_red), semantic(red, blue)
    assert kept.item() < 1e-3 < 10.0 < changed.item()


def test_semantic_loss_moves_the_generators_never_the_frozen_net(frames) -> None:
    sim, real = crops(frames)
    grads = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        net = colour_classifier()
        frozen = net.weight.detach().clone()
        trainer = build_trainer(tiny_config(lambda_semantic=weight), CPU, "fp32", net)
        losses, _ = trainer.step(sim, real)
        assert ("loss_sem_sim2real" in losses) == (weight > 0)
        assert net.weight.grad is None and torch.equal(net.weight, frozen)
        grads[weight] = trainer.nets.gen_sim2real.model[1].weight.grad.clone()
    assert not torch.equal(grads[0.0], grads[1.0])
    with pytest.raises(ValueError, match="lambda_semantic"):
        build_trainer(tiny_config(lambda_semantic=1.0), CPU, "fp32")


def test_sampler_draws_the_same_windows_on_the_device_and_from_the_host() -> None:
    """The device path (frames uploaded, one gather) and the host path (windows read from the
    arrays) cut the same crops for the same draws; each crop is a window of one frame, mirrored
    or not, and both happen."""
    height, width = 12, 20
    # Every pixel says where it is: channel 0 its row, 1 its column, 2 its frame.
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    frames = np.stack(
        [np.stack([rows, cols, np.full_like(rows, i)], axis=-1) for i in range(5)]
    ).astype(np.uint8)  # (5, 12, 20, 3)

    def sampler(on_device: bool) -> loop.UnpairedSampler:
        return loop.UnpairedSampler(
            frames, frames, 3, (4, 6), True, torch.Generator().manual_seed(1), CPU, False,
            on_device,
        )  # fmt: skip

    device_path, host_path = sampler(True), sampler(False)
    mirrored = straight = 0
    for _ in range(6):
        for a, b in zip(device_path.next(), host_path.next()):
            assert torch.equal(a, b)
            pixels = ((a + 1) * 127.5).round().long()  # (3, 3, 4, 6) back to 0..255
            for crop in pixels:
                row, col, frame = crop[0], crop[1], crop[2]
                assert (frame == frame[0, 0]).all()
                assert (row == row[:, :1]).all() and (col == col[:1]).all()
                assert torch.equal(row[:, 0], row[0, 0] + torch.arange(4))
                steps = col[0, 1:] - col[0, :-1]
                assert (steps == 1).all() or (steps == -1).all()
                mirrored += int(steps[0] == -1)
                straight += int(steps[0] == 1)
    assert mirrored and straight
    with pytest.raises(ValueError, match="generator must be on"):
        loop.UnpairedSampler(
            frames, frames, 1, (4, 6), True, torch.Generator(), torch.device("meta"), False, True
        )


def test_compiled_phases_compute_the_eager_step(frames, monkeypatch) -> None:
    """The compiled path (graph capture of both phases and their backward, as inductor and CUDA
    graphs get them) gives the eager step's losses and weights, and compiles each phase once.
    AOTAutograd's eager backend stands in for inductor, whose C++ build takes minutes here."""
    real_compile = torch.compile
    compiled_modes = []

    def aot_eager(function, mode, dynamic):
        compiled_modes.append(mode)
        return real_compile(function, backend="aot_eager", dynamic=dynamic)

    monkeypatch.setattr(loop.torch, "compile", aot_eager)
    trainers = {}
    for compile in ("eager", "reduce-overhead"):
        torch.manual_seed(0)
        trainers[compile] = build_trainer(tiny_config(pool_size=2), CPU, "fp32")
        trainers[compile].wrap(compile)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for seed in range(4):
            batch = crops(frames, seed)
            eager, _ = trainers["eager"].step(*batch)
            compiled, applied = trainers["reduce-overhead"].step(*batch)
            assert bool(applied)
            for name, value in eager.items():
                torch.testing.assert_close(compiled[name], value, msg=name)
    assert compiled_modes == ["reduce-overhead", "reduce-overhead"]
    for name in NET_NAMES:
        for a, b in zip(
            getattr(trainers["eager"].nets, name).parameters(),
            getattr(trainers["reduce-overhead"].nets, name).parameters(),
        ):
            torch.testing.assert_close(a, b)


def test_a_step_is_skipped_whatever_the_count_of_bad_ranks() -> None:
    """all_reduce_sum adds each rank's flag; fused Adam skips only on exactly 1.0, so two bad
    ranks (2.0) must skip the update too."""
    from pipeline.train.translator import apply_updates, fused_adam

    net = torch.nn.Linear(2, 2)
    before = copy.deepcopy(net.state_dict())
    optimizer = fused_adam(0.1, (0.5, 0.999), net)
    net(torch.ones(1, 2)).sum().backward()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    apply_updates((optimizer,), scaler, torch.tensor(2.0))
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    apply_updates((optimizer,), scaler, torch.tensor(0.0))
    assert not torch.equal(net.state_dict()["weight"], before["weight"])
