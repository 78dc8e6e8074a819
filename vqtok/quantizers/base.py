"""The interface every quantizer speaks (the maths they share is in `functional.py`).

A quantizer maps encoder output `z_e` of shape `[B, D, *spatial]` to

- `forward(z_e) -> QuantizerOutput`: the training path (stochastic where the method is), with the
  vectors handed to the decoder, the chosen ids, named loss terms and statistics;
- `select(z_e) -> LongTensor`: deterministic token ids (what `encode` uses);
- `embed(ids) -> Tensor [B, D, *spatial]`: the decoder-side vectors of given ids (what `decode` uses);
- `code_vectors(ids) -> Tensor [n, D]`: the vectors of chosen codes, differentiable, for metrics,
  regularisers and model cards (`sampled_code_vectors` picks a seeded subset of them).

The id contract. Token ids are `torch.long` in [0, K). A quantizer picks `codes_per_position` = R
codes per grid position: R = 1 gives ids `[B, *spatial]` (`[B, h, w]` for images); R > 1 (a
residual quantizer's depth) gives `[B, *spatial, R]`, the depth last, level 0 first. Flattened for a
language model, an image's ids run position by position in row-major order, a position's R codes
consecutively (`TokenLayout`); every level's codes share the range [0, K).

A subclass declares its options in `options` (each with its default: `vqtok.options`), takes them
as keyword arguments after K and D, and implements the row-wise steps on `[N, D]` matrices:
`_forward_rows`, `_select_rows`, and `code_vectors` where it holds no `Codebook`. Where K, D or R
follow from its options (FSQ: K = prod(levels)), it says so in `code_space`; where it starts itself
on the first training batch, in `needs_initialization` / `initialize`; where some of its parameters
must learn at another pace than the backbone's, in `parameter_groups`. This base class does the
reshaping, the input and option checks and the state protection below. All quantizer maths runs in
fp32 with autocast disabled, whatever the surrounding precision.

A training batch holding a non-finite value (on any process: they all agree) never reaches the
quantizer's state: the forward runs on a finite copy with every parameter and buffer restored
afterwards, and returns NaN losses and NaN at the positions whose latent vector was not finite,
flagged `skipped_update`, so that the trainer skips the step. A latent vector whose squared norm exceeds
`LARGEST_SQUARED_NORM` counts as not finite: the quantizers' fp32 maths squares and sums latents
(distances, variances, k-means), and beyond that bound those overflow.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from ..options import Configurable, Option, check_options
from ..parallel.collectives import true_on_every_process
from .functional import fp32_no_autocast, seeded_subset_ids

LARGEST_SQUARED_NORM = 2.0**96
"""The largest squared norm (about 7.9e28, a norm of 2.8e14) of a latent vector a quantizer trains
on. It leaves fp32 (max 3.4e38) a margin of 2^32 for what the methods build from it: squared
distances to codes, divisions by small variances or temperatures, sums over a batch."""


def usable_positions(z_e: torch.Tensor) -> torch.Tensor:
    """Boolean `[B, *spatial]`: where the latent vector of `z_e` `[B, D, *spatial]` is finite with a
    squared norm of at most `LARGEST_SQUARED_NORM`, computed in fp32."""
    # One pass: a NaN or infinity in a vector makes its squared norm NaN or inf, which fails the bound.
    return z_e.detach().float().square().sum(dim=1) <= LARGEST_SQUARED_NORM


@dataclass
class QuantizerOutput:
    """Result of a quantizer's training forward.

    Attributes:
        quantized: vectors for the decoder, same shape and dtype as the input `z_e`.
        indices: chosen token ids, `[B, *spatial]` (`[B, *spatial, R]` with R codes per position),
            `torch.long`.
        losses: named loss terms (already weighted), e.g. `commitment_loss`, `codebook_loss`.
        stats: named scalar diagnostics, e.g. `perplexity`, `usage`.
        skipped_update: True when the training batch held a non-finite value on some process: the
            quantizer's state (codebook, EMA statistics, usage counters, schedules, initialisation)
            was left as it was and the losses are NaN.
    """

    quantized: torch.Tensor
    indices: torch.Tensor
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    skipped_update: bool = False

    @property
    def loss(self) -> torch.Tensor:
        """Sum of all loss terms (a zero scalar when there are none)."""
        if not self.losses:
            return self.quantized.new_zeros(())
        return sum(self.losses.values())


DEFAULT_CODEBOOK_SIZE = 512
DEFAULT_DIM = 64

# The sizes every quantizer takes before its options, declared once (a tokenizer config's
# `codebook_size` and `latent_dim`).
SIZE_ARGUMENTS = {
    "codebook_size": Option(int, low=2, optional=True)(None, (
        "K, the number of codes; token ids lie in [0, K). None: 512, or the K the quantizer's options fix (FSQ: the "
        "product of its levels; LFQ, BSQ: 2^D), which a given value must equal."
    )),
    "dim": Option(int, low=1, optional=True)(None, (
        "D, the dimension of the latent vectors the quantizer receives (and of the decoder-side codes). None: 64, "
        "or the D the quantizer's options fix (FSQ: one per level; LFQ, BSQ: 10 bits)."
    )),
}


MAX_CODEBOOK_SIZE = 2**63
"""The most codes a quantizer can have: its ids, in [0, K), are `torch.long`."""


@dataclass(frozen=True)
class CodeSpace:
    """The shape of a quantizer's tokens: K codes of dimension D, R codes per position."""

    codebook_size: int
    dim: int
    codes_per_position: int = 1


