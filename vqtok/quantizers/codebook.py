"""The `Codebook`: a table of K code vectors `[K, D]` and the state that keeps it on the data.

A quantizer whose codes are rows of a table holds one (`self.codebook`); a quantizer whose codes
are implicit (computed from the ids, as FSQ's or LFQ's) holds none. The codebook owns what every
table quantizer used to write for itself: the table, its first-batch initialisation (k-means on the
batch, rank 0's centres broadcast), the exponential moving averages of the vectors assigned to each
code (where the method learns its codes that way), a moving average of each code's use, and the
restart of codes that fall out of use. Every process keeps the same codebook: statistics are summed
over processes before they are folded in, and random choices are rank 0's, broadcast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..options import FLAG, NON_NEGATIVE, NUMBER, POSITIVE, Option
from ..parallel.collectives import all_reduce_sum_, broadcast_
from .functional import code_histogram, nearest_code
from .kmeans import KMEANS_OPTIONS, sample_rows, shared_kmeans_codebook

# The options of a codebook learnt by exponential moving averages.
EMA_OPTIONS = {
    "ema_decay": Option(NUMBER, low=0, high=1, high_open=True)(0.99, (
        "gamma, the decay of the exponential moving averages of each code's assignment count N_k and vector sum M_k."
    ), training_only=True),
    "ema_epsilon": POSITIVE(1e-5, "Laplace smoothing of the EMA cluster sizes.", training_only=True),
}

# The option of a codebook whose unused codes are restarted.
DEAD_CODE_OPTIONS = {
    "dead_code_threshold": NON_NEGATIVE(1.0, (
        "A code whose use falls below this many assignments per batch moves onto a random latent vector of "
        "the current batch, with its statistics reset to keep it there; 0 disables restarts."
    ), training_only=True),
}

# The options of a codebook learnt by EMA or by gradient, started by k-means, with dead-code restarts
# (VQ-VAE's, shared by the residual quantizers).
LEARNT_CODEBOOK_OPTIONS = {
    "use_ema": FLAG(True, (
        "Learn the codebook by exponential moving averages (no codebook gradient) instead of the codebook loss "
        "`mean((z_q - sg z_e)^2)`."
    )),
    **DEAD_CODE_OPTIONS,
    **EMA_OPTIONS,
    **KMEANS_OPTIONS,
}

# A code's use is a moving average of its per-batch assignment count, summed over all processes,
# over roughly the last 10 batches: short enough that codes stranded early in training (when the
# encoder's output still moves fast) are restarted within a few dozen steps, long enough that a
# rarely used but live code is not.
USAGE_DECAY = 0.9

INITIAL_TABLES = ("uniform", "normal")


def uniform_codebook(codebook_size: int, dim: int) -> torch.Tensor:
    """Initial codes drawn uniformly from [-1/K, 1/K] (the VQ-VAE reference initialisation)."""
    bound = 1.0 / codebook_size
    return torch.empty(codebook_size, dim).uniform_(-bound, bound)


def laplace_smoothed_codebook(cluster_size: torch.Tensor, embed_sum: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Codes `[K, D]` from EMA statistics with Laplace smoothing of the cluster sizes:
    e_k = M_k / N~_k,  N~_k = (N_k + eps) / (sum N + K eps) * sum N."""
    total = cluster_size.sum()
    smoothed = (cluster_size + epsilon) / (total + cluster_size.shape[0] * epsilon) * total
    return embed_sum / smoothed[:, None]


@torch.no_grad()
def replacement_vectors(rows: torch.Tensor, count: int) -> torch.Tensor:
    """`count` rows of this batch, drawn on rank 0 and broadcast to every process."""
    return broadcast_(sample_rows(rows, count).contiguous())


