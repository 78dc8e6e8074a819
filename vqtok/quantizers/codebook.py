"""The EMA codebook: a `[K, D]` code table initialised by k-means on the first training batch and
updated by Laplace-smoothed exponential moving averages of the vectors assigned to each code.

VQ-VAE (hard assignments) and soft EM (sampled soft assignments) both build on
`CodebookQuantizer`; only the assignment totals they feed to `ema_step` differ.
"""

from __future__ import annotations

import torch
from torch import nn

from ..options import NUMBER, POSITIVE, Option
from .base import Quantizer
from .functional import uniform_codebook
from .kmeans import global_cluster_sizes, shared_kmeans_codebook

# Options of the EMA statistics, shared by every codebook quantizer.
EMA_OPTIONS = {
    "ema_decay": Option(NUMBER, low=0, high=1, high_open=True),
    "ema_epsilon": POSITIVE,
}


@torch.no_grad()
def ema_update_(
    cluster_size: torch.Tensor, embed_sum: torch.Tensor, counts: torch.Tensor, sums: torch.Tensor, decay: float
) -> None:
    """One EMA step of codebook statistics, in place: N <- g N + (1-g) counts, M <- g M + (1-g) sums.

    `counts` `[K]` and `sums` `[K, D]` are this step's (hard or soft) assignment totals, already
    summed over processes.
    """
    cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
    embed_sum.mul_(decay).add_(sums, alpha=1 - decay)


def laplace_smoothed_codebook(cluster_size: torch.Tensor, embed_sum: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Codebook `[K, D]` from EMA statistics with Laplace smoothing of the cluster sizes:
    e_k = M_k / N~_k,  N~_k = (N_k + eps) / (sum N + K eps) * sum N."""
    total = cluster_size.sum()
    smoothed = (cluster_size + epsilon) / (total + cluster_size.shape[0] * epsilon) * total
    return embed_sum / smoothed[:, None]


class CodebookQuantizer(Quantizer):
    """A quantizer whose codes are rows of an `[K, D]` table (`embedding`) kept on the data by
    k-means initialisation and EMA statistics.

    State (saved with the weights, restored on resume):
      `embedding` `[K, D]` (a Parameter, trained by gradient or not at all), `initialized`,
      `ema_cluster_size` N `[K]` and `ema_embed_sum` M `[K, D]`.
    EMA step (`ema_step`, with assignment totals summed over processes):
      N <- g N + (1-g) counts,  M <- g M + (1-g) sums,
      e_k = M_k / N~_k  with  N~_k = (N_k + eps) / (sum N + K eps) * sum N.

    A subclass sets the options `ema_decay`, `ema_epsilon`, `kmeans_init`, `kmeans_iters` and
    `chunk_rows` (see `EMA_OPTIONS`, `kmeans.KMEANS_OPTIONS`, `functional.CHUNK_OPTIONS`), then calls `_register_codebook`. It may
    override `project` to keep codes on a manifold (VQ's cosine mode normalises them).
    """

    def _register_codebook(self, trainable: bool) -> None:
        initial = self.project(uniform_codebook(self.codebook_size, self.dim))
        # Always a Parameter so checkpoints have one layout; without gradient training it takes no gradient.
        self.embedding = nn.Parameter(initial, requires_grad=trainable)
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("ema_cluster_size", torch.ones(self.codebook_size))
        self.register_buffer("ema_embed_sum", initial.clone())

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding

    def project(self, vectors: torch.Tensor) -> torch.Tensor:
        """Map candidate code vectors onto the codebook's domain (identity here)."""
        return vectors

    @torch.no_grad()
    def initialize_codebook(self, rows: torch.Tensor) -> None:
        """First training batch: codes from k-means (rank 0's centres, broadcast), or the uniform
        initial codes; EMA statistics from that batch's nearest-code counts over all processes
        (at least 1 each), the scale at which every later EMA step works. Every process ends with
        the same codebook and statistics."""
        if self.kmeans_init:
            centres = shared_kmeans_codebook(rows, self.codebook_size, self.kmeans_iters)
            self.embedding.data.copy_(self.project(centres))
        cluster_size = global_cluster_sizes(rows, self.embedding.data, self.chunk_rows)
        self.ema_cluster_size.copy_(cluster_size)
        self.ema_embed_sum.copy_(self.embedding.data * cluster_size[:, None])
        self.initialized.fill_(True)

    @torch.no_grad()
    def ema_step(self, counts: torch.Tensor, sums: torch.Tensor) -> None:
        """Fold this step's assignment totals (`counts` `[K]`, `sums` `[K, D]`, already summed over
        processes) into the EMA statistics and recompute the codes from them."""
        ema_update_(self.ema_cluster_size, self.ema_embed_sum, counts, sums, self.ema_decay)
        codebook = laplace_smoothed_codebook(self.ema_cluster_size, self.ema_embed_sum, self.ema_epsilon)
        self.embedding.data.copy_(self.project(codebook))

    @torch.no_grad()
    def reset_codes(self, which: torch.Tensor, vectors: torch.Tensor, count: float) -> None:
        """Move the codes selected by the mask `which` onto `vectors`, with EMA statistics that keep
        them there: N_k = `count`, M_k = `count` * e_k (zeroed statistics would pull a moved code
        back to the origin at the next EMA step)."""
        self.embedding.data[which] = vectors
        self.ema_cluster_size[which] = count
        self.ema_embed_sum[which] = vectors * count
