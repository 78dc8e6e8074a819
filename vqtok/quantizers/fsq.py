"""Finite scalar quantization (Mentzer et al. 2024): each latent dimension is bounded and rounded to
one of a few levels; the codes are the grid of all level combinations, so there is no table and no
codebook loss."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ..options import Option, document_options
from .base import CodeSpace, Quantizer, QuantizerOutput, fixed_size
from .functional import MAX_COUNTED_CODES, code_histogram, straight_through, usage_stats


@document_options
class FSQuantizer(Quantizer):
    """Finite scalar quantizer: dimension i of the latent z (D = len(levels)) takes one of L_i levels.

    Training forward, on rows z (fp32), per dimension with L levels and h = floor(L / 2):
      bounded  b = a tanh(z + s) - o,  a = (1 + 1e-3)(L - 1)/2,  o = 1/2 for even L (else 0),  s = atanh(o / a),
               so that round(b) takes exactly the L integer values in [-h, L - 1 - h] (the 1e-3 keeps s
               finite at L = 2);
      code     q = round(b) / h  (in [-1, 1]), passed to the decoder as b/h + sg(q - b/h) (straight through);
      id       sum_i (round(b_i) + h_i) * prod_{j<i} L_j  (mixed radix, dimension 0 least significant).
    K = prod(levels) follows from the levels; ids and codes map to each other exactly both ways
    (`code_vectors`). The maths runs in fp32 whatever the autocast, so no code is lost to a bf16
    rounding of the level indices. FSQ has no loss terms of its own.
    """

    options = {
        "levels": Option(list, items=Option(int, low=2))([8, 5, 5, 5], (
            "L_i, the number of levels of each latent dimension (each an int >= 2; their count is the latent "
            "dimension D, and K = their product). The paper's choices: [8, 5, 5, 5] for K = 1000, [8, 8, 8, 6, 5] "
            "for 15360, [8, 8, 8, 5, 5, 5] for 64000."
        )),
    }

    @classmethod
    def code_space(
        cls, options: Mapping[str, Any], codebook_size: int | None, dim: int | None, where: str
    ) -> CodeSpace:
        levels = options["levels"]
        count, product = len(levels), math.prod(levels)
        if product > MAX_COUNTED_CODES:
            raise ValueError(f"{where} `levels` {levels} give K = {product:,} codes; at most {MAX_COUNTED_CODES:,} (2^24) "
                             "are supported: every training step counts code use in a [K] histogram")
        return CodeSpace(
            fixed_size("`codebook_size`", codebook_size, product, f"the {product} codes of the FSQ levels {levels}", where),
            fixed_size("the latent dimension", dim, count, f"the number of FSQ levels ({count}: {levels})", where),
        )

    # FSQ has no state: its constants are made from `levels` where used, on the latents' device.
    def _level_counts(self, device: torch.device) -> torch.Tensor:
        return torch.tensor(self.levels, dtype=torch.long, device=device)

    def _radix(self, device: torch.device) -> torch.Tensor:
        """prod_{j<i} L_j of each dimension i: the place value of its level in an id."""
        return torch.cumprod(torch.tensor([1, *self.levels[:-1]], dtype=torch.long, device=device), dim=0)

    def _half_widths(self, device: torch.device) -> torch.Tensor:
        return (self._level_counts(device) // 2).float()

    def bound(self, rows: torch.Tensor) -> torch.Tensor:
        """b: each dimension squashed so that rounding it gives one of its L integer levels."""
        counts = self._level_counts(rows.device)
        half_span = (1 + 1e-3) * (counts.float() - 1) / 2
        offset = (counts % 2 == 0).float() * 0.5
        shift = torch.atanh(offset / half_span)
        return half_span * torch.tanh(rows + shift) - offset

    def _level_indices(self, rows: torch.Tensor) -> torch.Tensor:
        """The level of each dimension, in [0, L_i), as long."""
        return (torch.round(self.bound(rows)) + self._half_widths(rows.device)).long()

    def _ids(self, level_indices: torch.Tensor) -> torch.Tensor:
        return (level_indices * self._radix(level_indices.device)).sum(dim=1)

    def code_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The codes `[n, D]` of ids `[n]` (all K when None): each dimension's level, scaled into [-1, 1]."""
        ids = torch.arange(self.codebook_size) if ids is None else ids
        level_indices = (ids[:, None] // self._radix(ids.device)) % self._level_counts(ids.device)
        half_widths = self._half_widths(ids.device)
        return (level_indices.float() - half_widths) / half_widths

    def _select_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return self._ids(self._level_indices(rows))

    def _forward_rows(self, rows: torch.Tensor) -> QuantizerOutput:
        scaled = self.bound(rows) / self._half_widths(rows.device)
        ids = self._select_rows(rows)
        codes = self.code_vectors(ids)
        quantized = straight_through(scaled, codes)
        return QuantizerOutput(quantized, ids, {}, usage_stats(code_histogram(ids, self.codebook_size)))

    def extra_repr(self) -> str:
        return f"levels={self.levels}, codebook_size={self.codebook_size}"
