"""SimVQ (Zhu et al. 2024): a frozen random codebook C and a learnt linear map W; the codes are the
rows of C W + b, so every gradient step on W moves the whole codebook and no code is left behind."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..options import document_options
from .base import Quantizer, QuantizerOutput
from .codebook import Codebook
from .functional import (
    CHUNK_OPTIONS, COMMITMENT_COST, ROTATION_OPTIONS, code_histogram, nearest_code, straight_through, usage_stats,
)


@document_options
class SimVQuantizer(Quantizer):
    """Nearest code among the codes C W + b: C `[K, D]` frozen (drawn from N(0, 1/D) at construction
    and saved with the weights), W `[D, D]` and b `[D]` learnt (a `nn.Linear`, with its bias as in the
    reference code, so the codes can follow latents that are not centred on 0).

    Training forward, on rows z (fp32), with the codes E = C W + b:
      k = argmin_k ||z - E_k||^2,  decoder input z + sg(E_k - z) (or the rotation trick);
      commitment_loss = beta * mean((z - sg E_k)^2);  codebook_loss = mean((E_k - sg z)^2), whose
      gradient reaches W and b, and so every code.
    `code_vectors` computes C W + b for the ids asked for; the nearest-code search forms E once per
    forward and searches it in chunks, so memory is bounded by one `[rows, K]` chunk and E itself.
    """

    options = {
        "commitment_cost": COMMITMENT_COST,
        **ROTATION_OPTIONS,
        **CHUNK_OPTIONS,
    }

    def __init__(self, codebook_size: int | None = None, dim: int | None = None, **options):
        super().__init__(codebook_size, dim, **options)
        self.codebook = Codebook(self.codebook_size, self.dim, initial="normal", trainable=False, chunk_rows=self.chunk_rows)
        with torch.no_grad():
            self.codebook.weight.mul_(self.dim**-0.5)
        self.codebook.initialized.fill_(True)  # a frozen table: nothing to start on the data
        self.projection = nn.Linear(self.dim, self.dim)

    def code_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The codes C W + b `[n, D]` of ids `[n]` (all K when None), differentiable with respect to W."""
        table = self.codebook.weight if ids is None else self.codebook.weight[ids]
        return self.projection(table.float())

    def _select_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return nearest_code(rows, self.code_vectors().detach(), self.chunk_rows)

    def _forward_rows(self, rows: torch.Tensor) -> QuantizerOutput:
        ids = self._select_rows(rows)
        codes = self.code_vectors(ids)
        losses = {
            "commitment_loss": self.commitment_cost * F.mse_loss(rows, codes.detach()),
            "codebook_loss": F.mse_loss(codes, rows.detach()),
        }
        quantized = straight_through(rows, codes, self.rotation_trick)
        return QuantizerOutput(quantized, ids, losses, usage_stats(code_histogram(ids, self.codebook_size)))
