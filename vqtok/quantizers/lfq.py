"""Lookup-free quantization (Yu et al. 2024, MAGVIT-v2): each latent dimension is one bit, q = sign(z);
the codes are the 2^D corners of the cube, so there is no table. Its entropy loss (confident bits per
position, all codes used over the batch) is computed here without forming the `[N, 2^D]`
probabilities: see `code_entropies`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ..options import document_options
from .base import CodeSpace, Quantizer, QuantizerOutput, fixed_size
from .functional import (
    COMMITMENT_COST, ENTROPY_OPTIONS, MAX_COUNTED_CODES, code_histogram, fp32_backward, straight_through, usage_stats,
)

# K = 2^D codes, at most `MAX_COUNTED_CODES`.
MAX_BITS = MAX_COUNTED_CODES.bit_length() - 1
# Probabilities per chunk of the batch entropy: about one million floats, as for the nearest-code search.
ENTROPY_CHUNK_ELEMENTS = 1 << 20

# D when none is given: 10 bits, K = 1024.
DEFAULT_BITS = 10


def code_bits(ids: torch.Tensor, bits: int) -> torch.Tensor:
    """The bit pattern `[n, bits]` (0/1, long) of ids `[n]`, bit 0 first: id = sum_i 2^i bit_i."""
    return (ids[:, None] >> torch.arange(bits, device=ids.device)) & 1


def ids_of_signs(rows: torch.Tensor) -> torch.Tensor:
    """id = sum_i 2^i [z_i > 0] of each row `[N, D]`."""
    weights = 2 ** torch.arange(rows.shape[1], device=rows.device)
    return ((rows > 0).long() * weights).sum(dim=1)


class MeanCodeProbabilities(torch.autograd.Function):
    """mean_n p(c|z_n) `[2^D]` for bit logits `[N, D]`, where log p(c|z_n) = A_n + logits_n . bits_c and
    A_n = -sum_i softplus(logits_ni), one chunk of codes at a time in both passes.

    Backward: d log p(c|z_n) / d logits_ni = bits_ci - sigmoid(logits_ni), so with upstream g_c,
    grad_ni = (1/N) [sum_c g_c p(c|z_n) bits_ci - sigmoid(logits_ni) sum_c g_c p(c|z_n)]: two
    accumulators `[N, D]` and `[N]` filled chunk by chunk. Each chunk's `[N, chunk]` block is the
    only large tensor, made in place and dropped, so memory stays at one block."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, chunk: int):
        rows, bits = logits.shape
        log_normalizer = -F.softplus(logits).sum(dim=1, keepdim=True)
        means = logits.new_empty(1 << bits)
        for start in range(0, means.shape[0], chunk):
            block = _probability_block(logits, log_normalizer, start, min(start + chunk, means.shape[0]))
            means[start : start + block.shape[1]] = block.sum(dim=0) / rows
        ctx.save_for_backward(logits)
        ctx.chunk = chunk
        return means

    @staticmethod
    @fp32_backward
    def backward(ctx, grad_means: torch.Tensor):
        (logits,) = ctx.saved_tensors
        rows, bits = logits.shape
        log_normalizer = -F.softplus(logits).sum(dim=1, keepdim=True)
        weighted_bits = torch.zeros_like(logits)
        weighted = logits.new_zeros(rows)
        for start in range(0, grad_means.shape[0], ctx.chunk):
            stop = min(start + ctx.chunk, grad_means.shape[0])
            block = _probability_block(logits, log_normalizer, start, stop).mul_(grad_means[start:stop])
            weighted_bits += block @ _bit_matrix(start, stop, bits, logits.device)
            weighted += block.sum(dim=1)
        return (weighted_bits - torch.sigmoid(logits) * weighted[:, None]) / rows, None


def _bit_matrix(start: int, stop: int, bits: int, device) -> torch.Tensor:
    return code_bits(torch.arange(start, stop, device=device), bits).float()


