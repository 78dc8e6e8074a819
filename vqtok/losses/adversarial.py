"""The adversarial loss of VQGAN (Esser et al. 2021): a PatchGAN discriminator (Isola et al. 2017)
trained beside the tokenizer to tell images from reconstructions, and a generator term that pushes
the reconstructions toward what it takes for real (`objectives: {adversarial: {...}}`).

- Discriminator loss, on x (real) and sg(x^) (fake): hinge, 1/2 [mean relu(1 - D(x)) + mean relu(1 + D(x^))],
  or non-saturating, 1/2 [mean softplus(-D(x)) + mean softplus(D(x^))].
- Generator term added to the tokenizer's loss: weight x lambda x L_G, with L_G = -mean D(x^) (hinge)
  or mean softplus(-D(x^)) (non-saturating), and VQGAN's adaptive weight
  lambda = |grad_w L_rec| / (|grad_w L_G| + 1e-4), clipped to [0, 1e4] and not differentiated,
  w the decoder's last layer and L_rec the reconstruction terms (the type's own, which for SQ-VAE
  is its likelihood, plus the perceptual loss when that objective is on).
- Both start at `start_step` (before it the tokenizer trains without them, the discriminator not at all).
- Optional LeCam regularisation (Tseng et al. 2021) of the discriminator:
  mean relu(D(x) - a_fake)^2 + mean relu(a_real - D(x^))^2, a_real / a_fake exponential moving averages
  of the discriminator's mean outputs (kept equal over processes and saved in every checkpoint).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..options import (
    FLAG, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, UNIT_INTERVAL, Option, document_options,
)
from ..parallel.collectives import all_reduce_mean_
from .base import LR_SCHEDULER, ObjectiveInputs, ObjectiveUpdate, TrainingObjective

GAN_LOSSES = ("hinge", "non-saturating")
DISCRIMINATOR_NORMS = ("batch", "group", "none")
# Terms of the tokenizer's loss that the adaptive weight balances the generator term against.
RECONSTRUCTION_TERMS = ("reconstruction_loss", "perceptual_loss")
_ADAPTIVE_EPS = 1e-4
_MAX_ADAPTIVE_WEIGHT = 1e4


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(32, channels), channels)
    return nn.Identity()


class PatchDiscriminator(nn.Module):
    """The n-layer PatchGAN: a 4x4 stride-2 conv and LeakyReLU(0.2), `num_layers - 1` more stride-2
    stages (conv, norm, LeakyReLU; widths doubling up to 8 x `base_channels`), a stride-1 stage and a
    final 4x4 conv to one logit per patch. Weights start as VQGAN's: conv ~ N(0, 0.02), norm scale
    ~ N(1, 0.02). Images `[B, C, H, W]` -> logits `[B, 1, h, w]`."""

    def __init__(self, in_channels: int = 3, base_channels: int = 64, num_layers: int = 3, norm: str = "batch"):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, base_channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        width = base_channels
        for index in range(1, num_layers + 1):
            next_width = base_channels * min(2**index, 8)
            stride = 2 if index < num_layers else 1
            layers += [nn.Conv2d(width, next_width, 4, stride, 1, bias=norm == "none"), _norm(norm, next_width),
                       nn.LeakyReLU(0.2)]
            width = next_width
        layers.append(nn.Conv2d(width, 1, 4, 1, 1))
        self.layers = nn.Sequential(*layers)
        self.num_layers = num_layers
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def smallest_image(self) -> int:
        """The smallest image side that leaves at least one patch (a multiple of 2^num_layers)."""
        return 3 * 2**self.num_layers

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


def discriminator_loss(kind: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss on its logits for real images and for reconstructions."""
    if kind == "hinge":
        return 0.5 * (F.relu(1 - real).mean() + F.relu(1 + fake).mean())
    return 0.5 * (F.softplus(-real).mean() + F.softplus(fake).mean())


def generator_loss(kind: str, fake: torch.Tensor) -> torch.Tensor:
    """The generator's loss on the discriminator's logits for reconstructions."""
    if kind == "hinge":
        return -fake.mean()
    return F.softplus(-fake).mean()