class Codebook(nn.Module):
    """K code vectors and the state that keeps them in use.

    State (saved with the weights, restored on resume):
      `weight` `[K, D]`, a Parameter (trained by gradient, or only by the updates below);
      `initialized`, set by the first-batch `initialize`;
      with `ema=True`: `ema_cluster_size` N `[K]` and `ema_embed_sum` M `[K, D]`, folded in by
        `ema_step`: N <- g N + (1-g) counts, M <- g M + (1-g) sums, e_k = M_k / N~_k with the
        Laplace-smoothed N~_k = (N_k + eps) / (sum N + K eps) * sum N;
      with `track_usage=True`: `usage` `[K]`, a moving average (decay 0.9) of each code's
        per-batch count, which `restart_dead_codes` reads.

    Args:
        size: K.
        dim: D.
        initial: the table before any data: "uniform" in [-1/K, 1/K] (the VQ-VAE reference) or
            "normal", N(0, I).
        trainable: whether the table takes gradients (it is a Parameter either way, so checkpoints
            have one layout).
        ema: keep EMA statistics (`ema_decay`, `ema_epsilon` as in `EMA_OPTIONS`).
        ema_decay / ema_epsilon: g and eps.
        track_usage: keep the moving average of use that dead-code restarts read.
        unit_norm: keep the codes at unit length (initial table, k-means centres, EMA updates).
        chunk_rows: rows per chunk of the nearest-code searches (default: sized for the device, `default_chunk_rows`).
    """

    def __init__(
        self,
        size: int,
        dim: int,
        *,
        initial: str = "uniform",
        trainable: bool = True,
        ema: bool = False,
        ema_decay: float = EMA_OPTIONS["ema_decay"].default,
        ema_epsilon: float = EMA_OPTIONS["ema_epsilon"].default,
        track_usage: bool = False,
        unit_norm: bool = False,
        chunk_rows: int | None = None,
    ):
        super().__init__()
        if initial not in INITIAL_TABLES:
            raise ValueError(f"Codebook argument `initial` must be one of {list(INITIAL_TABLES)}, got {initial!r}")
        self.size, self.dim = size, dim
        self.ema_decay, self.ema_epsilon = float(ema_decay), float(ema_epsilon)
        self.unit_norm, self.chunk_rows = unit_norm, chunk_rows
        table = uniform_codebook(size, dim) if initial == "uniform" else torch.randn(size, dim)
        table = self.project(table)
        self.weight = nn.Parameter(table, requires_grad=trainable)
        self.register_buffer("initialized", torch.tensor(False))
        self.has_ema = ema
        if ema:
            self.register_buffer("ema_cluster_size", torch.ones(size))
            self.register_buffer("ema_embed_sum", table.clone())
        self.tracks_usage = track_usage
        if track_usage:
            self.register_buffer("usage", torch.zeros(size))

    def project(self, vectors: torch.Tensor) -> torch.Tensor:
        """Candidate code vectors mapped onto the codebook's domain (unit length with `unit_norm`)."""
        return F.normalize(vectors, dim=1) if self.unit_norm else vectors

    def nearest(self, rows: torch.Tensor) -> torch.Tensor:
        """Id `[N]` of the nearest code (squared Euclidean distance) of each fp32 row `[N, D]`."""
        return nearest_code(rows, self.weight.detach(), self.chunk_rows)

    # --- first training batch -----------------------------------------------------------------
    @torch.no_grad()
    def initialize(self, rows: torch.Tensor, kmeans_iters: int | None) -> None:
        """Start the codebook on the first training batch `rows` `[N, D]` (fp32, detached):

        - codes: k-means centres of the rows after `kmeans_iters` Lloyd iterations (rank 0's,
          broadcast), or the initial table when `kmeans_iters` is None;
        - EMA statistics: N from the batch's nearest-code counts over all processes (at least 1
          each), the scale every later EMA step works at, and M = N e;
        - usage: every code at the global batch's average count, so none counts as dead before it
          had a chance.
        Every process ends with the same codebook and statistics."""
        if kmeans_iters is not None:
            self.weight.data.copy_(self.project(shared_kmeans_codebook(rows, self.size, kmeans_iters)))
        if self.has_ema:
            counts = code_histogram(nearest_code(rows, self.weight.data, self.chunk_rows), self.size)
            cluster_size = all_reduce_sum_(counts).clamp_min(1.0)
            self.ema_cluster_size.copy_(cluster_size)
            self.ema_embed_sum.copy_(self.weight.data * cluster_size[:, None])
        if self.tracks_usage:
            total_rows = float(all_reduce_sum_(rows.new_tensor(float(rows.shape[0]))))
            self.usage.fill_(total_rows / self.size)
        self.initialized.fill_(True)

    # --- updates ------------------------------------------------------------------------------
    @torch.no_grad()
    def ema_step(self, counts: torch.Tensor, sums: torch.Tensor) -> None:
        """Fold this step's assignment totals (`counts` `[K]`, `sums` `[K, D]`, hard or soft, already
        summed over processes) into the EMA statistics and recompute the codes from them."""
        decay = self.ema_decay
        self.ema_cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
        self.ema_embed_sum.mul_(decay).add_(sums, alpha=1 - decay)
        codes = laplace_smoothed_codebook(self.ema_cluster_size, self.ema_embed_sum, self.ema_epsilon)
        self.weight.data.copy_(self.project(codes))

    @torch.no_grad()
    def learn_from_batch(self, ids: torch.Tensor, rows: torch.Tensor, counts: torch.Tensor, dead_code_threshold: float) -> torch.Tensor:
        """One training batch's update of a codebook learnt as VQ-VAE's: its code counts `counts` `[K]`
        (this process's, of the ids `ids` `[N]` chosen for the rows `rows` `[N, D]`) summed over
        processes; with EMA statistics, an `ema_step` with the summed counts and row sums; then
        `restart_dead_codes`. Returns how many codes moved."""
        global_counts = all_reduce_sum_(counts.clone())
        if self.has_ema:
            sums = torch.zeros_like(self.ema_embed_sum).index_add_(0, ids, rows)
            self.ema_step(global_counts, all_reduce_sum_(sums))
        return self.restart_dead_codes(rows, global_counts, dead_code_threshold)

    @torch.no_grad()
    def move_codes(self, which: torch.Tensor, vectors: torch.Tensor, count: float | None = None) -> None:
        """Put the codes selected by the mask `which` at `vectors`; with EMA statistics, give them
        N_k = `count` and M_k = `count` * e_k, which keep them there (zeroed statistics would pull a
        moved code back to the origin at the next EMA step)."""
        vectors = vectors.to(self.weight.dtype)
        self.weight.data[which] = vectors
        if self.has_ema:
            self.ema_cluster_size[which] = count
            self.ema_embed_sum[which] = vectors * count

    @torch.no_grad()
    def restart_dead_codes(self, rows: torch.Tensor, global_counts: torch.Tensor, threshold: float) -> torch.Tensor:
        """Fold this batch's code counts `[K]` (summed over processes) into `usage`, then
        `restart_below(usage, ...)`: codes used less than `threshold` times per batch move onto rows
        of the batch. Returns how many moved."""
        self.usage.mul_(USAGE_DECAY).add_(global_counts, alpha=1 - USAGE_DECAY)
        return self.restart_below(self.usage, threshold, rows, global_counts.sum())

    @torch.no_grad()
    def restart_below(self, use: torch.Tensor, threshold: float, rows: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
        """Move the codes whose `use` `[K]` (a per-code measure of use, the same on every process:
        `usage`, or the EMA cluster sizes N) is below `threshold` onto random rows of the batch (rank
        0's draw, broadcast). Their `use` and EMA statistics get the weight max(`total` / K,
        `threshold`), which keeps them where they were put and gives them time to be chosen (0 or a
        negative threshold restarts nothing). Returns how many moved."""
        if threshold <= 0:
            return rows.new_zeros(())
        dead = use < threshold
        if not bool(dead.any()):
            return rows.new_zeros(())
        fresh_count = max(float(total) / self.size, threshold)
        use[dead] = fresh_count
        num_dead = int(dead.sum())
        self.move_codes(dead, replacement_vectors(rows, num_dead), fresh_count)
        return torch.tensor(float(num_dead), device=rows.device)

    def extra_repr(self) -> str:
        extras = [name for name, on in (("ema", self.has_ema), ("usage", self.tracks_usage), ("unit_norm", self.unit_norm)) if on]
        return f"size={self.size}, dim={self.dim}" + "".join(f", {name}" for name in extras)