def _probability_block(logits: torch.Tensor, log_normalizer: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """p(c|z_n) `[N, stop - start]` for the codes c in [start, stop), made in place."""
    return torch.addmm(log_normalizer, logits, _bit_matrix(start, stop, logits.shape[1], logits.device).t()).exp_()


def code_entropies(logits: torch.Tensor, chunk_elements: int = ENTROPY_CHUNK_ELEMENTS) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean per-sample entropy, batch entropy), in nats, of the soft binary codes with bit logits
    `logits` `[N, D]`: p(c|z_n) = prod_i p_ni^{c_i} (1 - p_ni)^{1 - c_i}, p_ni = sigmoid(logits_ni).

    Every code distribution of LFQ and BSQ has this form: softmax_c(-||z - c||^2 / tau) over the
    corners c of a cube factorises into one Bernoulli per dimension. So the per-sample entropy is
    exactly the sum of the D bits' entropies (no `[N, 2^D]` term at all). The batch entropy
    H(mean_n p(c|z_n)) does not factorise (the mean of product distributions is not one); it is
    computed exactly, over chunks of codes (`MeanCodeProbabilities`): each chunk's `[N, chunk]` block
    of probabilities is summed over n and dropped, and recomputed in the backward pass, so memory
    stays at one chunk (about `chunk_elements` floats) plus the `[2^D]` mean probabilities.
    """
    probabilities = torch.sigmoid(logits)
    bit_entropies = probabilities * F.softplus(-logits) + (1 - probabilities) * F.softplus(logits)
    per_sample = bit_entropies.sum(dim=1).mean()

    rows, bits = logits.shape
    chunk = max(1, min(1 << bits, chunk_elements // max(rows, 1)))
    mean_probabilities = MeanCodeProbabilities.apply(logits, chunk)
    batch = -(mean_probabilities * torch.log(mean_probabilities.clamp_min(1e-30))).sum()
    return per_sample, batch


@document_options
class LFQuantizer(Quantizer):
    """Lookup-free quantizer: bit i of the code is [z_i > 0]; the code is q = s (2 bits - 1), s = 1 here.

    Training forward, on rows z (fp32) of D = log2 K dimensions:
      q = sign(z) (a zero counts as negative), id = sum_i 2^i [z_i > 0], decoder input z + sg(q - z);
      commitment_loss = beta * mean((z - sg q)^2);
      entropy_loss = w * (mean_n H(p(c|z_n)) - gamma * H(mean_n p(c|z_n))),
        p(c|z) = softmax_c(-||z - c||^2 / tau), i.e. bit i is 1 with probability sigmoid(4 s z_i / tau).
    The first term makes each position's bits confident, the second spreads the batch over all codes.
    The batch entropy is the exact one, computed in chunks of codes (`code_entropies`), over this
    process's rows (not gathered across processes). K = 2^D follows from D.
    """

    options = {
        "commitment_cost": COMMITMENT_COST,
        **ENTROPY_OPTIONS,
        "entropy_weight": ENTROPY_OPTIONS["entropy_weight"].changed(0.05, (
            "MAGVIT-v2 uses 0.1 (`paper_preset()`); at 0.1 a 300-step quickstart run reached held-out MSE 1.54x EMA "
            "VQ's, at 0.05 1.36x, with every code used either way."
        )),
        "entropy_temperature": ENTROPY_OPTIONS["entropy_temperature"].documented(
            "tau of the soft code assignment p(c|z) = softmax_c(-||z - c||^2 / tau) that the entropy loss scores."
        ),
    }

    @classmethod
    def code_space(
        cls, options: Mapping[str, Any], codebook_size: int | None, dim: int | None, where: str
    ) -> CodeSpace:
        dim = DEFAULT_BITS if dim is None else dim
        if dim > MAX_BITS:
            raise ValueError(
                f"{where} the latent dimension ({dim}) is the number of bits, so K = 2^{dim}; at most {MAX_BITS} bits "
                "are supported: every training step counts code use in a [K] histogram"
            )
        return CodeSpace(fixed_size("`codebook_size`", codebook_size, 2**dim, f"the {2**dim} codes of {dim} bits", where), dim)

    @property
    def code_scale(self) -> float:
        """s, the magnitude of every code component."""
        return 1.0

    def project(self, rows: torch.Tensor) -> torch.Tensor:
        """The latents the codes approximate: unchanged here (BSQ puts them on the unit sphere)."""
        return rows

    def code_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """The codes `[n, D]` of ids `[n]` (all K when None; only for a small K): s (2 bits - 1)."""
        ids = torch.arange(self.codebook_size) if ids is None else ids
        return (code_bits(ids, self.dim).float() * 2 - 1) * self.code_scale

    def _select_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return ids_of_signs(self.project(rows))

    def _forward_rows(self, rows: torch.Tensor) -> QuantizerOutput:
        latents = self.project(rows)
        ids = ids_of_signs(latents.detach())
        codes = (latents.detach() > 0).float().mul(2).sub(1).mul(self.code_scale)
        losses = {"commitment_loss": self.commitment_cost * F.mse_loss(latents, codes)}
        stats = usage_stats(code_histogram(ids, self.codebook_size))
        if self.entropy_weight > 0:
            logits = 4 * self.code_scale * latents / self.entropy_temperature
            per_sample, batch = code_entropies(logits)
            losses["entropy_loss"] = self.entropy_weight * (per_sample - self.diversity_gamma * batch)
            stats.update(per_sample_entropy=per_sample.detach(), batch_entropy=batch.detach())
        return QuantizerOutput(straight_through(latents, codes), ids, losses, stats)
