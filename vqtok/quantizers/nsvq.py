"""NSVQ (Vali & Baeckstroem 2022): vector quantization trained by noise substitution.

In training the quantization error is replaced by a random vector of the same length, so gradients
reach the encoder without a straight-through estimator and reach the codebook through the length
of the error. Rarely used codes are periodically moved onto copies of used ones."""

from __future__ import annotations

import torch

from ..options import NON_NEGATIVE_INT, POSITIVE, UNIT_INTERVAL, document_options
from ..parallel.collectives import all_reduce_sum_, broadcast_
from .base import ParameterGroup, Quantizer, QuantizerOutput
from .codebook import Codebook
from .functional import CHUNK_OPTIONS, code_histogram, usage_stats
from .kmeans import KMEANS_OPTIONS


@document_options
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

    """

    options = {
        "replace_every": NON_NEGATIVE_INT(10, "Training batches between codebook replacements (0 disables them).",
                                          note="Short by default, because early in training the encoder's output "
                                               "moves fast and strands codes within a few dozen steps (the "
                                               "reference: 1000).", training_only=True),
        "replace_fraction": UNIT_INTERVAL(
            0.1, "Codes used in fewer than this fraction of the last `replace_every` batches are replaced.",
            note="With the defaults, the codes unused for 10 batches in a row (the reference: 0.01).", training_only=True
        ),
        "stop_replacing_after": NON_NEGATIVE_INT(0, (
            "No replacement after this many training batches (0: never stop); set it near the end of training so "
            "the last steps tune a fixed set of codes."
        ), training_only=True),
        "replacement_jitter": POSITIVE(0.01, (
            "Standard deviation of the jitter added to a replacement, relative to the spread of the kept codes (per "
            "coordinate); large enough that a copy never ties with its source in fp32."
        ), training_only=True),
        "quantizer_lr_multiplier": POSITIVE(10.0, (
            "The codebook's learning rate relative to the training learning rate (the codebook gets no weight "
            "decay). The codebook's only gradient comes through the length of the quantization error along a "
            "random direction, so it is noisy and its mean pull towards the data is weak: at the training "
            "learning rate (the reference, 1) the codes follow the encoder too slowly for a short run."
        ), training_only=True),
        **KMEANS_OPTIONS,
        **CHUNK_OPTIONS,
    }

    def __init__(self, codebook_size: int | None = None, dim: int | None = None, **options):
        super().__init__(codebook_size, dim, **options)
        self.codebook = Codebook(self.codebook_size, self.dim, chunk_rows=self.chunk_rows)
        self.register_buffer("code_batch_counts", torch.zeros(self.codebook_size))
        self.register_buffer("num_batches", torch.zeros((), dtype=torch.long))

    def parameter_groups(self) -> list[ParameterGroup]:
        return [ParameterGroup([self.codebook.weight], self.quantizer_lr_multiplier)]

    def needs_initialization(self) -> bool:
        return self.kmeans_init and not bool(self.codebook.initialized)

    def initialize(self, rows: torch.Tensor) -> None:
        self.codebook.initialize(rows, self.kmeans_iters)

    def _select_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return self.codebook.nearest(rows)

    def _forward_rows(self, rows: torch.Tensor) -> QuantizerOutput:
        stats = {}
        if self.training:
            stats["replaced_codes"] = self._maybe_replace_codes()

        indices = self.codebook.nearest(rows)
        codes = self.codebook.weight.float()[indices]
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
        codebook = self.codebook.weight.data
        kept_codes = codebook[kept].float()
        spread = (kept_codes - kept_codes.mean(dim=0)).pow(2).mean().sqrt()
        floor = 1e-4 * kept_codes.pow(2).mean().sqrt()
        scale = self.replacement_jitter * torch.maximum(spread, floor).clamp_min(1e-12)
        sources = kept[torch.randint(len(kept), (num_rare,), device="cpu").to(device)]
        replacements = codebook[sources].float() + scale * torch.randn(num_rare, self.dim, device=device)
        self.codebook.move_codes(rare, broadcast_(replacements))
        return torch.tensor(float(num_rare), device=device)
