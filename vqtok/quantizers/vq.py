"""VQ-VAE quantizer (van den Oord et al. 2017): nearest code, straight-through gradient,
codebook learnt by gradient or by exponential moving averages, with k-means initialisation and
dead-code restarts that keep the codebook in use."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import all_reduce_sum_, broadcast_
from .base import (
    Quantizer,
    QuantizerOutput,
    code_histogram,
    ema_update_,
    laplace_smoothed_codebook,
    nearest_code,
    perplexity_from_counts,
    uniform_codebook,
)
from .kmeans import global_cluster_sizes, sample_rows, shared_kmeans_codebook

# Code usage is tracked as a moving average over roughly the last 10 batches: short enough that
# codes stranded early in training (when the encoder's output still moves fast) are restarted
# within a few dozen steps, long enough that a rarely used but live code is not.
USAGE_DECAY = 0.9


class VectorQuantizer(Quantizer):
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
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay}")
        if ema_epsilon <= 0:
            raise ValueError(f"ema_epsilon must be > 0, got {ema_epsilon}")
        if dead_code_threshold < 0:
            raise ValueError(f"dead_code_threshold must be >= 0, got {dead_code_threshold}")
        self.commitment_cost = float(commitment_cost)
        self.use_ema = use_ema
        self.ema_decay = float(ema_decay)
        self.ema_epsilon = float(ema_epsilon)
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters
        self.dead_code_threshold = float(dead_code_threshold)
        self.use_cosine = use_cosine
        self.chunk_rows = chunk_rows

        initial = uniform_codebook(codebook_size, dim)
        if use_cosine:
            initial = F.normalize(initial, dim=1)
        # Always a Parameter so checkpoints have one layout; under EMA it takes no gradient.
        self.embedding = nn.Parameter(initial, requires_grad=not use_ema)
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("ema_cluster_size", torch.ones(codebook_size))
        self.register_buffer("ema_embed_sum", initial.clone())
        self.register_buffer("code_usage", torch.zeros(codebook_size))

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding

    def _prepare(self, rows: torch.Tensor) -> torch.Tensor:
        return F.normalize(rows, dim=1) if self.use_cosine else rows

    def _select_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return nearest_code(self._prepare(rows), self.embedding, self.chunk_rows)

    def _forward_rows(self, rows: torch.Tensor) -> QuantizerOutput:
        rows = self._prepare(rows)
        if self.training and not bool(self.initialized):
            self._initialize(rows.detach())

        indices = nearest_code(rows, self.embedding.detach(), self.chunk_rows)
        codes = self.embedding[indices]
        counts = code_histogram(indices, self.codebook_size)

        losses = {"commitment_loss": self.commitment_cost * F.mse_loss(rows, codes.detach())}
        if not self.use_ema:
            losses["codebook_loss"] = F.mse_loss(codes, rows.detach())
        quantized = rows + (codes - rows).detach()

        stats = {"perplexity": perplexity_from_counts(counts), "usage": (counts > 0).float().mean()}
        if self.training:
            with torch.no_grad():
                global_counts = all_reduce_sum_(counts.clone())
                if self.use_ema:
                    self._ema_update(rows.detach(), indices, global_counts)
                stats["restarted_codes"] = self._restart_dead_codes(rows.detach(), global_counts)
        return QuantizerOutput(quantized, indices, losses, stats)

    # --- training-time codebook maintenance ----------------------------------------------------
    @torch.no_grad()
    def _initialize(self, rows: torch.Tensor) -> None:
        """k-means (or keep the uniform init) on the first batch.

        Under distributed training rank 0's k-means centres are broadcast, and the initial EMA
        counts are those of the *global* batch (assignments to the shared centres, summed over
        processes), the scale every later EMA update works at; so every process starts from the
        same codebook and statistics as one process seeing the whole batch would (up to k-means
        seeing only rank 0's share).
        """
        total_rows = float(all_reduce_sum_(rows.new_tensor(float(rows.shape[0]))))
        if self.kmeans_init:
            centres = self._prepare(shared_kmeans_codebook(rows, self.codebook_size, self.kmeans_iters))
            self.embedding.data.copy_(centres)
            cluster_size = global_cluster_sizes(rows, centres, self.chunk_rows)
        else:
            cluster_size = torch.full_like(self.ema_cluster_size, max(total_rows / self.codebook_size, 1.0))
        self.ema_cluster_size.copy_(cluster_size)
        self.ema_embed_sum.copy_(self.embedding.data * cluster_size[:, None])
        # Start every code's usage at the batch average, so no code counts as dead before it had a chance.
        self.code_usage.fill_(total_rows / self.codebook_size)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, rows: torch.Tensor, indices: torch.Tensor, global_counts: torch.Tensor) -> None:
        sums = torch.zeros_like(self.ema_embed_sum).index_add_(0, indices, rows)
        all_reduce_sum_(sums)
        ema_update_(self.ema_cluster_size, self.ema_embed_sum, global_counts, sums, self.ema_decay)
        self.embedding.data.copy_(self._ema_codebook())

    def _ema_codebook(self) -> torch.Tensor:
        return self._prepare(laplace_smoothed_codebook(self.ema_cluster_size, self.ema_embed_sum, self.ema_epsilon))

    @torch.no_grad()
    def _restart_dead_codes(self, rows: torch.Tensor, global_counts: torch.Tensor) -> torch.Tensor:
        """Move codes whose usage fell below the threshold onto random vectors of the batch.

        `code_usage` is updated from globally summed counts, so every process finds the same dead
        codes and takes the same branch (the broadcast below is entered by all or by none);
        the replacement vectors are rank 0's draw, broadcast to every process.
        """
        self.code_usage.mul_(USAGE_DECAY).add_(global_counts, alpha=1 - USAGE_DECAY)
        if self.dead_code_threshold <= 0:
            return torch.zeros((), device=rows.device)
        dead = self.code_usage < self.dead_code_threshold
        num_dead = int(dead.sum())
        if num_dead == 0:
            return torch.zeros((), device=rows.device)
        replacements = broadcast_(sample_rows(rows, num_dead).contiguous())
        self.embedding.data[dead] = replacements
        # Reset the EMA statistics to the new position (not to zero, which would pull the code
        # back to the origin at the next EMA step) and give the code a fresh usage budget.
        fresh_count = max(float(global_counts.sum()) / self.codebook_size, self.dead_code_threshold)
        self.ema_cluster_size[dead] = fresh_count
        self.ema_embed_sum[dead] = replacements * fresh_count
        self.code_usage[dead] = fresh_count
        return torch.tensor(float(num_dead), device=rows.device)
