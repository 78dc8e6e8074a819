"""NSVQ (Vali & Baeckstroem 2022): vector quantization trained by noise substitution.

In training the quantization error is replaced by a random vector of the same length, so gradients
reach the encoder without a straight-through estimator and reach the codebook through the length
of the error. Rarely used codes are periodically moved onto copies of used ones."""

from __future__ import annotations

import torch
from torch import nn

from ..parallel.collectives import all_reduce_sum_, broadcast_
from ..options import NON_NEGATIVE_INT, POSITIVE, UNIT_INTERVAL
from .base import Quantizer, QuantizerOutput
from .functional import CHUNK_OPTIONS, code_histogram, nearest_code, uniform_codebook, usage_stats
from .kmeans import KMEANS_OPTIONS, shared_kmeans_codebook


class NSVQuantizer(Quantizer):
    """Noise-substitution vector quantizer.

    Training forward, on rows x (fp32):
      k = argmin_k ||x - c_k||^2,  q = c_k,  v ~ N(0, I_D),
      decoder input x~ = x + (||x - q|| / (||v|| + 1e-12)) * v.
    There is no VQ loss term: the codebook gets its gradient from the downstream loss through
    ||x - q||. In eval mode (and in `select`/`embed`) the decoder gets the nearest code itself.

    Codebook replacement (train mode): `code_batch_counts[k]` counts the batches in which code k was
    used (over all processes). Every `replace_every` batches, codes used in fewer than
    `replace_fraction * replace_every` of them are overwritten by randomly chosen kept codes (those
    used at least that often) plus a Gaussian jitter, and the counters restart. The jitter's
    standard deviation is `replacement_jitter` times the spread of the kept codes (the RMS over
    coordinates of their deviation from their mean, floored at 1e-4 of their RMS value): far above
    fp32 resolution, so a copy never ties with its source and takes part of its vectors at once, yet
    small beside the distances between codes. Replacement stops after `stop_replacing_after`
    batches (0: never). The replacement is drawn on rank 0 and broadcast, so every process keeps
    the same codebook.

    Args:
        codebook_size: number of codes K.
        dim: vector dimension D.
        replace_every: batches between codebook replacements (0 disables replacement). The default,
            10, is tuned for short runs: the encoder's output moves fast early in training and strands
            codes within a few dozen steps (the reference replaces every 1000 batches).
        replace_fraction: codes used in fewer than this fraction of those batches are replaced. The
            default, 0.1, with `replace_every=10` replaces the codes unused for 10 batches in a row
            (the reference uses 0.01).
        stop_replacing_after: no replacement after this many training batches (0: never stop).
        replacement_jitter: jitter scale relative to the spread of the kept codes.
        kmeans_init: initialise the codebook with k-means on the first training batch.
        kmeans_iters: Lloyd iterations for that.
        chunk_rows: rows per chunk of the nearest-code search (default: about 1M distances).
    """

    options = {
        "replace_every": NON_NEGATIVE_INT,
        "replace_fraction": UNIT_INTERVAL,
        "stop_replacing_after": NON_NEGATIVE_INT,
        "replacement_jitter": POSITIVE,
        **KMEANS_OPTIONS,
        **CHUNK_OPTIONS,
    }

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        replace_every: int = 10,
        replace_fraction: float = 0.1,
        stop_replacing_after: int = 0,
        replacement_jitter: float = 0.01,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        chunk_rows: int | None = None,
    ):
        super().__init__(codebook_size, dim)
        self._set_options(
            replace_every=replace_every, replace_fraction=replace_fraction, stop_replacing_after=stop_replacing_after,
            replacement_jitter=replacement_jitter, kmeans_init=kmeans_init, kmeans_iters=kmeans_iters,
            chunk_rows=chunk_rows,
        )
        self.embedding = nn.Parameter(uniform_codebook(codebook_size, dim))
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("code_batch_counts", torch.zeros(codebook_size))
        self.register_buffer("num_batches", torch.zeros((), dtype=torch.long))

    @property
    def codebook(self) -> torch.Tensor:
        return self.embedding

    def _select_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return nearest_code(rows, self.embedding, self.chunk_rows)

    def _forward_rows(self, rows: torch.Tensor) -> QuantizerOutput:
        stats = {}
        if self.training:
            if self.kmeans_init and not bool(self.initialized):
                self._initialize(rows.detach())
            stats["replaced_codes"] = self._maybe_replace_codes()

        codebook = self.embedding.float()
        indices = nearest_code(rows, codebook.detach(), self.chunk_rows)
        codes = codebook[indices]
        stats.update(usage_stats(code_histogram(indices, self.codebook_size)))
        if not self.training:
            return QuantizerOutput(codes, indices, {}, stats)

        noise = torch.randn_like(rows)
        error_norm = torch.linalg.vector_norm(rows - codes, dim=1, keepdim=True)
        noise_norm = torch.linalg.vector_norm(noise, dim=1, keepdim=True)
        noisy = rows + (error_norm / (noise_norm + 1e-12)) * noise
        self._count_usage(indices)
        return QuantizerOutput(noisy, indices, {}, stats)

    # --- training-time codebook maintenance ----------------------------------------------------
    @torch.no_grad()
    def _initialize(self, rows: torch.Tensor) -> None:
        """k-means on the first training batch; rank 0's centres are broadcast."""
        self.embedding.data.copy_(shared_kmeans_codebook(rows, self.codebook_size, self.kmeans_iters))
        self.initialized.fill_(True)

    @torch.no_grad()
    def _count_usage(self, indices: torch.Tensor) -> None:
        counts = all_reduce_sum_(code_histogram(indices, self.codebook_size))
        self.code_batch_counts.add_((counts > 0).float())
        self.num_batches.add_(1)

    def _replacement_due(self) -> bool:
        batches = int(self.num_batches)
        if self.replace_every == 0 or batches == 0 or batches % self.replace_every:
            return False
        return self.stop_replacing_after == 0 or batches <= self.stop_replacing_after

    @torch.no_grad()
    def _maybe_replace_codes(self) -> torch.Tensor:
        """At the start of the forward after every `replace_every`-th batch: move rarely used codes
        onto jittered copies of kept ones and restart the counters. Returns how many moved."""
        device = self.code_batch_counts.device
        if not self._replacement_due():
            return torch.zeros((), device=device)
        rare = self.code_batch_counts < self.replace_fraction * self.replace_every
        kept = (~rare).nonzero().flatten()
        num_rare = int(rare.sum())
        self.code_batch_counts.zero_()
        if num_rare == 0 or len(kept) == 0:
            return torch.zeros((), device=device)
        codebook = self.embedding.data
        kept_codes = codebook[kept].float()
        spread = (kept_codes - kept_codes.mean(dim=0)).pow(2).mean().sqrt()
        floor = 1e-4 * kept_codes.pow(2).mean().sqrt()
        scale = self.replacement_jitter * torch.maximum(spread, floor).clamp_min(1e-12)
        sources = kept[torch.randint(len(kept), (num_rare,), device="cpu").to(device)]
        replacements = codebook[sources].float() + scale * torch.randn(num_rare, self.dim, device=device)
        codebook[rare] = broadcast_(replacements).to(codebook.dtype)
        return torch.tensor(float(num_rare), device=device)
