"""VQ-VAE quantizer (van den Oord et al. 2017): nearest code, straight-through gradient,
codebook learnt by gradient or by exponential moving averages, with k-means initialisation and
dead-code restarts that keep the codebook in use."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..parallel.collectives import all_reduce_sum_
from ..options import FLAG, NON_NEGATIVE
from .base import QuantizerOutput
from .codebook import EMA_OPTIONS, CodebookQuantizer
from .functional import CHUNK_OPTIONS, code_histogram, nearest_code, usage_stats
from .kmeans import KMEANS_OPTIONS
from .restarts import DEAD_CODE_OPTIONS, replacement_vectors, update_usage_and_find_dead


class VectorQuantizer(CodebookQuantizer):
    """Nearest-neighbour vector quantizer with a straight-through estimator.

    Training forward, on rows z (fp32):
      k = argmin_k ||z - e_k||^2,  z_q = e_k,  decoder input z + sg(z_q - z);
      commitment_loss = beta * mean((z - sg z_q)^2);
      codebook_loss = mean((z_q - sg z)^2)        (only when `use_ema=False`).
    With `use_ema=True` the codebook has no gradient; in train mode each forward updates
      N_k <- g N_k + (1-g) n_k,  M_k <- g M_k + (1-g) sum_{k_n=k} z_n,
      e_k = M_k / ((N_k + eps) / (sum N + K eps) * sum N).
    Counts and sums are summed over processes first, so every process holds the same codebook.

    Args:
        codebook_size: number of codes K.
        dim: vector dimension D.
        commitment_cost: beta.
        use_ema: EMA codebook updates instead of the codebook loss.
        ema_decay: g.
        ema_epsilon: eps, the Laplace smoothing.
        kmeans_init: initialise the codebook with k-means on the first training batch.
        kmeans_iters: Lloyd iterations for that.
        dead_code_threshold: restart codes whose moving-average count per batch falls below this
            (0 disables); a restarted code moves onto a random vector of the batch and its EMA
            statistics are reset to match, so the next EMA step keeps it there.
        use_cosine: l2-normalise latents and codes (nearest = largest cosine similarity).
        chunk_rows: rows per chunk of the nearest-code search (default: about 1M distances).
    """

    options = {
        "commitment_cost": NON_NEGATIVE,
        "use_ema": FLAG,
        **DEAD_CODE_OPTIONS,
        "use_cosine": FLAG,
        **EMA_OPTIONS,
        **KMEANS_OPTIONS,
        **CHUNK_OPTIONS,
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
        chunk_rows: int | None = None,
    ):
        super().__init__(codebook_size, dim)
        self._set_options(
            commitment_cost=commitment_cost, use_ema=use_ema, ema_decay=ema_decay, ema_epsilon=ema_epsilon,
            kmeans_init=kmeans_init, kmeans_iters=kmeans_iters, dead_code_threshold=dead_code_threshold,
            use_cosine=use_cosine, chunk_rows=chunk_rows,
        )
        self._register_codebook(trainable=not use_ema)
        self.register_buffer("code_usage", torch.zeros(codebook_size))

    def project(self, vectors: torch.Tensor) -> torch.Tensor:
        """Unit-length vectors in cosine mode (latents and codes alike), unchanged otherwise."""
        return F.normalize(vectors, dim=1) if self.use_cosine else vectors

    def _select_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return nearest_code(self.project(rows), self.embedding, self.chunk_rows)

    def _forward_rows(self, rows: torch.Tensor) -> QuantizerOutput:
        rows = self.project(rows)
        if self.training and not bool(self.initialized):
            self._initialize(rows.detach())

        indices = nearest_code(rows, self.embedding.detach(), self.chunk_rows)
        codes = self.embedding[indices]
        counts = code_histogram(indices, self.codebook_size)

        losses = {"commitment_loss": self.commitment_cost * F.mse_loss(rows, codes.detach())}
        if not self.use_ema:
            losses["codebook_loss"] = F.mse_loss(codes, rows.detach())
        quantized = rows + (codes - rows).detach()

        stats = usage_stats(counts)
        if self.training:
            with torch.no_grad():
                global_counts = all_reduce_sum_(counts.clone())
                if self.use_ema:
                    sums = torch.zeros_like(self.ema_embed_sum).index_add_(0, indices, rows.detach())
                    self.ema_step(global_counts, all_reduce_sum_(sums))
                stats["restarted_codes"] = self._restart_dead_codes(rows.detach(), global_counts)
        return QuantizerOutput(quantized, indices, losses, stats)

    # --- training-time codebook maintenance ----------------------------------------------------
    @torch.no_grad()
    def _initialize(self, rows: torch.Tensor) -> None:
        """The codebook's first-batch initialisation (see `CodebookQuantizer.initialize_codebook`),
        and every code's usage set to the global batch's average, so that no code counts as dead
        before it had a chance."""
        self.initialize_codebook(rows)
        total_rows = float(all_reduce_sum_(rows.new_tensor(float(rows.shape[0]))))
        self.code_usage.fill_(total_rows / self.codebook_size)

    @torch.no_grad()
    def _restart_dead_codes(self, rows: torch.Tensor, global_counts: torch.Tensor) -> torch.Tensor:
        """Move codes whose usage fell below the threshold onto random vectors of the batch.

        `code_usage` is updated from globally summed counts, so every process finds the same dead
        codes and takes the same branch (the broadcast below is entered by all or by none);
        the replacement vectors are rank 0's draw, broadcast to every process.
        """
        found = update_usage_and_find_dead(self.code_usage, global_counts, self.dead_code_threshold)
        if found is None:
            return torch.zeros((), device=rows.device)
        dead, fresh_count = found
        num_dead = int(dead.sum())
        # EMA statistics that keep the code where it was put.
        self.reset_codes(dead, replacement_vectors(rows, num_dead), fresh_count)
        return torch.tensor(float(num_dead), device=rows.device)
