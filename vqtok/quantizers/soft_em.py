"""Soft VQ by expectation maximisation (Roy et al. 2018; the VIB view of VQ auto-encoders).

Each latent vector is assigned to codes by samples from the posterior p(k|z) = softmax(-||z - e_k||^2);
the codebook follows the soft assignments by exponential moving averages (a soft M-step)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import all_reduce_sum_
from .base import Quantizer, QuantizerOutput, ema_update_, laplace_smoothed_codebook, nearest_code
from .base import perplexity_from_counts, uniform_codebook, usage_stats
from .kmeans import global_cluster_sizes, shared_kmeans_codebook


def squared_distances(rows: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """All squared Euclidean distances `[N, K]` between rows `[N, D]` and codes `[K, D]`, in fp32.

    Uses the expanded form ||z||^2 - 2 z.e + ||e||^2 (one matmul; no `[N, K, D]` tensor), clamped at 0
    against rounding.
    """
    rows, codebook = rows.float(), codebook.float()
    norms = rows.pow(2).sum(dim=1, keepdim=True) + codebook.pow(2).sum(dim=1)
    return torch.addmm(norms, rows, codebook.t(), alpha=-2.0).clamp_min_(0.0)


class SoftEMQuantizer(Quantizer):
    """EM soft vector quantizer.

    Training forward, on rows z (fp32):
      p(k|z) = softmax_k(-||z - e_k||^2 / T);  draw S codes k^(s) ~ p(.|z);
      w_k = (1/S) sum_s [k^(s) = k];  z_bar = sum_k w_k e_k;  decoder input z + sg(z_bar - z);
      commitment_loss = beta * mean((z - sg z_bar)^2).
    The codebook has no gradient; in train mode each forward makes a soft M-step
      N_k <- g N_k + (1-g) sum_n w_nk,  M_k <- g M_k + (1-g) sum_n w_nk z_n,
      e_k = M_k / ((N_k + eps) / (sum N + K eps) * sum N),
    with the sums taken over all processes first. The reported ids are the posterior's mode (the
    nearest code), which is also what `select` returns; `embed` gives e_k.

    Args:
        codebook_size: number of codes K.
        dim: vector dimension D.
        num_samples: S, posterior samples per vector.
        commitment_cost: beta.
        ema_decay: g.
        ema_epsilon: eps, the Laplace smoothing.
        temperature: T; 1 is the method's posterior, larger values make it softer.
        kmeans_init: initialise the codebook (and the EMA statistics) with k-means on the first
            training batch; otherwise codes start uniform in [-1/K, 1/K].
        kmeans_iters: Lloyd iterations for that.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        num_samples: int = 10,
        commitment_cost: float = 0.25,
        ema_decay: float = 0.999,
        ema_epsilon: float = 1e-5,
        temperature: float = 1.0,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
    ):
        super().__init__(codebook_size, dim)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay}")
        if ema_epsilon <= 0:
            raise ValueError(f"ema_epsilon must be > 0, got {ema_epsilon}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.num_samples = int(num_samples)
        self.commitment_cost = float(commitment_cost)
        self.ema_decay = float(ema_decay)
        self.ema_epsilon = float(ema_epsilon)
        self.temperature = float(temperature)
        self.kmeans_init = kmeans_init
        self.kmeans_iters = kmeans_iters

        initial = uniform_codebook(codebook_size, dim)
        # A Parameter for the same checkpoint layout as VectorQuantizer; it takes no gradient.
        self.embedding = nn.Parameter(initial, requires_grad=False)
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("ema_cluster_size", torch.ones(codebook_size))
        self.register_buffer("ema_embed_sum", initial.clone())

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding

    def _select_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return nearest_code(rows, self.embedding)

    def posterior_logits(self, rows: torch.Tensor) -> torch.Tensor:
        """log p(k|z) up to a constant, `[N, K]` fp32: -||z - e_k||^2 / T."""
        return squared_distances(rows, self.embedding.detach()).div_(-self.temperature)

    def sample_weights(self, logits: torch.Tensor) -> torch.Tensor:
        """`[N, K]` weights: the mean of `num_samples` one-hot draws from softmax(logits) per row."""
        probs = torch.softmax(logits.float(), dim=1)
        samples = torch.multinomial(probs, self.num_samples, replacement=True)
        weights = torch.zeros_like(probs)
        return weights.scatter_add_(1, samples, weights.new_full(samples.shape, 1.0 / self.num_samples))

    def _forward_rows(self, rows: torch.Tensor) -> QuantizerOutput:
        if self.training and not bool(self.initialized):
            self._initialize(rows.detach())
        indices = nearest_code(rows, self.embedding)
        stats = usage_stats(indices, self.codebook_size)
        if not self.training:
            codes = self.embedding[indices].float()
            loss = self.commitment_cost * F.mse_loss(rows, codes)
            return QuantizerOutput(rows + (codes - rows).detach(), indices, {"commitment_loss": loss}, stats)

        weights = self.sample_weights(self.posterior_logits(rows.detach()))
        mixture = weights @ self.embedding.detach().float()
        losses = {"commitment_loss": self.commitment_cost * F.mse_loss(rows, mixture)}
        stats["sample_perplexity"] = perplexity_from_counts(weights.sum(dim=0))
        quantized = rows + (mixture - rows).detach()
        self._m_step(rows.detach(), weights)
        return QuantizerOutput(quantized, indices, losses, stats)

    @torch.no_grad()
    def _m_step(self, rows: torch.Tensor, weights: torch.Tensor) -> None:
        """Soft EMA M-step with weights `[N, K]` for rows `[N, D]`, summed over processes."""
        counts = all_reduce_sum_(weights.sum(dim=0))
        sums = all_reduce_sum_(weights.t() @ rows)
        ema_update_(self.ema_cluster_size, self.ema_embed_sum, counts, sums, self.ema_decay)
        codebook = laplace_smoothed_codebook(self.ema_cluster_size, self.ema_embed_sum, self.ema_epsilon)
        self.embedding.data.copy_(codebook)

    @torch.no_grad()
    def _initialize(self, rows: torch.Tensor) -> None:
        """Codes from k-means on the first training batch (rank 0's centres, broadcast) or the
        uniform initial codes; EMA statistics from that batch's nearest-code counts over all
        processes (at least 1 each), the scale at which every later M-step works."""
        if self.kmeans_init:
            self.embedding.data.copy_(shared_kmeans_codebook(rows, self.codebook_size, self.kmeans_iters))
        cluster_size = global_cluster_sizes(rows, self.embedding.data)
        self.ema_cluster_size.copy_(cluster_size)
        self.ema_embed_sum.copy_(self.embedding.data * cluster_size[:, None])
        self.initialized.fill_(True)
