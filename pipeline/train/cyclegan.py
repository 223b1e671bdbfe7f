"""CycleGAN training between the sim and real image sets (Zhu et al. 2017).

The algorithm is the reference one (junyanz/pytorch-CycleGAN-and-pix2pix,
``models/cycle_gan_model.py``): each step updates both generators with both discriminators frozen
(adversarial + cycle + identity losses), then both discriminators on history pools of detached
fakes, their loss halved. The learning rate is constant until ``decay_from`` and falls linearly to
zero at ``iters``.

Everything between the steps (resume, signals, checkpoints, logging, the non-finite guard) is the
run layer's (`pipeline.train.run`), the set-up and loop every translator shares are
`pipeline.train.translator`'s; this module is the nets, the objective and one step.
A step never waits for the device: a non-finite loss is detected on the device and the fused Adam
optimizers skip that update there (``found_inf``), leaving weights and moments untouched.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline import dist, runtime
from pipeline.config import CycleGANConfig
from pipeline.data.tensors import normalize
from pipeline.losses import GANLoss, cycle_loss, identity_loss
from pipeline.models.cyclegan import build_discriminator, build_generator, translate_batch
from pipeline.train.image_pool import ImagePool
from pipeline.train.run import Run, Stateful, stream_seed
from pipeline.train.translator import (
    Translator,
    TranslatorTrainer,
    UnpairedSampler,  # noqa: F401  (imported from here by the CycleGAN tests)
    adam_updates,
    apply_updates,
    compile_phases,
    evaluating,
    image_grid,
    lr_factor,  # noqa: F401  (imported from here by the CycleGAN tests)
    non_finite,
    place_nets,
    train_translator,
)

NET_NAMES = ("gen_sim2real", "gen_real2sim", "disc_real", "disc_sim")


@dataclasses.dataclass
class CycleGANNets:
    gen_sim2real: nn.Module
    gen_real2sim: nn.Module
    disc_real: nn.Module  # real vs fake real (gen_sim2real's output)
    disc_sim: nn.Module

    def named(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in NET_NAMES}

    def generators(self) -> tuple[nn.Module, nn.Module]:
        return self.gen_sim2real, self.gen_real2sim


def build_nets(config: CycleGANConfig) -> CycleGANNets:
    """The two generators and two discriminators, initialised from torch's global RNG."""
    return CycleGANNets(
        gen_sim2real=build_generator(config.netG, config.ngf, config.norm),
        gen_real2sim=build_generator(config.netG, config.ngf, config.norm),
        disc_real=build_discriminator("n_layers", config.ndf, config.n_layers_D, config.norm),
        disc_sim=build_discriminator("n_layers", config.ndf, config.n_layers_D, config.norm),
    )


class SemanticConsistency:
    """CyCADA's semantic consistency (Hoffman et al., ICML 2018, eq. 5): a frozen segmentation
    net trained on sim labels an image; its translation must get the same labels.

    The loss is the cross-entropy of the net on the translated (B, 3, h, w) image against its own
    argmax on the original, for sim -> real and for real -> sim alike. The net stays in eval mode
    with frozen weights: gradients reach the generators through it, never the net itself.
    """

    def __init__(self, net: nn.Module) -> None:
        self.net = net.eval().requires_grad_(False)

    def __call__(self, original: Tensor, translated: Tensor) -> Tensor:
        with torch.no_grad():
            labels = self.net(_segmentation_input(original)).argmax(dim=1)  # (B, h, w)
        logits = self.net(_segmentation_input(translated))  # (B, C, h, w)
        return F.cross_entropy(logits.float(), labels)


def _segmentation_input(images: Tensor) -> Tensor:
    """GAN images in [-1, 1] -> the ImageNet-normalized [0, 1] images segmentation nets take."""
    return normalize((images + 1.0) / 2.0)


