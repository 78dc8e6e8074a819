"""VQ-VAE quantizer (van den Oord et al. 2017): nearest code, straight-through gradient,
codebook learnt by gradient or by exponential moving averages, with k-means initialisation and
dead-code restarts that keep the codebook in use."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..options import FLAG, document_options
from .base import Quantizer, QuantizerOutput
from .codebook import LEARNT_CODEBOOK_OPTIONS, Codebook
from .functional import CHUNK_OPTIONS, COMMITMENT_COST, ROTATION_OPTIONS, code_histogram, straight_through, usage_stats


@document_options
class VectorQuantizer(Quantizer):
    """Nearest-neighbour vector quantizer with a straight-through estimator.

    Training forward, on rows z (fp32):
      k = argmin_k ||z - e_k||^2,  z_q = e_k,  decoder input z + sg(z_q - z)
        (or, with `rotation_trick`, sg[lambda R] z: see `functional.rotate_to_codes`);
      commitment_loss = beta * mean((z - sg z_q)^2);
      codebook_loss = mean((z_q - sg z)^2)        (only when `use_ema=False`).
    With `use_ema=True` the codebook has no gradient; in train mode each forward updates
      N_k <- g N_k + (1-g) n_k,  M_k <- g M_k + (1-g) sum_{k_n=k} z_n,
      e_k = M_k / ((N_k + eps) / (sum N + K eps) * sum N).
    Counts and sums are summed over processes first, so every process holds the same codebook.
    The first training batch starts the codebook (`Codebook.initialize`); codes whose use falls
    below `dead_code_threshold` are restarted (`Codebook.restart_dead_codes`).
    """

    options = {
        "commitment_cost": COMMITMENT_COST,
        **LEARNT_CODEBOOK_OPTIONS,
        "use_cosine": FLAG(False, (
            "l2-normalise latents and codes, so the nearest code is the one of largest cosine similarity."
        )),
        **ROTATION_OPTIONS,
        **CHUNK_OPTIONS,
    }

    def __init__(self, codebook_size: int | None = None, dim: int | None = None, **options):
        super().__init__(codebook_size, dim, **options)
        self.codebook = Codebook(
            self.codebook_size, self.dim, trainable=not self.use_ema, ema=self.use_ema, ema_decay=self.ema_decay,
            ema_epsilon=self.ema_epsilon, track_usage=True, unit_norm=self.use_cosine, chunk_rows=self.chunk_rows,
        )

    def project(self, rows: torch.Tensor) -> torch.Tensor:
        """Unit-length latents in cosine mode, unchanged otherwise."""
        return F.normalize(rows, dim=1) if self.use_cosine else rows

    def needs_initialization(self) -> bool:
        return not bool(self.codebook.initialized)

    def initialize(self, rows: torch.Tensor) -> None:
        self.codebook.initialize(self.project(rows), self.kmeans_iters if self.kmeans_init else None)

    def _select_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return self.codebook.nearest(self.project(rows))

    def _forward_rows(self, rows: torch.Tensor) -> QuantizerOutput:
        rows = self.project(rows)
        indices = self.codebook.nearest(rows)
        codes = self.codebook.weight[indices]
        counts = code_histogram(indices, self.codebook_size)

        losses = {"commitment_loss": self.commitment_cost * F.mse_loss(rows, codes.detach())}
        if not self.use_ema:
            losses["codebook_loss"] = F.mse_loss(codes, rows.detach())
        quantized = straight_through(rows, codes, self.rotation_trick)

        stats = usage_stats(counts)
        if self.training:
            stats["restarted_codes"] = self.codebook.learn_from_batch(indices, rows.detach(), counts, self.dead_code_threshold)
        return QuantizerOutput(quantized, indices, losses, stats)
