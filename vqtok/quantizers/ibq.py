"""Index backpropagation quantization (Shi et al. 2025, IBQ): the code is chosen by the largest
logit z.e_k, and the gradient flows through the softmax over all codes, so every code is trained at
every step, not only the chosen ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..options import NON_NEGATIVE, document_options
from .base import Quantizer, QuantizerOutput
from .codebook import Codebook
from .functional import (
    CHUNK_OPTIONS, COMMITMENT_COST, ENTROPY_OPTIONS, code_histogram, default_chunk_rows, fp32_backward, usage_stats,
)
from .kmeans import KMEANS_OPTIONS


def largest_logit_code(rows: torch.Tensor, table: torch.Tensor, chunk_rows: int | None = None) -> torch.Tensor:
    """argmax_k z.e_k for each row `[N, D]` over the codes `[K, D]`, one chunk of rows at a time."""
    chunk_rows = chunk_rows or default_chunk_rows(table.shape[0], rows.device, rows.shape[0])
    ids = torch.empty(rows.shape[0], dtype=torch.long, device=rows.device)
    for start in range(0, rows.shape[0], chunk_rows):
        ids[start : start + chunk_rows] = (rows[start : start + chunk_rows] @ table.t()).argmax(dim=1)
    return ids


class SoftmaxEntropies(torch.autograd.Function):
    """(mean_n H(p(.|z_n)), mean_n p(.|z_n) `[K]`) for p(k|z) = softmax_k(z.e_k / tau), one chunk of rows
    at a time in both passes, with one `[chunk_rows, K]` block alive at a time.

    Backward, with l = z E^T / tau and upstream g_H (scalar) and g_p `[K]`, per row n:
      d/dl_n = (1/N) p_n * (g_p - <g_p, p_n> - g_H (l_n - <p_n, l_n>)),
    then d/dz = (d/dl) E / tau and d/dE = (d/dl)^T z / tau."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, table: torch.Tensor, temperature: float, chunk_rows: int):
        entropy_sum, probability_sum = rows.new_zeros(()), rows.new_zeros(table.shape[0])
        for start in range(0, rows.shape[0], chunk_rows):
            logits = rows[start : start + chunk_rows] @ table.t() / temperature
            probabilities = torch.softmax(logits, dim=1)
            entropy_sum += (torch.logsumexp(logits, dim=1) - (probabilities * logits).sum(dim=1)).sum()
            probability_sum += probabilities.sum(dim=0)
        ctx.save_for_backward(rows, table)
        ctx.temperature, ctx.chunk_rows = temperature, chunk_rows
        return entropy_sum / rows.shape[0], probability_sum / rows.shape[0]

    @staticmethod
    @fp32_backward
    def backward(ctx, grad_entropy: torch.Tensor, grad_probabilities: torch.Tensor):
        rows, table = ctx.saved_tensors
        count, tau = rows.shape[0], ctx.temperature
        grad_rows, grad_table = torch.empty_like(rows), torch.zeros_like(table)
        for start in range(0, count, ctx.chunk_rows):
            block = rows[start : start + ctx.chunk_rows]
            logits = block @ table.t() / tau
            probabilities = torch.softmax(logits, dim=1)
            mean_logit = (probabilities * logits).sum(dim=1, keepdim=True)
            mean_grad = probabilities @ grad_probabilities
            grad_logits = logits.sub_(mean_logit).mul_(-grad_entropy).add_(grad_probabilities).sub_(mean_grad[:, None])
            grad_logits = grad_logits.mul_(probabilities).div_(count * tau)
            grad_rows[start : start + ctx.chunk_rows] = grad_logits @ table
            grad_table += grad_logits.t() @ block
        return grad_rows, grad_table, None, None


