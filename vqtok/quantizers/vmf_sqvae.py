"""The von Mises-Fisher stochastic quantizer of SQ-VAE (Takida et al. 2022): latents and codes on the
unit sphere, a vMF posterior over the codes whose concentration kappa is learned (and rises: the
self-annealing), a Gumbel-softmax soft mixture of codes in training, the posterior's argmax at encode
(the shared parts are `StochasticQuantizer`'s, in `sqvae.py`)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..options import Option, document_options
from .sqvae import StochasticQuantizer


@document_options
class VMFSQVAEQuantizer(StochasticQuantizer):
    """von Mises-Fisher stochastic quantizer of SQ-VAE: latents and codes are l2-normalised over
    the channels, kappa = exp(s) + 1 with s a learned scalar, logits_nk = kappa * z_n . b^_k, and
    R = kappa * sum z . (z - z~). The decoder receives normalised codes (or their mixture).
    """

    options = {
        **StochasticQuantizer.options,
        "dead_code_threshold": StochasticQuantizer.options["dead_code_threshold"].changed(2.0),
        "kappa_init": Option(float, low=1, low_open=True)(20.0, (
            "The posterior concentration kappa at initialisation (> 1; the reference uses 1.05 with 64-dimensional "
            "codes and lets kappa rise over a long run)."
        )),
    }

    def __init__(self, codebook_size: int | None = None, dim: int | None = None, **options):
        super().__init__(codebook_size, dim, **options)
        self.log_kappa_offset = nn.Parameter(torch.tensor(math.log(self.kappa_init - 1.0)))

    def code_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The unit-length codes b^_k `[n, D]` (fp32) of `ids` (all K when None)."""
        return F.normalize(super().code_vectors(ids), dim=1)

    @property
    def sharpness_parameter(self) -> nn.Parameter:
        return self.log_kappa_offset

    @property
    def kappa(self) -> torch.Tensor:
        """The posterior concentration kappa = exp(s) + 1 (fp32 scalar)."""
        return self.log_kappa_offset.float().exp() + 1.0

    def latents_of(self, rows):
        return F.normalize(rows, dim=1)

    def _posterior(self, rows, batch_size):
        latents = self.latents_of(rows)
        kappa = self.kappa
        logits = kappa * (latents @ self.code_vectors().t())
        return latents, logits, {"kappa": kappa, "stats": {"kappa": kappa.detach()}}

    def _distortion(self, latents, quantized, context):
        return context["kappa"] * (latents * (latents - quantized)).sum()