class CycleGANObjective:
    """The losses of one step, weighted as the reference weights them.

    Generators: adversarial (each generator against the discriminator of its output domain),
    cycle consistency times `lambda_cycle`, identity times `lambda_cycle * lambda_identity` (a
    generator fed an image already in its output domain should leave it alone; the reference
    scales this term by the cycle weight) and, with a `semantic` net, CyCADA's semantic
    consistency times `lambda_semantic`. Discriminators: real against pooled fake, halved so a
    discriminator learns at half the generators' pace, as in the reference.
    """

    def __init__(
        self,
        gan_mode: str,
        lambda_cycle: float,
        lambda_identity: float,
        lambda_semantic: float = 0.0,
        semantic: SemanticConsistency | None = None,
    ) -> None:
        if lambda_semantic > 0 and semantic is None:
            raise ValueError("lambda_semantic > 0 needs the frozen segmentation net (semantic)")
        self.gan_loss = GANLoss(gan_mode)
        self.lambda_cycle = lambda_cycle
        self.lambda_identity = lambda_identity
        self.lambda_semantic = lambda_semantic
        self.semantic = semantic if lambda_semantic > 0 else None

    def generator_losses(
        self, nets: CycleGANNets, sim: Tensor, real: Tensor
    ) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Losses on (B, 3, h, w) batches, and the fakes (fake_real, fake_sim) they made."""
        fake_real = nets.gen_sim2real(sim)  # (B, 3, h, w)
        rec_sim = nets.gen_real2sim(fake_real)
        fake_sim = nets.gen_real2sim(real)
        rec_real = nets.gen_sim2real(fake_sim)
        losses = {
            "loss_gan_sim2real": self.gan_loss(nets.disc_real(fake_real), True),
            "loss_gan_real2sim": self.gan_loss(nets.disc_sim(fake_sim), True),
            "loss_cycle_sim": cycle_loss(rec_sim, sim) * self.lambda_cycle,
            "loss_cycle_real": cycle_loss(rec_real, real) * self.lambda_cycle,
        }
        if self.lambda_identity > 0:
            weight = self.lambda_cycle * self.lambda_identity
            losses["loss_idt_sim2real"] = identity_loss(nets.gen_sim2real(real), real) * weight
            losses["loss_idt_real2sim"] = identity_loss(nets.gen_real2sim(sim), sim) * weight
        if self.semantic is not None:
            weight = self.lambda_semantic
            losses["loss_sem_sim2real"] = self.semantic(sim, fake_real) * weight
            losses["loss_sem_real2sim"] = self.semantic(real, fake_sim) * weight
        return losses, fake_real, fake_sim

    def discriminator_losses(
        self,
        nets: CycleGANNets,
        sim: Tensor,
        real: Tensor,
        pooled_fake_real: Tensor,
        pooled_fake_sim: Tensor,
    ) -> dict[str, Tensor]:
        gan = self.gan_loss
        return {
            "loss_disc_real": 0.5
            * (gan(nets.disc_real(real), True) + gan(nets.disc_real(pooled_fake_real), False)),
            "loss_disc_sim": 0.5
            * (gan(nets.disc_sim(sim), True) + gan(nets.disc_sim(pooled_fake_sim), False)),
        }


@dataclasses.dataclass(kw_only=True)
class CycleGANTrainer(TranslatorTrainer):
    """The nets, their optimizers and pools, and the update they make together (`step`)."""

    nets: CycleGANNets
    runners: CycleGANNets  # what the step calls: DDP-wrapped and compiled where asked
    objective: CycleGANObjective
    pool_fake_real: ImagePool
    pool_fake_sim: ImagePool

    def wrap(self, compile: str) -> None:
        """DDP-wrap the nets (several ranks) once the weights are final; with `compile` other
        than "eager", compile each phase of the step (the generators' losses, the
        discriminators' losses) into one graph, its backward into another.

        Crop and batch are fixed, so the graphs are static (no shape guards, no recompiles);
        inductor fuses each norm with its activation and padding. "reduce-overhead" also
        replays every graph as a CUDA graph: one launch per phase and direction instead of
        hundreds of kernel launches (on the CPU it equals "default").
        """
        self.runners = CycleGANNets(
            **{name: dist.wrap(net, self.device) for name, net in self.nets.named().items()}
        )
        self.compile = compile
        if compile != "eager":
            compile_phases(self, compile, "_generator_phase", "_discriminator_phase")

    def per_rank(self) -> dict[str, Stateful]:
        return {"pool_fake_real": self.pool_fake_real, "pool_fake_sim": self.pool_fake_sim}

    def step(self, sim: Tensor, real: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """One generator + discriminator update on (B, 3, h, w) batches.

        Returns the losses (device scalars, valid until the next step) and whether the update
        was applied (a device bool, equal on every rank): when any loss on any rank is
        NaN/inf, nothing is updated.
        """
        self.begin_step()

        # Generators, with the discriminators frozen so the adversarial terms move only G.
        self._discriminators_learn(False)
        gen_losses, gen_total, fake_real, fake_sim = self._generator_phase(sim, real)
        self.scaler.scale(gen_total).backward()
        gen_ok = non_finite(gen_losses) == 0

        # Discriminators, on pooled detached fakes: no gradient of theirs reaches G.
        self._discriminators_learn(True)
        pooled_fake_real = self.pool_fake_real.query(fake_real.detach(), accept=gen_ok)
        pooled_fake_sim = self.pool_fake_sim.query(fake_sim.detach(), accept=gen_ok)
        disc_losses, disc_total = self._discriminator_phase(
            sim, real, pooled_fake_real, pooled_fake_sim
        )
        self.scaler.scale(disc_total).backward()

        values = {name: loss.detach() for name, loss in {**gen_losses, **disc_losses}.items()}
        bad = non_finite(values)
        # Every rank skips the same steps, or their gradient all-reduces would pair up with
        # different steps.
        dist.all_reduce_sum(bad)
        # D's loss never depended on G's update (its fakes are detached), so stepping both here
        # equals the reference's G-step-then-D-step order, and a bad step leaves both untouched.
        apply_updates((self.opt_gen, self.opt_disc), self.scaler, bad)
        self.schedule_gen.step()
        self.schedule_disc.step()
        return values, bad == 0

    def _generator_phase(
        self, sim: Tensor, real: Tensor
    ) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor]:
        """The generators' losses, their sum, and the fakes (fake_real, fake_sim)."""
        with runtime.autocast(self.precision, self.device):
            losses, fake_real, fake_sim = self.objective.generator_losses(self.runners, sim, real)
        return losses, sum(losses.values()), fake_real, fake_sim

    def _discriminator_phase(
        self, sim: Tensor, real: Tensor, pooled_fake_real: Tensor, pooled_fake_sim: Tensor
    ) -> tuple[dict[str, Tensor], Tensor]:
        """The discriminators' losses and their sum."""
        with runtime.autocast(self.precision, self.device):
            losses = self.objective.discriminator_losses(
                self.runners, sim, real, pooled_fake_real, pooled_fake_sim
            )
        return losses, sum(losses.values())

    def _discriminators_learn(self, on: bool) -> None:
        self.nets.disc_real.requires_grad_(on)
        self.nets.disc_sim.requires_grad_(on)

    def sample_grid(self, sim_image: np.ndarray, real_image: np.ndarray) -> np.ndarray:
        """(2H, 3W, 3) uint8: sim | sim->real | reconstruction over real | real->sim | recon."""
        nets, precision, device = self.nets, self.precision, self.device
        with evaluating(nets.gen_sim2real, nets.gen_real2sim):
            fake_real = translate_batch(nets.gen_sim2real, sim_image[None], precision, device)
            rec_sim = translate_batch(nets.gen_real2sim, fake_real, precision, device)
            fake_sim = translate_batch(nets.gen_real2sim, real_image[None], precision, device)
            rec_real = translate_batch(nets.gen_sim2real, fake_sim, precision, device)
        return image_grid(
            (sim_image, fake_real[0], rec_sim[0]), (real_image, fake_sim[0], rec_real[0])
        )


def build_trainer(
    config: CycleGANConfig,
    device: torch.device,
    precision: str,
    semantic_net: nn.Module | None = None,
    nets: CycleGANNets | None = None,
) -> CycleGANTrainer:
    """`nets` (by default built from torch's global RNG) on `device`, their Adam optimizers,
    schedules and this rank's pools; with `config.lambda_semantic` > 0, `semantic_net` (trained
    on sim) for CyCADA's loss."""
    nets = build_nets(config) if nets is None else nets
    place_nets(nets, device, config.channels_last)

    def pool_generator(name: str) -> torch.Generator:
        generator = torch.Generator(device=device)
        return generator.manual_seed(stream_seed(config.seed, dist.rank(), name))

    updates = adam_updates(
        config,
        (nets.gen_sim2real, nets.gen_real2sim),
        (nets.disc_real, nets.disc_sim),
        device,
        precision,
    )
    return CycleGANTrainer(
        nets=nets,
        runners=nets,
        objective=CycleGANObjective(
            config.gan_mode,
            config.lambda_cycle,
            config.lambda_identity,
            config.lambda_semantic,
            SemanticConsistency(semantic_net.to(device)) if semantic_net is not None else None,
        ),
        pool_fake_real=ImagePool(config.pool_size, pool_generator("pool_fake_real")),
        pool_fake_sim=ImagePool(config.pool_size, pool_generator("pool_fake_sim")),
        **updates,
    )


def trainer_for_run(
    config: CycleGANConfig,
    nets: CycleGANNets,
    run: Run,
    device: torch.device,
    precision: str,
    semantic_net: nn.Module | None = None,
) -> CycleGANTrainer:
    """`build_trainer` for a run: the pools' streams are its own (per rank, as the run's)."""
    return build_trainer(config, device, precision, semantic_net, nets)


CYCLEGAN = Translator("cyclegan", build_nets, trainer_for_run, family=lambda config: None)

# train_cyclegan(config, sim, real, out_dir, tracker, curves_path=None, device=None,
# semantic_net=None), through `train_translator`: `semantic_net` is the frozen sim-trained
# segmentation net CyCADA's loss needs (`config.lambda_semantic` > 0). It ends with both
# generators.
train_cyclegan = functools.partial(train_translator, CYCLEGAN)
