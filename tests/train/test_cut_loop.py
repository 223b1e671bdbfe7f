"""CUT / FastCUT: the objective's weights, one step, the non-finite skip, FastCUT's mirrored
pass, exact resume after a kill, and the generator folder translation reads."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import CUTConfig, load_params
from pipeline.data.tensors import to_gan_input
from pipeline.io import read_rgb
from pipeline.losses import GANLoss, patch_nce
from pipeline.models.cyclegan import translate_batch
from pipeline.models.generator_folder import load_trained_generator
from pipeline.tracking.base import NullTracker
from pipeline.train.checkpoint import list_checkpoints, load_checkpoint
from pipeline.train.cut import NET_NAMES, build_nets, build_trainer, train_cut
from pipeline.train.run import Interrupted
from tests.conftest import TEST_PARAMS

CPU = torch.device("cpu")


def tiny_config(mode: str = "cut", **overrides) -> CUTConfig:
    settings = dict(
        ngf=4,
        ndf=4,
        n_layers_D=2,  # a 16-pixel-high crop is too small for three stride-2 layers
        crop=(16, 32),
        num_patches=16,
        netF_nc=8,
        iters=10,
        decay_from=5,
        precision="fp32",
        checkpoint_every=4,
        log_every=1,
        sample_every=100,
        threads=1,
    )
    settings.update(overrides)
    section = dataclasses.replace(load_params(TEST_PARAMS).cut, translators={mode: {"mode": mode}})
    return dataclasses.replace(section.translator(mode), **settings)


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def frames() -> tuple[np.ndarray, np.ndarray]:
    """Four sim and four real (24, 48, 3) frames: grey ramps and green ramps with noise."""
    rng = np.random.default_rng(0)
    across = np.linspace(0, 200, 48, dtype=np.float32)[None, None, :, None]
    sim = across + rng.uniform(0, 50, (4, 24, 1, 3))
    down = np.linspace(30, 220, 24, dtype=np.float32)[None, :, None, None]
    real = down * np.array([0.4, 1.0, 0.6]) + rng.uniform(0, 30, (4, 1, 48, 3))
    return sim.astype(np.uint8), real.astype(np.uint8)


def crops(frames, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """One (1, 3, 16, 32) sim and one real batch in [-1, 1]."""
    sim, real = frames
    rows = np.random.default_rng(seed).integers(0, len(sim), 2)
    return (
        to_gan_input(sim[rows[0] : rows[0] + 1, :16, :32], CPU),
        to_gan_input(real[rows[1] : rows[1] + 1, :16, :32], CPU),
    )


def trainer_for(config: CUTConfig, seed: int = 0):
    torch.manual_seed(seed)
    return build_trainer(build_nets(config), config, CPU, "fp32", torch.Generator().manual_seed(1))


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


@pytest.mark.parametrize("mode", ["cut", "fastcut"])
def test_objective_weights_each_term_as_the_reference(frames, mode: str) -> None:
    config = tiny_config(mode)
    trainer = trainer_for(config)
    sim, real = crops(frames)
    flip = torch.tensor(False)
    count = 2 if mode == "cut" else 1
    ids = [torch.randperm(h * w)[:16].expand(count, -1) for _, h, w in trainer.tap_shapes]
    objective, runners = trainer.objective, trainer.runners
    with torch.no_grad():
        translated, queries, keys = objective.translate(runners, sim, real, flip, ids)
        again, _, _ = runners.translator(objective.sources(sim, real), flip, ids)
        assert torch.equal(translated, again)
        losses, total = objective.generator_losses(runners, translated, queries, keys, 1)
        fake_real = translated[:1]
        gan = GANLoss("lsgan")(trainer.nets.disc_real(fake_real), True)
        nce = patch_nce([q[:1] for q in queries], [k[:1] for k in keys], 0.07)
        torch.testing.assert_close(losses["loss_gan_sim2real"], gan)
        if mode == "cut":  # lambda_nce 1, identity term averaged in
            idt = patch_nce([q[1:] for q in queries], [k[1:] for k in keys], 0.07)
            assert losses.keys() == {"loss_gan_sim2real", "loss_nce", "loss_nce_idt"}
            torch.testing.assert_close(losses["loss_nce_idt"], idt)
            torch.testing.assert_close(total, gan + 0.5 * (nce + idt))
        else:  # lambda_nce 10, no identity term
            assert losses.keys() == {"loss_gan_sim2real", "loss_nce"}
            torch.testing.assert_close(total, gan + 10.0 * nce)
        disc = objective.discriminator_losses(runners, real, fake_real)
        disc_net = trainer.nets.disc_real
        expected = 0.5 * (GANLoss("lsgan")(disc_net(real), True) + GANLoss("lsgan")(
            disc_net(fake_real), False
        ))  # fmt: skip
        torch.testing.assert_close(disc["loss_disc_real"], expected)


@pytest.mark.parametrize("mode", ["cut", "fastcut"])
def test_a_step_moves_every_net_and_stays_finite(frames, mode: str) -> None:
    trainer = trainer_for(tiny_config(mode))
    before = copy.deepcopy(trainer.nets)
    for seed in range(2):
        losses, applied = trainer.step(*crops(frames, seed))
        assert bool(applied)
        assert all(torch.isfinite(v) for v in losses.values())
    for name in NET_NAMES:
        now, then = getattr(trainer.nets, name), getattr(before, name)
        assert all(torch.isfinite(p).all() for p in now.parameters()), name
        assert any(not torch.equal(a, b) for a, b in zip(now.parameters(), then.parameters()))


def test_a_non_finite_step_changes_nothing(frames) -> None:
    trainer = trainer_for(tiny_config())
    sim, real = crops(frames)
    trainer.step(sim, real)
    nets = copy.deepcopy(trainer.nets)
    moments = copy.deepcopy(trainer.opt_gen.state_dict())
    losses, applied = trainer.step(torch.full_like(sim, float("nan")), real)
    assert not bool(applied) and not torch.isfinite(losses["loss_nce"])
    for name in NET_NAMES:
        assert_same(getattr(trainer.nets, name).state_dict(), getattr(nets, name).state_dict())
    assert_same(trainer.opt_gen.state_dict()["state"], moments["state"], "opt_gen")


def test_fastcut_mirrors_about_half_of_its_steps(frames) -> None:
    trainer = trainer_for(tiny_config("fastcut"))
    flips: list[bool] = []
    trainer.runners.translator.register_forward_hook(
        lambda module, args, out: flips.append(bool(args[1]))
    )
    for seed in range(8):
        _, applied = trainer.step(*crops(frames, seed))
        assert bool(applied)
    assert 0 < sum(flips) < 8, flips


class Recorder(NullTracker):
    def __init__(self, at_step: int | None = None, action=None):
        self.at_step, self.action = at_step, action
        self.tags: dict = {}

    def set_tags(self, tags):
        self.tags.update(tags)

    def log_metrics(self, metrics, step=None):
        if step == self.at_step and self.action is not None:
            self.action()


def saved(out_dir: Path) -> dict:
    checkpoint = load_checkpoint(list_checkpoints(out_dir / "checkpoints")[-1])
    return {name: checkpoint["held"][name] for name in (*NET_NAMES, "opt_gen", "opt_disc")}


@pytest.mark.parametrize("mode", ["cut", "fastcut"])
def test_kill_and_resume_is_bit_identical(tmp_path: Path, frames, mode: str) -> None:
    sim, real = frames
    config = tiny_config(mode)
    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    train_cut(config, sim, real, whole, NullTracker(), whole / "curves.csv", device=CPU)

    def crash() -> None:
        raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        train_cut(config, sim, real, pieces, Recorder(7, crash), device=CPU)
    assert [p.name for p in list_checkpoints(pieces / "checkpoints")] == ["step_00000004.pt"]

    def interrupt() -> None:
        os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted, match="SIGINT at step 6"):
        train_cut(config, sim, real, pieces, Recorder(6, interrupt), device=CPU)
    train_cut(config, sim, real, pieces, NullTracker(), pieces / "curves.csv", device=CPU)
    assert_same(saved(whole), saved(pieces))
    name = "gen_sim2real.safetensors"
    assert (whole / name).read_bytes() == (pieces / name).read_bytes()
    assert (whole / "curves.csv").read_text() == (pieces / "curves.csv").read_text()


def test_the_generator_folder_is_what_translation_reads(tmp_path: Path, frames) -> None:
    sim, real = frames
    config = tiny_config("fastcut", iters=4, decay_from=2, sample_every=2)
    recorder = Recorder()
    summary = train_cut(config, sim, real, tmp_path, recorder, device=CPU)
    assert summary["steps"] == 4 and summary["precision"] == "fp32"
    assert recorder.tags["family"] == "fastcut"
    assert json.loads((tmp_path / "generator.json").read_text()) == {
        "netG": "resnet_6blocks",
        "ngf": 4,
        "norm": "instance",
        "family": "fastcut",
    }
    assert not (tmp_path / "gen_real2sim.safetensors").exists()  # one direction only
    generator = load_trained_generator(tmp_path / "gen_sim2real.safetensors", CPU)
    assert_same(generator.state_dict(), saved(tmp_path)["gen_sim2real"])
    frame = sim[:1, :23, :45]  # any size: translation pads to the generator's multiple
    translated = translate_batch(generator, frame, "fp32", CPU)
    assert translated.shape == frame.shape and translated.dtype == np.uint8
    assert read_rgb(tmp_path / "samples" / "step_00000004.png").shape == (2 * 24, 2 * 48, 3)
    assert (tmp_path / "samples" / "step_00000002.png").is_file()


def test_compiled_phases_compute_the_eager_step(frames, monkeypatch) -> None:
    """As for CycleGAN: AOTAutograd's eager backend stands in for inductor; each phase compiles
    once, though the patch locations and FastCUT's mirror change every step."""
    import pipeline.train.cut as loop

    real_compile = torch.compile
    monkeypatch.setattr(
        loop.torch,
        "compile",
        lambda function, mode, dynamic: real_compile(
            function, backend="aot_eager", dynamic=dynamic
        ),
    )
    trainers = {}
    for compile in ("eager", "default"):
        trainers[compile] = trainer_for(tiny_config("fastcut"))
        trainers[compile].wrap(compile)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for seed in range(3):
            batch = crops(frames, seed)
            eager, _ = trainers["eager"].step(*batch)
            compiled, applied = trainers["default"].step(*batch)
            assert bool(applied)
            for name, value in eager.items():
                torch.testing.assert_close(compiled[name], value, msg=name)
    for name in NET_NAMES:
        for a, b in zip(
            getattr(trainers["eager"].nets, name).parameters(),
            getattr(trainers["default"].nets, name).parameters(),
        ):
            torch.testing.assert_close(a, b)
