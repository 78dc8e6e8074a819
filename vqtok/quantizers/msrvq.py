"""Multi-scale residual quantization (Tian et al. 2024, VAR): one codebook quantizes the residual at
growing resolutions, coarse to fine; each scale's codes are upsampled to the full grid and taken off
the residual before the next scale looks at it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from ..options import Option, document_options
from .base import CodeSpace, Quantizer, QuantizerOutput
from .codebook import LEARNT_CODEBOOK_OPTIONS, Codebook
from .functional import CHUNK_OPTIONS, COMMITMENT_COST, code_histogram, fp32_no_autocast, straight_through, usage_stats


# The token grid's side a quantizer built alone (without a config to fill `scales` in) assumes.
DEFAULT_GRID_SIDE = 8


def check_growing_scales(options: Mapping[str, Any], where: str) -> None:
    """The option rule of `scales`: strictly growing."""
    scales = options["scales"]
    if scales is not None and any(a >= b for a, b in zip(scales, scales[1:])):
        raise ValueError(f"{where} `scales` must be a non-empty, strictly growing list of ints >= 1, got {scales!r}")


def default_scales(side: int) -> list[int]:
    """1, 2, 4, ... below `side`, then `side` itself: the scales when none are given."""
    scales, scale = [], 1
    while scale < side:
        scales.append(scale)
        scale *= 2
    return scales + [side]


def upsample_codes(codes: torch.Tensor, side: int) -> torch.Tensor:
    """A scale's code map `[B, D, s, s]` (or `[B, D, s]` on a 1-D sequence) brought to `[B, D, side, side]`
    (`[B, D, side]`): bilinear (linear), as a smooth field."""
    rank = codes.dim() - 2
    if codes.shape[-1] == side:
        return codes
    return F.interpolate(codes, size=(side,) * rank, mode="bilinear" if rank == 2 else "linear", align_corners=False)


def spread_ids(ids: torch.Tensor, side: int) -> torch.Tensor:
    """A scale's ids `[B, s, s]` (`[B, s]`) on the full grid `[B, side, side]` (`[B, side]`): each id
    repeated over its cell (nearest-neighbour), so that `gather_ids` reads it back exactly."""
    return F.interpolate(ids[:, None].float(), size=(side,) * (ids.dim() - 1), mode="nearest")[:, 0].long()


def cell_positions(scale: int, side: int, device) -> torch.Tensor:
    """For each of a scale's `scale` cells along a side, a full-grid position inside it: ceil(i * side /
    scale), which nearest-neighbour upsampling maps back to cell i."""
    return torch.div(torch.arange(scale, device=device) * side + scale - 1, scale, rounding_mode="floor")


def gather_ids(grid: torch.Tensor, scale: int) -> torch.Tensor:
    """The ids `[B, s, s]` (`[B, s]`) of a scale from its full map `[B, side, side]` (`[B, side]`), one
    position per cell."""
    positions = cell_positions(scale, grid.shape[-1], grid.device)
    for axis in range(1, grid.dim()):
        grid = grid.index_select(axis, positions)
    return grid


@document_options
class MultiScaleResidualQuantizer(Quantizer):
    """VAR's multi-scale residual quantizer, with one EMA (or gradient) codebook shared by the scales.

    On latents z `[B, D, h, h]`, with scales s_1 < ... < s_R = h: r_1 = z; for k = 1 .. R,
      ids_k = nearest code of each cell of area-downsampled r_k at s_k x s_k,
      u_k = the chosen codes upsampled (bilinear) back to h x h,  r_{k+1} = r_k - u_k;
    the decoder receives z + sg(z_q - z), z_q = sum_k u_k;
      commitment_loss = beta * mean((z - sg z_q)^2);  codebook_loss = mean((z_q - sg z)^2) (no EMA).
    The codebook's EMA statistics and restarts see every scale's downsampled residuals; it starts as
    k-means centres of the pyramid bands of the first batch (each scale's downsampled z minus its
    coarser scale's upsampled), which is what the scales' residuals would be under perfect codes.
    VAR also passes each u_k through a small convolution; this quantizer does not.

    Ids keep the id contract `[B, h, h, R]`: level k holds scale k's `s_k x s_k` ids repeated over their
    cells (`spread_ids`); `embed` reads one position per cell (`gather_ids`), so any ids decode, and
    ids from `select` decode exactly as the model's forward does. A language model over them sees
    h*h*R tokens per image, more than VAR's sum_k s_k^2. The grid must be square with side s_R. On a
    1-D token sequence `[B, D, L]` (a `titok` backbone) the scales are lengths, s_R = L, with linear
    upsampling: ids `[B, L, R]`.
    """

    options = {
        "scales": Option(list, optional=True, items=Option(int, low=1))(None, (
            "s_1 < ... < s_R, the side of each scale's id map, growing, the last equal to the token grid's side; "
            "R = len(scales) codes per position. None: 1, 2, 4, ... and the grid's side (filled in by the config; "
            "a quantizer built alone takes an 8 x 8 grid)."
        )),
        "commitment_cost": COMMITMENT_COST,
        **LEARNT_CODEBOOK_OPTIONS,
        **CHUNK_OPTIONS,
    }
    option_rules = (check_growing_scales,)

    def __init__(self, codebook_size: int | None = None, dim: int | None = None, **options):
        super().__init__(codebook_size, dim, **options)
        self.scales = default_scales(DEFAULT_GRID_SIDE) if self.scales is None else list(self.scales)
        self.codebook = Codebook(self.codebook_size, self.dim, trainable=not self.use_ema, ema=self.use_ema,
                                 ema_decay=self.ema_decay, ema_epsilon=self.ema_epsilon, track_usage=True,
                                 chunk_rows=self.chunk_rows)

    @classmethod
    def code_space(
        cls, options: Mapping[str, Any], codebook_size: int | None, dim: int | None, where: str
    ) -> CodeSpace:
        scales = options["scales"] or default_scales(DEFAULT_GRID_SIDE)
        return replace(super().code_space(options, codebook_size, dim, where), codes_per_position=len(scales))

    @property
    def side(self) -> int:
        return self.scales[-1]

    def _check_grid(self, shape: torch.Size) -> None:
        if len(shape) not in (3, 4) or any(side != self.side for side in shape[2:]):
            raise ValueError(
                f"{type(self).__name__} works on its {self.side}x{self.side} token grid or its {self.side}-token "
                f"sequence (its last scale), got latents of shape {list(shape)}; encode images of the configured size"
            )

    def needs_initialization(self) -> bool:
        return not bool(self.codebook.initialized)

    def _band_rows(self, z: torch.Tensor) -> torch.Tensor:
        """The pyramid bands of `z` (see the class docstring) as rows `[n, D]`."""
        bands, coarser, rank = [], torch.zeros_like(z), z.dim() - 2
        for scale in self.scales:
            down = F.interpolate(z, size=(scale,) * rank, mode="area")
            band = down - F.interpolate(coarser, size=(scale,) * rank, mode="area")
            bands.append(band.movedim(1, -1).reshape(-1, self.dim))
            coarser = upsample_codes(down, self.side)
        return torch.cat(bands)

    def _scales(self, z: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """(each scale's ids `[B, s, s]` (`[B, s]`), each scale's downsampled residual rows, z_q like z)."""
        residual, total, ids, rows = z.detach(), torch.zeros_like(z), [], []
        for scale in self.scales:
            cells = (scale,) * (z.dim() - 2)
            level_rows = F.interpolate(residual, size=cells, mode="area").movedim(1, -1).reshape(-1, self.dim)
            level_ids = self.codebook.nearest(level_rows)
            codes = self.codebook.weight[level_ids].reshape(z.shape[0], *cells, self.dim).movedim(-1, 1)
            upsampled = upsample_codes(codes.float(), self.side)
            residual, total = residual - upsampled.detach(), total + upsampled
            ids.append(level_ids.reshape(z.shape[0], *cells))
            rows.append(level_rows)
        return ids, rows, total

    def _id_grid(self, ids: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack([spread_ids(level, self.side) for level in ids], dim=-1)

    def _quantize(self, z_e: torch.Tensor) -> QuantizerOutput:
        self._to_rows(z_e)  # dtype and channel errors
        self._check_grid(z_e.shape)
        with fp32_no_autocast(z_e.device):
            z = z_e.float()
            if self.training and self.needs_initialization():
                self.codebook.initialize(self._band_rows(z.detach()), self.kmeans_iters if self.kmeans_init else None)
            ids, rows, total = self._scales(z)
            losses = {"commitment_loss": self.commitment_cost * F.mse_loss(z, total.detach())}
            if not self.use_ema:
                losses["codebook_loss"] = F.mse_loss(total, z.detach())
            flat_ids = torch.cat([level.reshape(-1) for level in ids])
            counts = code_histogram(flat_ids, self.codebook_size)
            stats = usage_stats(counts)
            if self.training:
                stats["restarted_codes"] = self.codebook.learn_from_batch(
                    flat_ids, torch.cat(rows), counts, self.dead_code_threshold
                )
            quantized = straight_through(z, total)
        return QuantizerOutput(quantized.to(z_e.dtype), self._id_grid(ids), losses, stats)

    @torch.no_grad()
    def select(self, z_e: torch.Tensor) -> torch.Tensor:
        """Ids `[B, h, h, R]` (`[B, L, R]`): scale k's ids repeated over their cells in level k."""
        self._to_rows(z_e)
        self._check_grid(z_e.shape)
        with fp32_no_autocast(z_e.device):
            return self._id_grid(self._scales(z_e.float())[0])

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """z_q `[B, D, h, h]` for ids `[B, h, h, R]`: the sum of every scale's codes, read at one position per
        cell and upsampled."""
        self.check_indices(indices)
        if indices.dim() not in (3, 4) or any(side != self.side for side in indices.shape[1:-1]):
            raise ValueError(f"token ids of {type(self).__name__} must have shape [B, {self.side}, {self.side}, "
                             f"{self.codes_per_position}] (or [B, {self.side}, {self.codes_per_position}] on a 1-D "
                             f"sequence), got {list(indices.shape)}")
        total = 0
        with fp32_no_autocast(indices.device):
            for level, scale in enumerate(self.scales):
                level_ids = gather_ids(indices[..., level].long(), scale)
                codes = self.codebook.weight[level_ids].float().movedim(-1, 1)
                total = total + upsample_codes(codes, self.side)
        return total.contiguous()

    def extra_repr(self) -> str:
        return f"codebook_size={self.codebook_size}, dim={self.dim}, scales={self.scales}"
