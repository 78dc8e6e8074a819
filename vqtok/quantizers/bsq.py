"""Binary spherical quantization (Zhao et al. 2024, BSQ-ViT): LFQ on the unit sphere. The latent is
l2-normalised and each dimension is one bit, q = sign(u) / sqrt(D), so every code has unit length."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..options import document_options
from .lfq import LFQuantizer


@document_options
class BSQuantizer(LFQuantizer):
    """Binary spherical quantizer: `LFQuantizer` on u = z / ||z||, with codes q = sign(u) / sqrt(D).

    Training forward, on rows z (fp32) of D = log2 K dimensions:
      u = z / ||z||,  q = sign(u) / sqrt(D) (a zero counts as negative),  id = sum_i 2^i [u_i > 0],
      decoder input u + sg(q - u);  commitment_loss = beta * mean((u - sg q)^2);
      entropy_loss as LFQ's with p(c|u) = softmax_c(-||u - c||^2 / tau) over the codes c, i.e. bit i
      is 1 with probability sigmoid(4 u_i / (sqrt(D) tau)); both entropies are exact (`code_entropies`).
    Latents and codes both lie on the unit sphere, so the quantization error is bounded:
    ||u - q||^2 = 2 - 2 u.q <= 2 - 2/sqrt(D) for every u.
    """

    options = {
        **LFQuantizer.options,
        "entropy_weight": LFQuantizer.options["entropy_weight"].changed(0.1),
    }

    @property
    def code_scale(self) -> float:
        return 1.0 / math.sqrt(self.dim)

    def project(self, rows: torch.Tensor) -> torch.Tensor:
        return F.normalize(rows, dim=1)
