"""The Fréchet distance between two sets of image features, each summarised by a Gaussian (the mean
and covariance of its features): FID when the features are Inception's (Heusel et al. 2017), rFID
when one set is a tokenizer's reconstructions of the other.

    d^2 = |mu_1 - mu_2|^2 + tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))

The statistics are accumulated batch by batch (`FeatureStatistics`: a count, a sum and a sum of
outer products in float64), so memory stays bounded however many images are evaluated.
"""

from __future__ import annotations

import torch
from torch import nn


class FeatureStatistics:
    """Running mean and covariance of feature vectors `[N, D]`, accumulated in float64 on the CPU."""

    def __init__(self, dim: int):
        self.count = 0
        self.total = torch.zeros(dim, dtype=torch.float64)
        self.outer = torch.zeros(dim, dim, dtype=torch.float64)

    def update(self, features: torch.Tensor) -> None:
        """Add a batch of feature vectors `[N, D]` (non-finite values are refused)."""
        if features.ndim != 2 or features.shape[1] != self.total.shape[0]:
            raise ValueError(f"features must be [N, {self.total.shape[0]}], got {tuple(features.shape)}")
        features = features.detach().to("cpu", torch.float64)
        if not torch.isfinite(features).all():
            raise ValueError("features hold NaN or inf values")
        self.count += features.shape[0]
        self.total += features.sum(dim=0)
        self.outer += features.T @ features

    def mean_and_covariance(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and the unbiased covariance (needs at least two vectors)."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.count}")
        mean = self.total / self.count
        covariance = (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1)
        return mean, covariance


def frechet_distance(mean_1: torch.Tensor, covariance_1: torch.Tensor, mean_2: torch.Tensor,
                     covariance_2: torch.Tensor) -> float:
    """The squared Fréchet distance between N(mean_1, covariance_1) and N(mean_2, covariance_2).

    tr((S_1 S_2)^(1/2)) is the sum of the square roots of the eigenvalues of S_1 S_2, computed as
    those of the symmetric A S_2 A with A = S_1^(1/2) (all real and non-negative up to rounding,
    which is clipped), in float64."""
    dim = mean_1.shape[-1] if mean_1.ndim == 1 else None
    shapes = [tuple(t.shape) for t in (mean_1, covariance_1, mean_2, covariance_2)]
    if dim is None or shapes != [(dim,), (dim, dim), (dim,), (dim, dim)]:
        raise ValueError(f"the Fréchet distance compares two Gaussians of one dimension D: means [D] and covariances "
                         f"[D, D], got shapes {shapes}")
    mean_1, mean_2 = mean_1.double(), mean_2.double()
    covariance_1, covariance_2 = covariance_1.double(), covariance_2.double()
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance_1)
    root_1 = (eigenvectors * eigenvalues.clamp_min(0).sqrt()) @ eigenvectors.T
    middle = root_1 @ covariance_2 @ root_1
    trace_of_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    distance = (mean_1 - mean_2).pow(2).sum() + covariance_1.trace() + covariance_2.trace() - 2 * trace_of_root
    return float(distance.clamp_min(0))


def frechet_distance_of(first: FeatureStatistics, second: FeatureStatistics) -> float:
    """The Fréchet distance between the Gaussians of two accumulated feature sets."""
    return frechet_distance(*first.mean_and_covariance(), *second.mean_and_covariance())


class RandomConvFeatures(nn.Module):
    """A fixed, seeded, randomly initialised conv net: images in [-1, 1] -> `[B, 256]` features
    (three conv + ReLU stages, the first two of stride 2, then the spatial mean and standard deviation of each
    channel). Its Fréchet distance compares sharpness and texture statistics of two image sets on
    machines without downloaded weights; it is no FID and is only comparable with itself."""

    def __init__(self, in_channels: int = 3, seed: int = 0):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = nn.Sequential(
                nn.Conv2d(in_channels, 32, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(64, 128, 3, stride=1, padding=1), nn.ReLU(),
            )
        self.requires_grad_(False)
        self.eval()

    @property
    def dim(self) -> int:
        return 256

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hidden = self.net(images.float())
        return torch.cat([hidden.mean(dim=(2, 3)), hidden.std(dim=(2, 3))], dim=1)
