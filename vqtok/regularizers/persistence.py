"""Differentiable persistent homology of a point cloud (giotto-ph), and its signature.

The Vietoris–Rips persistence of a cloud `[N, D]` is computed by `gph.ripser_parallel` on the
detached distance matrix with `return_generators=True`, which names, for every finite bar, the
edge whose length created it and the edge whose length killed it. Those lengths are then taken
again, differentiably, from the points that span the edges (||x_i - x_j||, the entry Dist[i, j] of
the distance matrix), so a loss on the bars sends gradients to those points and nowhere else:

  H0 bar (born 0, dies at Dist[i, j]),   H1 bar (born at Dist[i, j], dies at Dist[k, l]).

Only the edges that bound a bar enter the autograd graph (not the whole `[N, N]` matrix), and an
edge's gradient is a unit vector, bounded even for nearly coincident points.

The signature HC-VQ constrains (`persistence_signature`):

  eps0 = mean H0 death (how far apart the clusters of the cloud are),
  beta1 = n1 - sum_i exp(-(l_i / width)^2 / 2)   (a soft count of H1 bars; l_i = persistence),

and, for diagnosis only, the persistent entropy of each dimension,
  E = -sum_i p_i log p_i,  p_i = l_i / sum_j l_j.

Everything here runs in fp32 with autocast off. Ripser's pairing of tied distances is
deterministic for a given input, so identical clouds give identical bars on every process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..quantizers.functional import entropy_from_counts

# Squared distances below this are treated as 0: the gradient of sqrt is unbounded there.
_MIN_SQUARED_DISTANCE = 1e-12


@dataclass
class PersistenceBars:
    """The finite bars of a cloud's Vietoris–Rips persistence in dimensions 0 and 1 (fp32,
    differentiable with respect to the cloud). H0 bars are all born at 0.

    Attributes:
        h0_deaths: `[n0]` death radii of the finite H0 bars.
        h1_births: `[n1]` birth radii of the H1 bars.
        h1_deaths: `[n1]` death radii of the H1 bars.
    """

    h0_deaths: torch.Tensor
    h1_births: torch.Tensor
    h1_deaths: torch.Tensor

    @property
    def h1_persistence(self) -> torch.Tensor:
        """`[n1]` lengths death - birth of the H1 bars."""
        return self.h1_deaths - self.h1_births


@dataclass
class PersistenceSignature:
    """What HC-VQ reads from a cloud's persistence (fp32 scalars, differentiable where noted).

    Attributes:
        epsilon0: mean H0 death (differentiable; 0 for a cloud of fewer than two distinct points).
        betti1: soft count of H1 bars (differentiable).
        h0_entropy / h1_entropy: persistent entropy of the H0 / H1 bars (nats; 0 without bars).
        num_h1_bars: the number of H1 bars (hard count).
    """

    epsilon0: torch.Tensor
    betti1: torch.Tensor
    h0_entropy: torch.Tensor
    h1_entropy: torch.Tensor
    num_h1_bars: int

    def as_floats(self, prefix: str = "") -> dict[str, float]:
        """The signature as plain floats, keys `<prefix>epsilon0`, `<prefix>betti1`, ..."""
        values = {
            "epsilon0": self.epsilon0,
            "betti1": self.betti1,
            "h0_persistent_entropy": self.h0_entropy,
            "h1_persistent_entropy": self.h1_entropy,
        }
        return {f"{prefix}{name}": float(value) for name, value in values.items()}


def pairwise_distances(points: torch.Tensor) -> torch.Tensor:
    """Euclidean distances `[N, N]` (float64, not differentiable) for ripser's filtration: one
    matmul in float64 (no `[N, N, D]` tensor), exactly zero on the diagonal."""
    if points.dim() != 2:
        raise ValueError(f"points must be a [N, D] matrix, got shape {tuple(points.shape)}")
    points = points.detach().double()
    norms = points.pow(2).sum(dim=1)
    squared = torch.addmm(norms[:, None] + norms[None, :], points, points.t(), alpha=-2.0)
    return squared.clamp_min(0).fill_diagonal_(0).sqrt()


def edge_lengths(points: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """||x_first - x_second|| for index vectors `first`, `second` (fp32, differentiable, with a zero
    gradient where two points coincide instead of sqrt's infinite one)."""
    with torch.autocast(device_type=points.device.type, enabled=False):
        difference = points.float()[first] - points.float()[second]
        squared = difference.pow(2).sum(dim=1)
        present = squared > _MIN_SQUARED_DISTANCE
        return squared.clamp_min(_MIN_SQUARED_DISTANCE).sqrt() * present


def persistence_bars(points: torch.Tensor) -> PersistenceBars:
    """The finite H0 and H1 bars of the Vietoris–Rips filtration of `points` `[N, D]`. Ripser pairs
    them on a detached float64 distance matrix; their radii are then recomputed from the points
    themselves (`edge_lengths` of the creating and killing edges), which is what carries gradients."""
    if isinstance(points, torch.Tensor) and points.numel() and not torch.isfinite(points).all():
        raise ValueError("points must be finite: the cloud holds NaN or inf")
    distances = pairwise_distances(points)
    if points.shape[0] < 2:
        empty = points.new_zeros(0, dtype=torch.float32)
        return PersistenceBars(empty, empty, empty)
    import gph  # giotto-ph, imported when a persistence is first computed (importing vqtok does not)

    result = gph.ripser_parallel(distances.cpu().numpy(), metric="precomputed", maxdim=1, return_generators=True)
    h0_pairs, h1_pairs = result["gens"][0], result["gens"][1][0]
    h0 = torch.as_tensor(np.asarray(h0_pairs, dtype=np.int64).reshape(-1, 3), device=points.device)
    h1 = torch.as_tensor(np.asarray(h1_pairs, dtype=np.int64).reshape(-1, 4), device=points.device)
    return PersistenceBars(
        h0_deaths=edge_lengths(points, h0[:, 1], h0[:, 2]),
        h1_births=edge_lengths(points, h1[:, 0], h1[:, 1]),
        h1_deaths=edge_lengths(points, h1[:, 2], h1[:, 3]),
    )


def soft_count(lengths: torch.Tensor, width: float) -> torch.Tensor:
    """n - sum_i exp(-(l_i / width)^2 / 2): about the number of lengths much larger than `width`."""
    return lengths.new_tensor(float(lengths.numel())) - torch.exp(-0.5 * (lengths / width).pow(2)).sum()


def persistent_entropy(lengths: torch.Tensor) -> torch.Tensor:
    """-sum p_i log p_i with p_i = l_i / sum l (nats); 0 when there is no positive length."""
    return entropy_from_counts(lengths.clamp_min(0)).clamp_min(0)


def persistence_signature(bars: PersistenceBars, width: float = 1e-3) -> PersistenceSignature:
    """eps0, the soft beta1 (Gaussian `width`) and the persistent entropies of `bars`."""
    deaths, lengths = bars.h0_deaths, bars.h1_persistence
    epsilon0 = deaths.mean() if deaths.numel() else deaths.new_zeros(())
    return PersistenceSignature(
        epsilon0=epsilon0,
        betti1=soft_count(lengths, width),
        h0_entropy=persistent_entropy(deaths.detach()),
        h1_entropy=persistent_entropy(lengths.detach()),
        num_h1_bars=int(lengths.numel()),
    )


def save_persistence_diagram(bars: PersistenceBars, path: str | os.PathLike, title: str | None = None) -> str:
    """Draw the persistence diagram (H0 and H1 bars as (birth, death) points, with the diagonal)
    into a PNG at `path`; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h0 = bars.h0_deaths.detach().cpu().numpy()
    births, deaths = bars.h1_births.detach().cpu().numpy(), bars.h1_deaths.detach().cpu().numpy()
    top = max([1e-6, *h0.tolist(), *deaths.tolist()]) * 1.05
    figure, axes = plt.subplots(figsize=(4, 4), dpi=100)
    axes.plot([0, top], [0, top], color="grey", linewidth=0.8)
    axes.scatter(np.zeros_like(h0), h0, s=8, label=f"H0 ({len(h0)})")
    axes.scatter(births, deaths, s=8, label=f"H1 ({len(births)})")
    axes.set(xlim=(-0.02 * top, top), ylim=(0, top), xlabel="birth", ylabel="death", title=title or "persistence diagram")
    axes.legend(loc="lower right")
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return str(path)