def code_entropies(rows: torch.Tensor, table: torch.Tensor, temperature: float, chunk_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean per-sample entropy, batch entropy), in nats, of p(k|z) = softmax_k(z.e_k / tau) over the
    rows `[N, D]` and codes `[K, D]`: exact, one chunk of rows at a time (`SoftmaxEntropies`), so
    memory stays at one `[chunk_rows, K]` block plus the `[K]` mean probabilities."""
    per_sample, mean = SoftmaxEntropies.apply(rows, table, temperature, chunk_rows)
    return per_sample, -(mean * torch.log(mean.clamp_min(1e-30))).sum()


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
    @fp32_backward
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


@document_options
class IBQuantizer(Quantizer):
    """Index backpropagation quantizer: codes chosen by inner product, gradients through the softmax.

    Training forward, on rows z (fp32), with the codebook E `[K, D]` (drawn from N(0, 1), as the
    reference's embedding table, unless `kmeans_init`):
      k = argmax_k z.e_k,  q = e_k;  the decoder receives z^ = (onehot(k) - sg(s) + s) E, s = softmax(z E^T):
      its value is q, its gradient reaches z and every code through s (`IndexBackpropagation`);
      index_loss = mean((z^ - z)^2);  commitment_loss = beta * mean((z - sg q)^2);
      codebook_loss = codebook_cost * mean((q - sg z)^2);
      entropy_loss = w * (mean_n H(p(.|z_n)) - gamma * H(mean_n p(.|z_n))), p(k|z) = softmax_k(z.e_k / tau).
    These are the reference code's terms and weights (its "double quantization loss" plus the
    entropy penalty of its configs). Every term works one chunk of rows at a time: memory stays
    bounded by one `[chunk_rows, K]` block however large K is.
    """

    options = {
        "commitment_cost": COMMITMENT_COST.changed(1.0, "The reference's weight."),
        "codebook_cost": NON_NEGATIVE(0.25, "Weight of the codebook loss `mean((q - sg z)^2)`.", training_only=True),
        **ENTROPY_OPTIONS,
        "entropy_temperature": ENTROPY_OPTIONS["entropy_temperature"].documented(
            "tau of p(k|z) = softmax_k(z.e_k / tau) that the entropy loss scores."
        ),
        **KMEANS_OPTIONS,
        "kmeans_init": KMEANS_OPTIONS["kmeans_init"].changed(False, (
            "The reference draws the codebook from N(0, 1) and trains every code through the softmax."
        )),
        **CHUNK_OPTIONS,
    }

    def __init__(self, codebook_size: int | None = None, dim: int | None = None, **options):
        super().__init__(codebook_size, dim, **options)
        self.codebook = Codebook(self.codebook_size, self.dim, initial="normal", chunk_rows=self.chunk_rows)
        if not self.kmeans_init:
            self.codebook.initialized.fill_(True)

    def needs_initialization(self) -> bool:
        return not bool(self.codebook.initialized)

    def initialize(self, rows: torch.Tensor) -> None:
        self.codebook.initialize(rows, self.kmeans_iters)

    def _chunk_rows(self, rows: torch.Tensor) -> int:
        return self.chunk_rows or default_chunk_rows(self.codebook_size, rows.device, rows.shape[0])

    def _select_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return largest_logit_code(rows, self.codebook.weight.detach(), self._chunk_rows(rows))

    def _forward_rows(self, rows: torch.Tensor) -> QuantizerOutput:
        table = self.codebook.weight
        quantized, ids = IndexBackpropagation.apply(rows, table, self._chunk_rows(rows))
        codes = table[ids]
        losses = {
            "index_loss": F.mse_loss(quantized, rows),
            "commitment_loss": self.commitment_cost * F.mse_loss(rows, codes.detach()),
            "codebook_loss": self.codebook_cost * F.mse_loss(codes, rows.detach()),
        }
        stats = usage_stats(code_histogram(ids, self.codebook_size))
        if self.entropy_weight > 0:
            per_sample, batch = code_entropies(rows, table, self.entropy_temperature, self._chunk_rows(rows))
            losses["entropy_loss"] = self.entropy_weight * (per_sample - self.diversity_gamma * batch)
            stats.update(per_sample_entropy=per_sample.detach(), batch_entropy=batch.detach())
        return QuantizerOutput(quantized, ids, losses, stats)
