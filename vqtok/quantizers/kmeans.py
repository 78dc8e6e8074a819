"""k-means (Lloyd's algorithm) for initialising a codebook from a batch of latent vectors."""

from __future__ import annotations

import torch

from ..parallel.collectives import broadcast_
from ..options import FLAG, NON_NEGATIVE_INT
from .functional import code_histogram, nearest_code

# Options of a quantizer that initialises its codes by k-means on the first training batch.
KMEANS_OPTIONS = {
    "kmeans_init": FLAG(True, (
        "Initialise the codes with k-means on the first training batch (rank 0's centres, broadcast to every "
        "process); a resumed run never repeats it."
    ), training_only=True),
    "kmeans_iters": NON_NEGATIVE_INT(10, "Lloyd iterations of that k-means.", training_only=True),
}


def sample_rows(rows: torch.Tensor, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """`count` rows drawn from `rows`: without replacement when there are enough, else with."""
    n = rows.shape[0]
    if n >= count:
        picks = torch.randperm(n, generator=generator, device="cpu")[:count]
    else:
        picks = torch.randint(n, (count,), generator=generator, device="cpu")
    return rows[picks.to(rows.device)]


@torch.no_grad()
def kmeans(
    rows: torch.Tensor,
    num_clusters: int,
    iters: int = 10,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster `rows` `[N, D]` into `num_clusters` centres.

    Centres start at randomly chosen rows. After each assignment step, a cluster left empty is
    re-seeded on a random row, so every centre ends on the data. When N < K, rows are drawn with
    replacement and the duplicates are separated by a tiny jitter.

    Returns:
        `(centres [K, D], counts [K])` in fp32, counts from the last assignment.
    """
    rows = rows.float()
    centres = sample_rows(rows, num_clusters, generator).clone()
    if rows.shape[0] < num_clusters:
        scale = rows.std().clamp_min(1e-6) * 1e-3
        centres += scale * torch.randn(centres.shape, generator=generator).to(rows.device)
    counts = code_histogram(nearest_code(rows, centres), num_clusters)
    for _ in range(iters):
        assignment = nearest_code(rows, centres)
        counts = code_histogram(assignment, num_clusters)
        sums = torch.zeros_like(centres).index_add_(0, assignment, rows)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
        empty = int((~filled).sum())
        if empty:
            centres[~filled] = sample_rows(rows, empty, generator)
    return centres, counts


@torch.no_grad()
def shared_kmeans_codebook(rows: torch.Tensor, num_clusters: int, iters: int = 10) -> torch.Tensor:
    """k-means centres `[K, D]` for a codebook every process agrees on: each process clusters its
    own rows (keeping the RNG streams in step), and rank 0's centres are broadcast to all."""
    centres, _ = kmeans(rows, num_clusters, iters)
    return broadcast_(centres.contiguous())


@torch.no_grad()
def posterior_spread(rows: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """The spread s (a scalar) of `rows` around `centres` `[K, D]`: their mean squared distance to
    the nearest centre, floored at 1e-6 of their mean squared norm (for rows all but on the centres).
    exp(-||z - c_k||^2 / s) is then the Gaussian posterior around the centres that a logit-based
    quantizer starts from. Rank 0's value on every process."""
    rows = rows.float()
    distortion = (rows - centres[nearest_code(rows, centres)]).pow(2).sum(dim=1).mean()
    floor = (1e-6 * rows.pow(2).sum(dim=1).mean()).clamp_min(1e-12)
    return broadcast_(torch.maximum(distortion, floor).reshape(1)).squeeze(0)