def adaptive_weight(reconstruction_loss: torch.Tensor, generator_term: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """VQGAN's balance of the generator term against the reconstruction: |grad L_rec| / (|grad L_G| + 1e-4)
    at `last_layer`, clipped to [0, 1e4], detached."""
    reconstruction_grad, = torch.autograd.grad(reconstruction_loss, last_layer, retain_graph=True)
    generator_grad, = torch.autograd.grad(generator_term, last_layer, retain_graph=True)
    weight = reconstruction_grad.float().norm() / (generator_grad.float().norm() + _ADAPTIVE_EPS)
    return weight.clamp(0, _MAX_ADAPTIVE_WEIGHT).detach()


def lecam_penalty(real: torch.Tensor, fake: torch.Tensor, ema_real: torch.Tensor, ema_fake: torch.Tensor) -> torch.Tensor:
    """LeCam's regulariser: mean relu(D(x) - a_fake)^2 + mean relu(a_real - D(x^))^2."""
    return F.relu(real - ema_fake).pow(2).mean() + F.relu(ema_real - fake).pow(2).mean()


@document_options
class AdversarialObjective(TrainingObjective):
    """The VQGAN adversarial objective: a PatchGAN discriminator with its own AdamW update, and the
    (adaptively weighted) generator term in the tokenizer's loss, logged as `adversarial_loss`; the
    discriminator's terms are logged as `discriminator_loss` (and `lecam_loss`). See the module
    docstring for the formulas."""

    name = "adversarial"
    reads_other_terms = True  # its adaptive weight reads the perceptual term: built after the other objectives
    options = {
        "weight": NON_NEGATIVE(0.5, "Weight of the generator term (LlamaGen: 0.5; taming: 0.8)."),
        "adaptive_weight": FLAG(True, "Scale the generator term by VQGAN's adaptive weight."),
        "loss": Option(str, choices=GAN_LOSSES)("hinge", "The GAN loss: hinge (taming, LlamaGen) or non-saturating."),
        "start_step": NON_NEGATIVE_INT(0, (
            "The first step with the discriminator and the generator term (taming: disc_start)."
        )),
        "base_channels": POSITIVE_INT(64, "Width of the discriminator's first layer."),
        "num_layers": POSITIVE_INT(3, "Stride-2 stages of the PatchGAN (3: 70x70 patches)."),
        "norm": Option(str, choices=DISCRIMINATOR_NORMS)("batch", "The discriminator's normalisation layers."),
        "learning_rate": POSITIVE(1e-4, "The discriminator's learning rate."),
        "beta1": UNIT_INTERVAL(0.5, "The discriminator optimizer's beta1 (taming: 0.5; LlamaGen: 0.9)."),
        "beta2": UNIT_INTERVAL(0.9, "The discriminator optimizer's beta2 (taming: 0.9; LlamaGen: 0.95)."),
        "weight_decay": NON_NEGATIVE(0.0, "The discriminator optimizer's weight decay."),
        "lr_scheduler": LR_SCHEDULER("constant", "The discriminator's LR schedule (a transformers.get_scheduler name)."),
        "warmup_steps": NON_NEGATIVE_INT(0, "Warm-up steps of the discriminator's LR schedule."),
        "lecam_weight": NON_NEGATIVE(0.0, "Weight of the LeCam regulariser (0: off; MAGVIT: 0.001)."),
        "lecam_decay": UNIT_INTERVAL(0.999, "Decay of LeCam's moving averages of the discriminator's outputs."),
    }

    def __init__(self, **options):
        super().__init__()
        self.settings = self.options_with_defaults(options)
        self.register_buffer("ema_real_logit", torch.zeros(()))
        self.register_buffer("ema_fake_logit", torch.zeros(()))

    def setup(self, tokenizer) -> None:
        config = tokenizer.config
        if self.settings["adaptive_weight"] and "decoder" in getattr(tokenizer, "frozen_parts", ()):
            raise ValueError(
                "objectives.adversarial: the adaptive weight balances the gradients at the decoder's last layer, which "
                "training.freeze keeps as it is: train the decoder, or set adaptive_weight: false"
            )
        self.discriminator = PatchDiscriminator(config.in_channels, self.settings["base_channels"],
                                                self.settings["num_layers"], self.settings["norm"])
        if config.image_size < self.discriminator.smallest_image():
            raise ValueError(
                f"objectives.adversarial: a PatchGAN of num_layers={self.settings['num_layers']} needs images of at "
                f"least {self.discriminator.smallest_image()} pixels; the tokenizer's are {config.image_size}: "
                "lower num_layers"
            )

    def tokenizer_losses(self, inputs: ObjectiveInputs) -> dict[str, torch.Tensor]:
        reconstruction = inputs.output.reconstruction
        if inputs.step < self.settings["start_step"]:
            return {"adversarial_loss": reconstruction.new_zeros((), dtype=torch.float32)}
        term = generator_loss(self.settings["loss"], self.discriminator(reconstruction).float())
        scale = torch.ones((), device=term.device)
        if self.settings["adaptive_weight"] and torch.is_grad_enabled():
            scale = adaptive_weight(self._reconstruction_terms(inputs), term, _last_decoder_layer(inputs.tokenizer))
        return {"adversarial_loss": self.settings["weight"] * scale * term}

    def updates(self) -> list[ObjectiveUpdate]:
        settings = self.settings
        return [ObjectiveUpdate(
            "discriminator", self.discriminator, self._discriminator_losses, settings["learning_rate"],
            betas=(settings["beta1"], settings["beta2"]), weight_decay=settings["weight_decay"],
            lr_scheduler=settings["lr_scheduler"], warmup_steps=settings["warmup_steps"],
            start_step=settings["start_step"],
        )]

    def _discriminator_losses(self, discriminator: nn.Module, inputs: ObjectiveInputs) -> dict[str, torch.Tensor]:
        real = discriminator(inputs.pixel_values).float()
        fake = discriminator(inputs.output.reconstruction.detach()).float()
        losses = {"discriminator_loss": discriminator_loss(self.settings["loss"], real, fake)}
        if self.settings["lecam_weight"] > 0:
            losses["lecam_loss"] = self.settings["lecam_weight"] * lecam_penalty(
                real, fake, self.ema_real_logit, self.ema_fake_logit)
            self._track_logits(real.detach().mean(), fake.detach().mean())
        return losses

    @torch.no_grad()
    def _track_logits(self, real_mean: torch.Tensor, fake_mean: torch.Tensor) -> None:
        means = all_reduce_mean_(torch.stack([real_mean, fake_mean]))  # the same averages on every process
        if not torch.isfinite(means).all():
            return  # a non-finite batch leaves the averages as they were (the loop skips the step)
        decay = self.settings["lecam_decay"]
        self.ema_real_logit.mul_(decay).add_((1 - decay) * means[0])
        self.ema_fake_logit.mul_(decay).add_((1 - decay) * means[1])

    @staticmethod
    def _reconstruction_terms(inputs: ObjectiveInputs) -> torch.Tensor:
        terms = [inputs.output.losses[name] for name in RECONSTRUCTION_TERMS if name in inputs.output.losses]
        if not terms:
            raise ValueError(f"the adversarial objective's adaptive weight needs a reconstruction term "
                             f"({' or '.join(RECONSTRUCTION_TERMS)}) in the tokenizer's losses")
        return sum(terms)


def _last_decoder_layer(tokenizer: nn.Module) -> torch.Tensor:
    """The weight of the decoder's last layer (`decoder.last_layer`, which every backbone's decoder names)."""
    last_layer = getattr(getattr(tokenizer, "decoder", None), "last_layer", None)
    if not isinstance(last_layer, torch.Tensor):
        raise ValueError("the adversarial objective's adaptive weight needs the tokenizer's `decoder.last_layer` (the "
                         "weight of its last layer); set adaptive_weight: false for a backbone whose decoder names none")
    return last_layer
