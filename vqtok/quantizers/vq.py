"""VQ-VAE quantizer (van den Oord et al. 2017): nearest code, straight-through gradient,
codebook learnt by gradient or by exponential moving averages, with k-means initialisation and
dead-code restarts that keep the codebook in use."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..options import FLAG, NON_NEGATIVE
from .base import Quantizer, QuantizerOutput
from .codebook import LEARNT_CODEBOOK_OPTIONS, Codebook
from .functional import CHUNK_OPTIONS, ROTATION_OPTIONS, code_histogram, straight_through, usage_stats


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
        "commitment_cost": NON_NEGATIVE.documented("beta, the weight of the commitment loss `mean((z_e - sg z_q)^2)`."),
        **LEARNT_CODEBOOK_OPTIONS,
        "use_cosine": FLAG.documented(
            "l2-normalise latents and codes, so the nearest code is the one of largest cosine similarity."
        ),
        **ROTATION_OPTIONS,
        **CHUNK_OPTIONS,
    }
    legacy_state_names = {
        "embedding": "codebook.weight", "initialized": "codebook.initialized", "code_usage": "codebook.usage",
        "ema_cluster_size": "codebook.ema_cluster_size", "ema_embed_sum": "codebook.ema_embed_sum",
    }

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        commitment_cost: float = 0.25,
        use_ema: bool = True,
        ema_decay: float = 0.99,
        ema_epsilon: float = 1e-5,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 1.0,
        use_cosine: bool = False,
        rotation_trick: bool = False,
        chunk_rows: int | None = None,
    ):
        super().__init__(codebook_size, dim)
        self._set_options(
            commitment_cost=commitment_cost, use_ema=use_ema, ema_decay=ema_decay, ema_epsilon=ema_epsilon,
            kmeans_init=kmeans_init, kmeans_iters=kmeans_iters, dead_code_threshold=dead_code_threshold,
            use_cosine=use_cosine, rotation_trick=rotation_trick, chunk_rows=chunk_rows,
        )
        self.codebook = Codebook(
            codebook_size, dim, trainable=not use_ema, ema=use_ema, ema_decay=self.ema_decay,
            ema_epsilon=self.ema_epsilon, track_usage=True, unit_norm=use_cosine, chunk_rows=chunk_rows,
        )

    def retired_legacy_state(self) -> set[str]:
        """vqtok 0.1 kept EMA statistics also for a codebook learnt by gradient (unused there)."""
        return set() if self.use_ema else {"codebook.ema_cluster_size", "codebook.ema_embed_sum"}

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
