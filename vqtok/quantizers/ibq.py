"""Index backpropagation quantization (Shi et al. 2025, IBQ): the code is chosen by the largest
logit z.e_k, and the gradient flows through the softmax over all codes, so every code is trained at
every step, not only the chosen ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..options import NON_NEGATIVE
from .base import Quantizer, QuantizerOutput
from .codebook import Codebook
from .functional import CHUNK_OPTIONS, code_histogram, default_chunk_rows, usage_stats
from .kmeans import KMEANS_OPTIONS


def largest_logit_code(rows: torch.Tensor, table: torch.Tensor, chunk_rows: int | None = None) -> torch.Tensor:
    """argmax_k z.e_k for each row `[N, D]` over the codes `[K, D]`, one chunk of rows at a time."""
    chunk_rows = chunk_rows or default_chunk_rows(table.shape[0])
    ids = torch.empty(rows.shape[0], dtype=torch.long, device=rows.device)
    for start in range(0, rows.shape[0], chunk_rows):
        ids[start : start + chunk_rows] = (rows[start : start + chunk_rows] @ table.t()).argmax(dim=1)
    return ids


class IndexBackpropagation(torch.autograd.Function):
    """Forward: the one-hot code table[argmax_k z.e_k] of each row. Backward: the gradient of
    (onehot - sg(s) + s) E, s = softmax(z E^T), with respect to z (through s) and to every code
    (through s, and through E where the one-hot picks it). Both passes work one chunk of rows at a time and keep no `[N, K]` tensor between
    them, so memory is bounded by one `[chunk_rows, K]` block (the backward recomputes the softmax)."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, table: torch.Tensor, chunk_rows: int):
        ids = largest_logit_code(rows, table, chunk_rows)
        ctx.save_for_backward(rows, table, ids)
        ctx.chunk_rows = chunk_rows
        ctx.mark_non_differentiable(ids)
        return table[ids], ids

    @staticmethod
    def backward(ctx, grad_codes: torch.Tensor, grad_ids: torch.Tensor | None):
        rows, table, ids = ctx.saved_tensors
        grad_rows = torch.empty_like(rows)
        grad_table = torch.zeros_like(table).index_add_(0, ids, grad_codes)  # the one-hot factor's value
        for start in range(0, rows.shape[0], ctx.chunk_rows):
            block, grad = rows[start : start + ctx.chunk_rows], grad_codes[start : start + ctx.chunk_rows]
            soft = torch.softmax(block @ table.t(), dim=1)                         # s = softmax(z E^T)
            grad_soft = grad @ table.t()                                             # dL/ds = g E^T
            grad_logits = soft * (grad_soft - (soft * grad_soft).sum(dim=1, keepdim=True))
            grad_rows[start : start + ctx.chunk_rows] = grad_logits @ table
            grad_table += grad_logits.t() @ block
        return grad_rows, grad_table, None


class IBQuantizer(Quantizer):
    """Index backpropagation quantizer: codes chosen by inner product, gradients through the softmax.

    Training forward, on rows z (fp32), with the codebook E `[K, D]`:
      k = argmax_k z.e_k,  decoder input q = (onehot(k) - sg(s) + s) E with s = softmax(z E^T): its value
      is e_k, its gradient reaches z and every code through s (`IndexBackpropagation`);
      commitment_loss = beta * mean((z - sg q)^2);  codebook_loss = mean((q - sg z)^2).
    The codebook starts as k-means centres of the first batch (default) and is learnt by gradient.
    """

    options = {
        "commitment_cost": NON_NEGATIVE.documented("beta, the weight of the commitment loss `mean((z - sg q)^2)`."),
        **KMEANS_OPTIONS,
        **CHUNK_OPTIONS,
    }

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        commitment_cost: float = 0.25,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        chunk_rows: int | None = None,
    ):
        super().__init__(codebook_size, dim)
        self._set_options(commitment_cost=commitment_cost, kmeans_init=kmeans_init, kmeans_iters=kmeans_iters,
                          chunk_rows=chunk_rows)
        self.codebook = Codebook(codebook_size, dim, chunk_rows=chunk_rows)

    def needs_initialization(self) -> bool:
        return not bool(self.codebook.initialized)

    def initialize(self, rows: torch.Tensor) -> None:
        self.codebook.initialize(rows, self.kmeans_iters if self.kmeans_init else None)

    def _chunk_rows(self) -> int:
        return self.chunk_rows or default_chunk_rows(self.codebook_size)

    def _select_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return largest_logit_code(rows, self.codebook.weight.detach(), self._chunk_rows())

    def _forward_rows(self, rows: torch.Tensor) -> QuantizerOutput:
        quantized, ids = IndexBackpropagation.apply(rows, self.codebook.weight, self._chunk_rows())
        losses = {
            "commitment_loss": self.commitment_cost * F.mse_loss(rows, quantized.detach()),
            "codebook_loss": F.mse_loss(quantized, rows.detach()),
        }
        return QuantizerOutput(quantized, ids, losses, usage_stats(code_histogram(ids, self.codebook_size)))
