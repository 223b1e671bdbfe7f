"""CUT and FastCUT training, sim -> real (Park et al., ECCV 2020, "Contrastive Learning for Unpaired
Image-to-Image Translation"; reference code taesungp/contrastive-unpaired-translation).

One generator, one discriminator, and per-tap MLP heads (`pipeline.models.cut`). The generator's
loss is adversarial (times `lambda_gan`) plus PatchNCE between the patches of its input and of
its output (times `lambda_nce`): a patch of the translation must be closer, in the heads'
embedding of the generator's own encoder features, to the patch of the input at the same place
than to the input's other patches. CUT also averages in the identity term, PatchNCE between real
frames and their translation (`nce_idt`); FastCUT drops it, weighs PatchNCE 10 and, half of the
steps, translates a mirrored input and mirrors the translation's features back before comparing
(`flip_equivariance`). The discriminator's loss is real against fake, halved; no image pool.

Step order, as the reference's `optimize_parameters`: translate; update D on the detached
translation; then compute G's and the heads' losses against the updated D and update them. The
non-finite guard stays on the device: D's update is skipped when its loss is not finite, G's when
its own or D's is not (agreed across ranks either way).

Everything between the steps (resume, signals, checkpoints, logging, the non-finite guard) is the
run layer's (`pipeline.train.run`), as for CycleGAN.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
from torch import Tensor, nn

from pipeline import dist, runtime
from pipeline.config import CUTConfig
from pipeline.losses import GANLoss, patch_nce
from pipeline.models.cut import ContrastiveGenerator, PatchHeads, sample_patch_ids, tap_shapes
from pipeline.models.cyclegan import build_discriminator, build_generator, translate_batch
from pipeline.train.run import Run
from pipeline.train.translator import (
    Translator,
    TranslatorTrainer,
    adam_updates,
    apply_updates,
    compile_phases,
    evaluating,
    image_grid,
    non_finite,
    place_nets,
    train_translator,
)

NET_NAMES = ("gen_sim2real", "patch_heads", "disc_real")


@dataclasses.dataclass
class CUTNets:
    gen_sim2real: nn.Module
    patch_heads: PatchHeads
    disc_real: nn.Module  # real vs fake real (gen_sim2real's output)

    def named(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in NET_NAMES}

    def generators(self) -> tuple[nn.Module, None]:
        return self.gen_sim2real, None  # one direction only


@dataclasses.dataclass
class CUTRunners:
    """What the step calls: DDP-wrapped where several ranks train."""

    translator: nn.Module  # a ContrastiveGenerator over gen_sim2real and patch_heads
    disc_real: nn.Module


def build_nets(config: CUTConfig) -> CUTNets:
    """Generator, heads (sized from the taps' channels) and discriminator, initialised from
    torch's global RNG."""
    generator = build_generator(config.netG, config.ngf, config.norm)
    shapes = tap_shapes(generator, config.nce_layers, config.crop)
    return CUTNets(
        gen_sim2real=generator,
        patch_heads=PatchHeads([channels for channels, _, _ in shapes], config.netF_nc),
        disc_real=build_discriminator("n_layers", config.ndf, config.n_layers_D, config.norm),
    )


class CUTObjective:
    """The losses of one step, weighted as the reference weights them (see the module doc)."""

    def __init__(
        self,
        gan_mode: str,
        lambda_gan: float,
        lambda_nce: float,
        nce_idt: bool,
        nce_t: float,
    ) -> None:
        self.gan_loss = GANLoss(gan_mode)
        self.lambda_gan, self.lambda_nce = lambda_gan, lambda_nce
        self.nce_idt, self.nce_t = nce_idt, nce_t

    def sources(self, sim: Tensor, real: Tensor) -> Tensor:
        """What the generator translates in a step: sim, and with `nce_idt` real after it."""
        return torch.cat([sim, real]) if self.nce_idt else sim

    def translate(
        self, runners: CUTRunners, sim: Tensor, real: Tensor, flip: Tensor, ids: list[Tensor]
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """The translation of `sources(sim, real)` and the PatchNCE queries and keys at the
        patch locations `ids` (`flip`: FastCUT's mirrored pass), as `ContrastiveGenerator`."""
        return runners.translator(self.sources(sim, real), flip, ids)

    def generator_losses(
        self,
        runners: CUTRunners,
        translated: Tensor,
        queries: list[Tensor],
        keys: list[Tensor],
        batch: int,
    ) -> tuple[dict[str, Tensor], Tensor]:
        """Losses of a `translate` output whose first `batch` frames are the sim ones, and
        their weighted total."""
        fake_real = translated[:batch]

        def nce(part: slice) -> Tensor:
            return patch_nce([q[part] for q in queries], [k[part] for k in keys], self.nce_t)

        losses = {
            "loss_gan_sim2real": self.gan_loss(runners.disc_real(fake_real), True)
            * self.lambda_gan,
            "loss_nce": nce(slice(0, batch)) * self.lambda_nce,
        }
        contrastive = losses["loss_nce"]
        if self.nce_idt:
            losses["loss_nce_idt"] = nce(slice(batch, None)) * self.lambda_nce
            contrastive = 0.5 * (losses["loss_nce"] + losses["loss_nce_idt"])
        return losses, losses["loss_gan_sim2real"] + contrastive

    def discriminator_losses(
        self, runners: CUTRunners, real: Tensor, fake_real: Tensor
    ) -> dict[str, Tensor]:
        gan = self.gan_loss
        disc = runners.disc_real
        return {"loss_disc_real": 0.5 * (gan(disc(real), True) + gan(disc(fake_real), False))}


@dataclasses.dataclass(kw_only=True)
class CUTTrainer(TranslatorTrainer):
    """The nets, their optimizers (opt_gen: the generator and the heads) and the update they
    make together (`step`)."""

    nets: CUTNets
    runners: CUTRunners  # what the step calls: DDP-wrapped and compiled where asked
    objective: CUTObjective
    # Patch locations and FastCUT's mirror draws, on the device: a stream the run checkpoints.
    draws: torch.Generator
    tap_shapes: list[tuple[int, int, int]]
    num_patches: int

    def wrap(self, compile: str) -> None:
        """DDP-wrap the nets (several ranks) once the weights are final; with `compile` other
        than "eager", compile each phase of the step into one graph, its backward into another
        (as CycleGANTrainer.wrap: crop and batch are fixed, so the graphs are static)."""
        translator = self.runners.translator
        self.runners = CUTRunners(
            translator=dist.wrap(translator, self.device),
            disc_real=dist.wrap(self.nets.disc_real, self.device),
        )
        self.compile = compile
        if compile != "eager":
            compile_phases(
                self, compile, "_translate_phase", "_generator_phase", "_discriminator_phase"
            )

    def step(self, sim: Tensor, real: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """One discriminator, then generator + heads update on (B, 3, h, w) batches.

        Returns the losses (device scalars, valid until the next step) and whether the update
        was applied (a device bool, equal on every rank): when a loss on any rank is NaN/inf,
        the nets whose losses it touches are not updated (D: its own; G: any).
        """
        self.begin_step()
        # Drawn outside the compiled phases, as tensors: the graphs stay the same every step.
        where = {"generator": self.draws, "device": self.draws.device}
        flip = torch.rand((), **where) < 0.5
        count = self.objective.sources(sim, real).shape[0]
        ids = sample_patch_ids(self.tap_shapes, count, self.num_patches, self.draws)

        batch = sim.shape[0]
        translated, queries, keys = self._translate_phase(sim, real, flip, ids)

        # Discriminator first, on the detached translation: no gradient of its reaches G.
        self.nets.disc_real.requires_grad_(True)
        disc_losses, disc_total = self._discriminator_phase(real, translated[:batch].detach())
        self.scaler.scale(disc_total).backward()
        disc_bad = non_finite(disc_losses)
        dist.all_reduce_sum(disc_bad)  # every rank skips the same steps
        apply_updates((self.opt_disc,), self.scaler, disc_bad)

        # Generator and heads against the updated discriminator, frozen so only they move.
        self.nets.disc_real.requires_grad_(False)
        gen_losses, gen_total = self._generator_phase(translated, queries, keys, batch)
        self.scaler.scale(gen_total).backward()
        bad = non_finite(gen_losses)
        dist.all_reduce_sum(bad)
        bad = bad + disc_bad
        apply_updates((self.opt_gen,), self.scaler, bad)
        self.schedule_gen.step()
        self.schedule_disc.step()
        values = {name: loss.detach() for name, loss in {**gen_losses, **disc_losses}.items()}
        return values, bad == 0

    def _translate_phase(
        self, sim: Tensor, real: Tensor, flip: Tensor, ids: list[Tensor]
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        with runtime.autocast(self.precision, self.device):
            return self.objective.translate(self.runners, sim, real, flip, ids)

    def _generator_phase(
        self, translated: Tensor, queries: list[Tensor], keys: list[Tensor], batch: int
    ) -> tuple[dict[str, Tensor], Tensor]:
        with runtime.autocast(self.precision, self.device):
            return self.objective.generator_losses(self.runners, translated, queries, keys, batch)

    def _discriminator_phase(
        self, real: Tensor, fake_real: Tensor
    ) -> tuple[dict[str, Tensor], Tensor]:
        with runtime.autocast(self.precision, self.device):
            losses = self.objective.discriminator_losses(self.runners, real, fake_real)
        return losses, sum(losses.values())

    def sample_grid(self, sim_image: np.ndarray, real_image: np.ndarray) -> np.ndarray:
        """(2H, 2W, 3) uint8: sim | sim->real over real | real->real (what the identity term
        asks to leave alone)."""
        generator, precision, device = self.nets.gen_sim2real, self.precision, self.device
        with evaluating(generator):
            fake_real = translate_batch(generator, sim_image[None], precision, device)
            same_real = translate_batch(generator, real_image[None], precision, device)
        return image_grid((sim_image, fake_real[0]), (real_image, same_real[0]))


def build_trainer(
    nets: CUTNets,
    config: CUTConfig,
    device: torch.device,
    precision: str,
    draws: torch.Generator,
) -> CUTTrainer:
    """`nets` on `device`, their Adam optimizers and schedules, for a resolved `config`
    (`cut_config`); `draws` (on `device`) gives the patch locations and mirror draws."""
    if config.lambda_nce is None or config.nce_idt is None or config.flip_equivariance is None:
        raise ValueError("CUT needs one translator's resolved settings: cut_config(params, NAME)")
    place_nets(nets, device, config.channels_last)
    updates = adam_updates(
        config, (nets.gen_sim2real, nets.patch_heads), (nets.disc_real,), device, precision
    )
    translator = ContrastiveGenerator(
        nets.gen_sim2real, nets.patch_heads, config.nce_layers, config.flip_equivariance
    )
    return CUTTrainer(
        nets=nets,
        runners=CUTRunners(translator=translator, disc_real=nets.disc_real),
        objective=CUTObjective(
            config.gan_mode, config.lambda_gan, config.lambda_nce, config.nce_idt, config.nce_t
        ),
        draws=draws,
        tap_shapes=tap_shapes(nets.gen_sim2real, config.nce_layers, config.crop),
        num_patches=config.num_patches,
        **updates,
    )


def trainer_for_run(
    config: CUTConfig, nets: CUTNets, run: Run, device: torch.device, precision: str
) -> CUTTrainer:
    """`build_trainer` for a run: the patch locations and mirror draws are its "draws" stream."""
    return build_trainer(nets, config, device, precision, run.generator("draws", device))


CUT = Translator("cut", build_nets, trainer_for_run, family=lambda config: config.mode)

# train_cut(config, sim, real, out_dir, tracker, curves_path=None, device=None): CUT or FastCUT
# (`config.mode`, the generator's "family") with one translator's resolved settings
# (`cut_config(params, NAME)`), through `train_translator`. It ends with gen_sim2real only.
train_cut = functools.partial(train_translator, CUT)
