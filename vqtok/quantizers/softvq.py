"""Soft VQ by expectation maximisation (Roy et al. 2018; the VIB view of VQ auto-encoders).

Each latent vector is assigned to codes by samples from the posterior p(k|z) = softmax(-||z - e_k||^2);
the codebook follows the soft assignments by exponential moving averages (a soft M-step)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..options import POSITIVE, POSITIVE_INT, document_options
from ..parallel.collectives import all_reduce_sum_
from .base import Quantizer, QuantizerOutput
from .codebook import DEAD_CODE_OPTIONS, EMA_OPTIONS, Codebook
from .functional import CHUNK_OPTIONS, COMMITMENT_COST, code_histogram, perplexity_from_counts, sample_codes, usage_stats
from .kmeans import KMEANS_OPTIONS


@document_options
class SoftVQQuantizer(Quantizer):
    """EM soft vector quantizer.

    Training forward, on rows z (fp32):
      p(k|z) = softmax_k(-||z - e_k||^2 / T);  draw S codes k^(s) ~ p(.|z);
      w_k = (1/S) sum_s [k^(s) = k];  z_bar = sum_k w_k e_k;  decoder input z + sg(z_bar - z);
      commitment_loss = beta * mean((z - sg z_bar)^2).
    The codebook has no gradient; in train mode each forward makes a soft M-step
      N_k <- g N_k + (1-g) sum_n w_nk,  M_k <- g M_k + (1-g) sum_n w_nk z_n,
      e_k = M_k / ((N_k + eps) / (sum N + K eps) * sum N),
    with the sums taken over all processes first. The posterior is sampled one chunk of rows at a
    time, and the weights are kept as the S sampled ids per row, so memory stays bounded at large
    N x K. The reported ids are the posterior's mode (the nearest code), which is also what
    `select` returns; `embed` gives e_k.

    Dead-code restart (train mode, after the M-step): codes whose EMA soft count N_k is below
    `dead_code_threshold` (assignments per batch) move onto random rows of the batch, with N_k and
    M_k reset so that the next M-step keeps them there.
    """

    options = {
        "num_samples": POSITIVE_INT(10, "S, posterior samples per latent vector.", training_only=True),
        "commitment_cost": COMMITMENT_COST.documented(
            "beta, the weight of the commitment loss `mean((z_e - sg z_bar)^2)`."
        ),
        "temperature": POSITIVE(0.03, (
            "T, dividing the negative squared distances before the softmax; 1 is the method's posterior, larger "
            "is softer."
        ), note=(
            "How soft a posterior T gives depends on the latents' scale: on the quickstart's latents (squared "
            "distances between neighbouring codes about 0.1) T = 1 spreads each vector over nearly all codes, which "
            "the soft M-step then pulls together; the default, 0.03, keeps a few codes in each posterior."
        ), training_only=True),
        "dead_code_threshold": DEAD_CODE_OPTIONS["dead_code_threshold"].changed(1.0, (
            "Soft VQ reads a code's use from its EMA soft count N_k (the reference: 0, no restarts)."
        )),
        **EMA_OPTIONS,
        "ema_decay": EMA_OPTIONS["ema_decay"].changed(0.95, (
            "The default, 0.95, lets the codes follow the encoder's fast-moving output in a short run, and lets the "
            "counts of codes that lost their vectors fall below the restart threshold within a few dozen steps (the "
            "reference: 0.999)."
        )),
        **KMEANS_OPTIONS,
        **CHUNK_OPTIONS,
    }

    def __init__(self, codebook_size: int | None = None, dim: int | None = None, **options):
        super().__init__(codebook_size, dim, **options)
        self.codebook = Codebook(
            self.codebook_size, self.dim, trainable=False, ema=True, ema_decay=self.ema_decay,
            ema_epsilon=self.ema_epsilon, chunk_rows=self.chunk_rows,
        )

    def needs_initialization(self) -> bool:
        return not bool(self.codebook.initialized)

    def initialize(self, rows: torch.Tensor) -> None:
        self.codebook.initialize(rows, self.kmeans_iters if self.kmeans_init else None)

    def _select_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return self.codebook.nearest(rows)

    def sample_posterior(self, rows: torch.Tensor) -> torch.Tensor:
        """`[N, S]` code ids drawn from p(k|z) = softmax_k(-||z - e_k||^2 / T) for rows `[N, D]`."""
        return sample_codes(rows, self.codebook.weight.detach(), self.num_samples, self.temperature, self.chunk_rows)

    def _forward_rows(self, rows: torch.Tensor) -> QuantizerOutput:
        table = self.codebook.weight
        indices = self.codebook.nearest(rows)
        stats = usage_stats(code_histogram(indices, self.codebook_size))
        if not self.training:
            codes = table[indices].float()
            loss = self.commitment_cost * F.mse_loss(rows, codes)
            return QuantizerOutput(rows + (codes - rows).detach(), indices, {"commitment_loss": loss}, stats)

        samples = self.sample_posterior(rows.detach())
        mixture = table.detach().float()[samples].mean(dim=1)
        losses = {"commitment_loss": self.commitment_cost * F.mse_loss(rows, mixture)}
        quantized = rows + (mixture - rows).detach()
        counts = self._m_step(rows.detach(), samples)
        stats["sample_perplexity"] = perplexity_from_counts(counts)
        stats["restarted_codes"] = self._restart_dead_codes(rows.detach())
        return QuantizerOutput(quantized, indices, losses, stats)

    @torch.no_grad()
    def _m_step(self, rows: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
        """Soft EMA M-step for rows `[N, D]` with sampled ids `[N, S]`, the weights w_nk being the
        share of row n's samples that drew k; totals are summed over processes. Returns this
        process's soft counts sum_n w_nk."""
        num_samples = samples.shape[1]
        counts = code_histogram(samples, self.codebook_size) / num_samples
        sums = torch.zeros_like(self.codebook.ema_embed_sum)
        for column in samples.t():
            sums.index_add_(0, column, rows)
        self.codebook.ema_step(all_reduce_sum_(counts.clone()), all_reduce_sum_(sums.div_(num_samples)))
        return counts

    @torch.no_grad()
    def _restart_dead_codes(self, rows: torch.Tensor) -> torch.Tensor:
        """Move codes whose EMA soft count N_k fell below `dead_code_threshold` onto random rows of
        the batch, with statistics N_k = max(sum N / K, threshold), M_k = N_k e_k that keep them
        there. N is the same on every process (its updates are summed over processes), so all take
        the same branch. Returns how many moved."""
        cluster_size = self.codebook.ema_cluster_size
        return self.codebook.restart_below(cluster_size, self.dead_code_threshold, rows, cluster_size.sum())
