"""The interface every quantizer speaks, and the pieces they share.

A quantizer maps encoder output `z_e` of shape `[B, D, *spatial]` to

- `forward(z_e) -> QuantizerOutput`: the training path (stochastic where the method is), with the
  vectors handed to the decoder, the chosen ids, named loss terms and statistics;
- `select(z_e) -> LongTensor [B, *spatial]`: deterministic token ids (what `encode` uses);
- `embed(ids) -> Tensor [B, D, *spatial]`: the decoder-side vectors of given ids (what `decode` uses);
- `codebook -> Tensor [K, D]`: the code vectors in the decoder's space.

Subclasses implement the row-wise versions (`_forward_rows`, `_select_rows`, `codebook`) on
`[N, D]` matrices; this base class does the reshaping and the input checks. All quantizer maths
runs in fp32 with autocast disabled, whatever the surrounding precision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class QuantizerOutput:
    """Result of a quantizer's training forward.

    Attributes:
        quantized: vectors for the decoder, same shape and dtype as the input `z_e`.
        indices: chosen token ids, `[B, *spatial]`, `torch.long`.
        losses: named loss terms (already weighted), e.g. `commitment_loss`, `codebook_loss`.
        stats: named scalar diagnostics, e.g. `perplexity`, `usage`.
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def loss(self) -> torch.Tensor:
        """Sum of all loss terms (a zero scalar when there are none)."""
        if not self.losses:
            return self.quantized.new_zeros(())
        return sum(self.losses.values())


def fp32_no_autocast(device: torch.device):
    """Context manager that disables autocast on `device`'s type, so maths stays in fp32."""
    return torch.autocast(device_type=device.type, enabled=False)