@dataclass
class ParameterGroup:
    """Parameters of a quantizer that learn at `lr_multiplier` x the training learning rate, without
    weight decay (see `Quantizer.parameter_groups`)."""

    params: list[nn.Parameter]
    lr_multiplier: float


def fixed_size(label: str, asked: int | None, fixed: int, what: str, where: str) -> int:
    """`fixed`, the K or D (`label`) that a quantizer's options give (`what` names it with its value);
    ValueError naming `where` when `asked` is another value."""
    if asked is not None and asked != fixed:
        raise ValueError(f"{where} {label} ({asked}) must equal {what} (leave it out to have it filled in)")
    return fixed


class Quantizer(Configurable, nn.Module):
    """Base class of all quantizers; see the module docstring for the interface.

    Args before the options: `codebook_size` (K) and `dim` (D), see `SIZE_ARGUMENTS`; a subclass's
    options follow as keyword arguments, each checked against its declaration in `options` and
    kept as an attribute. The sizes are the `code_space` that K, D and the options give.
    """

    def __init__(self, codebook_size: int | None = None, dim: int | None = None, **options: Any):
        super().__init__()
        self.set_options(options)
        space = self.resolve_code_space(self.option_values(), codebook_size, dim)
        self.codebook_size, self.dim, self.codes_per_position = space.codebook_size, space.dim, space.codes_per_position

    @classmethod
    def documented_options(cls) -> dict[str, Option]:
        return {**SIZE_ARGUMENTS, **cls.options}

    @classmethod
    def resolve_code_space(
        cls, options: Mapping[str, Any], codebook_size: int | None = None, dim: int | None = None,
        where: str | None = None,
    ) -> CodeSpace:
        """K, D and R of this quantizer built with `codebook_size`, `dim` and the (complete, checked)
        `options`: the sizes checked, then `code_space`."""
        where = cls._where(where)
        check_options(SIZE_ARGUMENTS, {"codebook_size": codebook_size, "dim": dim}, where)
        space = cls.code_space(options, codebook_size, dim, where)
        if space.codebook_size > MAX_CODEBOOK_SIZE:
            raise ValueError(
                f"the {where}s give K = {space.codebook_size:,} codes: token ids are int64, which hold at most "
                f"{MAX_CODEBOOK_SIZE:,} (2^63) codes; choose a smaller code space"
            )
        return space

    # --- to implement -------------------------------------------------------------------------
    @classmethod
    def code_space(cls, options: Mapping[str, Any], codebook_size: int | None, dim: int | None, where: str) -> CodeSpace:
        """The code space for the (complete, checked) `options` and the K and D asked for (None: the
        default). A quantizer whose K, D or R follow from its options overrides this and raises
        `ValueError` naming `where` when an asked size contradicts them (`fixed_size`)."""
        return CodeSpace(
            DEFAULT_CODEBOOK_SIZE if codebook_size is None else codebook_size, DEFAULT_DIM if dim is None else dim
        )

    def _forward_rows(self, rows: torch.Tensor) -> QuantizerOutput:
        """Training path on fp32 rows `[N, D]`; returns quantized rows `[N, D]` and ids `[N]` (or
        `[N, R]`)."""
        raise NotImplementedError

    def _select_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """Deterministic ids `[N]` (or `[N, R]`) for fp32 rows `[N, D]`."""
        raise NotImplementedError

    def code_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder-side vectors `[n, D]` (fp32, differentiable) of the codes `ids` `[n]` in [0, K), all
        K of them when None (for a small K): rows of the `codebook` where there is one; a quantizer
        with implicit codes computes them (one with several codes per position says which level's
        codes these are)."""
        codebook = getattr(self, "codebook", None)
        if codebook is None:
            raise NotImplementedError(f"{type(self).__name__} has no codebook: its codes are implicit, so it must "
                                      "implement code_vectors")
        table = codebook.weight if ids is None else codebook.weight[ids]
        return table.float()

    def _embed_rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Decoder-side vectors `[N, D]` for the ids of N positions, `[N]` (or `[N, R]`), already
        range-checked: the codes themselves when R = 1."""
        return self.code_vectors(ids)

    def needs_initialization(self) -> bool:
        """Whether the next training batch must start the quantizer (`initialize`); never by default."""
        return False

    def initialize(self, rows: torch.Tensor) -> None:
        """Start the quantizer's state on the first training batch `rows` `[N, D]` (fp32, detached)."""

    def parameter_groups(self) -> list[ParameterGroup]:
        """The parameters that must learn at their own pace (a type's `quantizer_lr_multiplier`);
        every parameter learns with the backbone's by default."""
        return []

    # --- shared plumbing ----------------------------------------------------------------------
    def forward(self, z_e: torch.Tensor) -> QuantizerOutput:
        """The training path (in train mode) or its deterministic twin (in eval mode) for `z_e`
        `[B, D, *spatial]`; see the module docstring for non-finite training batches."""
        if not self.training:
            return self._quantize(z_e)
        self._to_rows(z_e)  # shape and dtype errors before the collective
        usable = usable_positions(z_e)
        if true_on_every_process(usable):
            return self._quantize(z_e)
        return self._quantize_without_updates(z_e, usable)

    def _quantize(self, z_e: torch.Tensor) -> QuantizerOutput:
        """`forward` proper: reshape to rows, the first batch's `initialize`, `_forward_rows` in
        fp32, reshape back."""
        rows, shape = self._to_rows(z_e)
        with fp32_no_autocast(z_e.device):
            self._initialize_if_needed(rows)
            out = self._forward_rows(rows.float())
        return QuantizerOutput(
            quantized=self._from_rows(out.quantized, shape).to(z_e.dtype),
            indices=self._ids_from_rows(out.indices, shape),
            losses=out.losses,
            stats=out.stats,
        )

    def _initialize_if_needed(self, rows: torch.Tensor) -> None:
        if self.training and self.needs_initialization():
            self.initialize(rows.detach().float())

    def _quantize_without_updates(self, z_e: torch.Tensor, usable: torch.Tensor) -> QuantizerOutput:
        """The training forward of a batch that is not usable on some process (`usable`: this
        process's `usable_positions`): run on a copy with zeros at the unusable positions (so that
        every process enters the same collectives and the autograd graph keeps its shape), restore
        the state, and hand back NaN at those positions and in the losses of this process."""
        usable = usable.unsqueeze(1)
        safe_copy = torch.where(usable, z_e, torch.zeros((), dtype=z_e.dtype, device=z_e.device))
        with _state_restored(self):
            out = self._quantize(safe_copy)
        not_a_number = torch.full((), math.nan, dtype=z_e.dtype, device=z_e.device)
        # The straight-through difference keeps the input's gradient path; NaN wherever it was unusable.
        difference = torch.where(usable, z_e - safe_copy, not_a_number)
        loss_marker = not_a_number if not bool(usable.all()) else not_a_number.new_zeros(())
        return replace(
            out,
            quantized=out.quantized + difference,
            losses={name: value + loss_marker for name, value in out.losses.items()},
            skipped_update=True,
        )

    @torch.no_grad()
    def select(self, z_e: torch.Tensor) -> torch.Tensor:
        """Deterministic token ids `[B, *spatial]` for `z_e` `[B, D, *spatial]`."""
        rows, shape = self._to_rows(z_e)
        with fp32_no_autocast(z_e.device):
            ids = self._select_rows(rows.float())
        return self._ids_from_rows(ids, shape)

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """Decoder-side vectors `[B, D, *spatial]` (fp32) for ids `[B, *spatial]` (`[B, *spatial, R]`
        with R codes per position)."""
        self.check_indices(indices)
        depth = self.codes_per_position
        positions = indices.shape if depth == 1 else indices.shape[:-1]
        flat = indices.reshape(-1, depth) if depth > 1 else indices.reshape(-1)
        with fp32_no_autocast(indices.device):
            vectors = self._embed_rows(flat.long())
        vectors = vectors.reshape(*positions, self.dim)
        return vectors.movedim(-1, 1).contiguous()

    def check_indices(self, indices: torch.Tensor) -> None:
        """Raise `TypeError`/`ValueError` unless `indices` are integer ids in [0, K), with the depth
        R last where the quantizer picks R > 1 codes per position."""
        if not isinstance(indices, torch.Tensor):
            raise TypeError(f"token ids must be a torch.Tensor, got {type(indices).__name__}")
        if indices.dtype == torch.bool or indices.is_floating_point() or indices.is_complex():
            raise TypeError(f"token ids must have an integer dtype (torch.long), got {indices.dtype}")
        depth = self.codes_per_position
        if depth > 1 and (indices.dim() < 2 or indices.shape[-1] != depth):
            raise ValueError(
                f"token ids of {type(self).__name__} must end with its {depth} codes per position, [B, ..., {depth}], "
                f"got shape {list(indices.shape)}"
            )
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
    def _ids_from_rows(ids: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        """Ids `[N]` (or `[N, R]`) of the rows of `z_e` of `shape` -> `[B, *spatial]` (or `[B, *spatial, R]`)."""
        return ids.reshape(shape[0], *shape[2:], *ids.shape[1:])

    @staticmethod
    def _from_rows(rows: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        batch, dim, spatial = shape[0], shape[1], shape[2:]
        return rows.reshape(batch, *spatial, dim).movedim(-1, 1).contiguous()

    def extra_repr(self) -> str:
        depth = f", codes_per_position={self.codes_per_position}" if self.codes_per_position > 1 else ""
        return f"codebook_size={self.codebook_size}, dim={self.dim}{depth}"


def sampled_code_vectors(quantizer: Quantizer, max_points: int | None, seed: int = 0) -> torch.Tensor:
    """The `code_vectors` `[n, D]` of at most `max_points` of the quantizer's codes (all K when None or
    K <= max_points; otherwise a seeded choice, in increasing id order: the same codes on every process
    for the same seed), differentiable as `code_vectors` is."""
    tensors = itertools.chain(quantizer.parameters(), quantizer.buffers())
    device = next(tensors, torch.empty(0)).device
    return quantizer.code_vectors(seeded_subset_ids(quantizer.codebook_size, max_points, seed).to(device))


@contextmanager
def _state_restored(module: nn.Module) -> Iterator[None]:
    """Run the block, then put every parameter and buffer of `module` back to its value before it.

    The values go back through `.data`, which autograd does not version: a graph built in the block
    (whose losses are NaN anyway) can still run backward instead of failing on an in-place change."""
    tensors = dict(module.named_parameters())
    tensors.update(module.named_buffers())
    saved = {name: tensor.detach().clone() for name, tensor in tensors.items()}
    try:
        yield
    finally:
        for name, tensor in tensors.items():
            tensor.data.copy_(saved[name])
