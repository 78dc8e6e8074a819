"""Test-only extensions, each written the way a new one is added to vqtok: its own code plus one
registration line, nothing in the model base, the loader, the Hub code or the trainer.

- `ResidualSignQuantizer` / the type `vqtok-test-residual-sign`: a quantizer with implicit codes
  (no table: K = 2^D follows from D) and several codes per position (R = `depth`), so the contract
  tests cover the id contract `[B, h, w, R]`;
- `PixelShuffleBackboneConfig` / `backbone_type="test-pixel-shuffle"`: a backbone of two 1x1 convs
  around a pixel (un)shuffle;
- `CriticObjective` / `objectives: {test-critic: {...}}`: a training objective with a network of its
  own, a tiny patch critic (built for the tokenizer's channels) trained by its own optimizer with
  the hinge loss, whose score of the reconstruction joins the tokenizer's loss; it counts its updates
  in a buffer of its own.

`conftest.py` imports this module, so all three are registered for the whole test session.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from vqtok import VQTokenizerConfig, VQTokenizerPreTrainedModel, register_tokenizer
from vqtok.backbones import BackboneConfig, register_backbone
from vqtok.losses import ObjectiveUpdate, TrainingObjective, register_objective
from vqtok.options import NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, Option
from vqtok.quantizers import Quantizer, QuantizerOutput, code_histogram, usage_stats


# --- a quantizer with implicit codes and several codes per position ----------------------------
class ResidualSignQuantizer(Quantizer):
    """Level r = 0 .. R-1 quantizes what the levels before it left, z - sum_{s<r} q_s, to
    q_r = 2^-r sign(.) (sign(0) = +1); its code is the bit pattern sum_i 2^i [component i >= 0], so
    K = 2^D and there is no table. The decoder gets sum_r q_r (straight-through);
    commitment_loss = beta * mean((z - sg sum_r q_r)^2)."""

    options = {
        "depth": Option(int, low=1, high=4, doc="R, the levels (codes per position)."),
        "commitment_cost": NON_NEGATIVE.documented("beta, the weight of the commitment loss."),
    }

    def __init__(self, codebook_size: int | None = None, dim: int = 4, depth: int = 2, commitment_cost: float = 0.25):
        self.check_options({"depth": depth, "commitment_cost": commitment_cost})
        self.check_codebook_size(2**dim if codebook_size is None else codebook_size, dim, {"depth": depth})
        super().__init__(2**dim, dim, codes_per_position=depth)
        self.commitment_cost = float(commitment_cost)

    @classmethod
    def derived_codebook_size(cls, dim, options):
        return 2**dim

    @classmethod
    def derived_codes_per_position(cls, options):
        return options.get("depth", 2)

    def bit_values(self, device) -> torch.Tensor:
        return 2 ** torch.arange(self.dim, device=device)

    def code_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Level 0's codes: the +-1 vectors of the ids' bit patterns."""
        ids = torch.arange(self.codebook_size) if ids is None else ids
        bits = (ids[:, None] // self.bit_values(ids.device)) % 2
        return bits.float() * 2 - 1

    def _embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return sum(2.0**-level * self.code_vectors(ids[:, level]) for level in range(self.codes_per_position))

    def _levels(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids `[N, R]`, sum of the levels' vectors `[N, D]`)."""
        residual, total, ids = rows, torch.zeros_like(rows), []
        for level in range(self.codes_per_position):
            positive = residual >= 0
            ids.append((positive.long() * self.bit_values(rows.device)).sum(dim=1))
            step = 2.0**-level * (positive.float() * 2 - 1)
            total, residual = total + step, residual - step
        return torch.stack(ids, dim=1), total

    def _select_rows(self, rows):
        return self._levels(rows)[0]

    def _forward_rows(self, rows):
        ids, total = self._levels(rows.detach())
        losses = {"commitment_loss": self.commitment_cost * F.mse_loss(rows, total)}
        return QuantizerOutput(rows + (total - rows).detach(), ids, losses, usage_stats(code_histogram(ids, self.codebook_size)))


class ResidualSignConfig(VQTokenizerConfig):
    r"""Test-only tokenizer type with implicit, residual sign codes (`ResidualSignQuantizer`)."""

    model_type = "vqtok-test-residual-sign"
    quantizer_class = ResidualSignQuantizer

    codebook_size: int | None = None
    depth: int = 2
    commitment_cost: float | int = 0.25


class ResidualSignModel(VQTokenizerPreTrainedModel):
    config_class = ResidualSignConfig


# --- a backbone --------------------------------------------------------------------------------
@dataclasses.dataclass
class PixelShuffleBackboneConfig(BackboneConfig):
    """Test-only backbone: a pixel unshuffle and a 1x1 conv in, a 1x1 conv and a pixel shuffle out."""

    backbone_type = "test-pixel-shuffle"
    options = {"downsampling_factor": Option(int, choices=(1, 2, 4), doc="f, the pixel (un)shuffle factor.")}

    downsampling_factor: int = 2

    def build_encoder(self, in_channels, latent_dim):
        return PixelShuffleEncoder(in_channels, latent_dim, self.downsampling_factor)

    def build_decoder(self, latent_dim, out_channels):
        return PixelShuffleDecoder(latent_dim, out_channels, self.downsampling_factor)


class PixelShuffleEncoder(nn.Module):
    def __init__(self, in_channels: int, latent_dim: int, factor: int):
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(factor)
        self.conv_out = nn.Conv2d(in_channels * factor**2, latent_dim, 1)

    def forward(self, pixel_values):
        return self.conv_out(self.unshuffle(pixel_values))


class PixelShuffleDecoder(nn.Module):
    def __init__(self, latent_dim: int, out_channels: int, factor: int):
        super().__init__()
        self.conv_out = nn.Conv2d(latent_dim, out_channels * factor**2, 1)
        self.shuffle = nn.PixelShuffle(factor)

    def forward(self, latents):
        return self.shuffle(self.conv_out(latents))


# --- a training objective with a network of its own --------------------------------------------
class CriticObjective(TrainingObjective):
    """A 1x1-conv patch critic D. Its own update minimises the hinge loss
    critic_loss = mean(relu(1 - D(x))) + mean(relu(1 + D(sg x^))); the tokenizer's loss gains
    critic_generator_loss = weight * -mean(D(x^)), x^ the reconstruction."""

    name = "test-critic"
    options = {
        "weight": NON_NEGATIVE.documented("Weight of the generator term in the tokenizer's loss."),
        "learning_rate": POSITIVE.documented("The critic's learning rate."),
        "start_step": NON_NEGATIVE_INT.documented("The first step of the critic's updates."),
    }

    def __init__(self, weight: float = 0.1, learning_rate: float = 1e-2, start_step: int = 0):
        super().__init__()
        self.check_options({"weight": weight, "learning_rate": learning_rate, "start_step": start_step})
        self.weight, self.learning_rate, self.start_step = float(weight), float(learning_rate), start_step
        self.register_buffer("critic_updates", torch.zeros((), dtype=torch.long))  # state outside the critic

    def setup(self, tokenizer):
        channels = tokenizer.config.in_channels
        self.critic = nn.Sequential(nn.Conv2d(channels, 4, 1), nn.SiLU(), nn.Conv2d(4, 1, 1))

    def tokenizer_losses(self, inputs):
        return {"critic_generator_loss": -self.weight * self.critic(inputs.output.reconstruction).mean()}

    def updates(self):
        return [ObjectiveUpdate("critic", self.critic, self.critic_loss, self.learning_rate, start_step=self.start_step)]

    def critic_loss(self, critic, inputs):
        self.critic_updates.add_(1)
        real = critic(inputs.pixel_values)
        fake = critic(inputs.output.reconstruction.detach())
        return {"critic_loss": F.relu(1 - real).mean() + F.relu(1 + fake).mean()}


# --- the registration lines ---------------------------------------------------------------------
register_tokenizer(ResidualSignModel)
register_backbone(PixelShuffleBackboneConfig)
register_objective(CriticObjective)
