"""A test-only quantizer with implicit codes (no table: K = 2^D follows from D) and several codes per
position (R = `depth`), written as a new quantizer is: its options declared once, its code space,
and the row-wise steps."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from vqtok.options import Option, document_options
from vqtok.quantizers import CodeSpace, Quantizer, QuantizerOutput, code_histogram, usage_stats
from vqtok.quantizers.base import fixed_size
from vqtok.quantizers.functional import COMMITMENT_COST


@document_options
class ResidualSignQuantizer(Quantizer):
    """Level r = 0 .. R-1 quantizes what the levels before it left, z - sum_{s<r} q_s, to
    q_r = 2^-r sign(.) (sign(0) = +1); its code is the bit pattern sum_i 2^i [component i >= 0], so
    K = 2^D and there is no table. The decoder gets sum_r q_r (straight-through);
    commitment_loss = beta * mean((z - sg sum_r q_r)^2)."""

    options = {
        "depth": Option(int, low=1, high=4)(2, "R, the levels (codes per position)."),
        "commitment_cost": COMMITMENT_COST,
    }

    @classmethod
    def code_space(
        cls, options: Mapping[str, Any], codebook_size: int | None, dim: int | None, where: str
    ) -> CodeSpace:
        dim = 4 if dim is None else dim
        codebook_size = fixed_size("`codebook_size`", codebook_size, 2**dim, f"the {2**dim} codes of {dim} signs", where)
        return replace(CodeSpace(codebook_size, dim), codes_per_position=options["depth"])

    def bit_values(self, device) -> torch.Tensor:
        return 2 ** torch.arange(self.dim, device=device)

    def code_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Level 0's codes: the +-1 vectors of the ids' bit patterns."""
        ids = torch.arange(self.codebook_size) if ids is None else ids
        bits = (ids[:, None] // self.bit_values(ids.device)) % 2
        return bits.float() * 2 - 1

    def _embed_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return sum(2.0**-level * self.code_vectors(ids[:, level]) for level in range(self.codes_per_position))

    def _levels(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids `[N, R]`, sum of the levels' vectors `[N, D]`)."""
        residual, total, ids = rows, torch.zeros_like(rows), []
        for level in range(self.codes_per_position):
            positive = residual >= 0
            ids.append((positive.long() * self.bit_values(rows.device)).sum(dim=1))
            step = 2.0**-level * (positive.float() * 2 - 1)
            total, residual = total + step, residual - step
        return torch.stack(ids, dim=1), total

    def _select_rows(self, rows):
        return self._levels(rows)[0]

    def _forward_rows(self, rows):
        ids, total = self._levels(rows.detach())
        losses = {"commitment_loss": self.commitment_cost * F.mse_loss(rows, total)}
        return QuantizerOutput(rows + (total - rows).detach(), ids, losses, usage_stats(code_histogram(ids, self.codebook_size)))