def default_chunk_rows(codebook_size: int, budget_elements: int = 1 << 20) -> int:
    """Rows per chunk so one chunk's `[rows, K]` distance block holds about `budget_elements` floats."""
    return max(64, budget_elements // codebook_size)


def nearest_code(
    rows: torch.Tensor,
    codebook: torch.Tensor,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Index of the nearest codebook vector (squared Euclidean distance) for each row.

    Computes `argmin_k ||e_k||^2 - 2 z.e_k` (the `||z||^2` term does not change the argmin) in
    fp32, one chunk of rows at a time, so memory is bounded by `chunk_rows x K` floats and an
    `[N, K, D]` tensor is never formed.

    Args:
        rows: `[N, D]` float tensor.
        codebook: `[K, D]` float tensor.
        chunk_rows: rows per chunk; defaults to about one million distances per chunk.
    """
    with fp32_no_autocast(rows.device):
        rows = rows.float()
        codebook = codebook.float()
        codes_t = codebook.t().contiguous()
        code_sq_norms = codebook.pow(2).sum(dim=1)
        chunk_rows = chunk_rows or default_chunk_rows(codebook.shape[0])
        indices = torch.empty(rows.shape[0], dtype=torch.long, device=rows.device)
        for start in range(0, rows.shape[0], chunk_rows):
            block = rows[start : start + chunk_rows]
            distances = torch.addmm(code_sq_norms, block, codes_t, beta=1.0, alpha=-2.0)
            indices[start : start + chunk_rows] = distances.argmin(dim=1)
    return indices


def code_histogram(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Float count of each code among `indices` (any shape)."""
    return torch.bincount(indices.reshape(-1), minlength=codebook_size).float()


def perplexity_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the code distribution given by `counts` (1 = one code, K = uniform)."""
    probs = counts / counts.sum().clamp_min(1e-12)
    entropy = -(probs * torch.log(probs.clamp_min(1e-12))).sum()
    return entropy.exp()


@torch.no_grad()
def ema_update_(
    cluster_size: torch.Tensor, embed_sum: torch.Tensor, counts: torch.Tensor, sums: torch.Tensor, decay: float
) -> None:
    """One EMA step of codebook statistics, in place: N <- g N + (1-g) counts, M <- g M + (1-g) sums.

    `counts` `[K]` and `sums` `[K, D]` are this step's (hard or soft) assignment totals, already
    summed over processes.
    """
    cluster_size.mul_(decay).add_(counts, alpha=1 - decay)
    embed_sum.mul_(decay).add_(sums, alpha=1 - decay)


def laplace_smoothed_codebook(cluster_size: torch.Tensor, embed_sum: torch.Tensor, epsilon: float) -> torch.Tensor:
    """Codebook `[K, D]` from EMA statistics with Laplace smoothing of the cluster sizes:
    e_k = M_k / N~_k,  N~_k = (N_k + eps) / (sum N + K eps) * sum N."""
    total = cluster_size.sum()
    smoothed = (cluster_size + epsilon) / (total + cluster_size.shape[0] * epsilon) * total
    return embed_sum / smoothed[:, None]


def usage_stats(indices: torch.Tensor, codebook_size: int) -> dict[str, torch.Tensor]:
    """Perplexity and fraction of codes used among `indices`."""
    counts = code_histogram(indices, codebook_size)
    return {
        "perplexity": perplexity_from_counts(counts),
        "usage": (counts > 0).float().mean(),
    }


class Quantizer(nn.Module):
    """Base class of all quantizers; see the module docstring for the interface."""

    def __init__(self, codebook_size: int, dim: int):
        super().__init__()
        if not isinstance(codebook_size, int) or codebook_size < 2:
            raise ValueError(f"codebook_size must be an int >= 2, got {codebook_size!r}")
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.codebook_size = codebook_size
        self.dim = dim

    # --- to implement -------------------------------------------------------------------------
    @property
    def codebook(self) -> torch.Tensor:
        """`[K, D]` code vectors in the decoder's space."""
        raise NotImplementedError

    def _forward_rows(self, rows: torch.Tensor) -> QuantizerOutput:
        """Training path on fp32 rows `[N, D]`; returns quantized rows `[N, D]` and ids `[N]`."""
        raise NotImplementedError

    def _select_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Deterministic ids `[N]` for fp32 rows `[N, D]`."""
        raise NotImplementedError

    def _embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Decoder-side vectors `[N, D]` for flat ids `[N]` (already range-checked)."""
        return self.codebook[ids]

    # --- shared plumbing ----------------------------------------------------------------------
    def forward(self, z_e: torch.Tensor) -> QuantizerOutput:
        rows, shape = self._to_rows(z_e)
        with fp32_no_autocast(z_e.device):
            out = self._forward_rows(rows.float())
        return QuantizerOutput(
            quantized=self._from_rows(out.quantized, shape).to(z_e.dtype),
            indices=out.indices.reshape(shape[0], *shape[2:]),
            losses=out.losses,
            stats=out.stats,
        )

    @torch.no_grad()
    def select(self, z_e: torch.Tensor) -> torch.Tensor:
        """Deterministic token ids `[B, *spatial]` for `z_e` `[B, D, *spatial]`."""
        rows, shape = self._to_rows(z_e)
        with fp32_no_autocast(z_e.device):
            ids = self._select_rows(rows.float())
        return ids.reshape(shape[0], *shape[2:])

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """Decoder-side vectors `[B, D, *spatial]` (fp32) for ids `[B, *spatial]`."""
        self.check_indices(indices)
        with fp32_no_autocast(indices.device):
            vectors = self._embed_ids(indices.reshape(-1).long())
        vectors = vectors.reshape(*indices.shape, self.dim)
        return vectors.movedim(-1, 1).contiguous()

    def check_indices(self, indices: torch.Tensor) -> None:
        """Raise `TypeError`/`ValueError` unless `indices` are integer ids in [0, K)."""
        if not isinstance(indices, torch.Tensor):
            raise TypeError(f"token ids must be a torch.Tensor, got {type(indices).__name__}")
        if indices.dtype == torch.bool or indices.is_floating_point() or indices.is_complex():
            raise TypeError(f"token ids must have an integer dtype (torch.long), got {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(
                f"token ids must lie in [0, {self.codebook_size}), got values in "
                f"[{int(indices.min())}, {int(indices.max())}]"
            )

    def _to_rows(self, z_e: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
        if not isinstance(z_e, torch.Tensor) or not z_e.is_floating_point():
            raise TypeError(f"z_e must be a float tensor, got {getattr(z_e, 'dtype', type(z_e).__name__)}")
        if z_e.dim() < 2 or z_e.shape[1] != self.dim:
            raise ValueError(f"z_e must have shape [B, {self.dim}, ...], got {list(z_e.shape)}")
        rows = z_e.movedim(1, -1).reshape(-1, self.dim)
        return rows, z_e.shape

    @staticmethod
    def _from_rows(rows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        batch, dim, spatial = shape[0], shape[1], shape[2:]
        return rows.reshape(batch, *spatial, dim).movedim(-1, 1).contiguous()

    def extra_repr(self) -> str:
        return f"codebook_size={self.codebook_size}, dim={self.dim}"


def uniform_codebook(codebook_size: int, dim: int) -> torch.Tensor:
    """Initial codebook drawn uniformly from [-1/K, 1/K] (the VQ-VAE reference initialisation)."""
    bound = 1.0 / codebook_size
    return torch.empty(codebook_size, dim).uniform_(-bound, bound)

