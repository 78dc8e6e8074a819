"""The interface every quantizer speaks (the maths they share is in `functional.py`).

A quantizer maps encoder output `z_e` of shape `[B, D, *spatial]` to

- `forward(z_e) -> QuantizerOutput`: the training path (stochastic where the method is), with the
  vectors handed to the decoder, the chosen ids, named loss terms and statistics;
- `select(z_e) -> LongTensor`: deterministic token ids (what `encode` uses);
- `embed(ids) -> Tensor [B, D, *spatial]`: the decoder-side vectors of given ids (what `decode` uses);
- `code_vectors(ids) -> Tensor [n, D]` and `code_sample(max_points, seed)`: the vectors of chosen
  codes, differentiable, for metrics, regularisers and model cards, which never need all K of them
  at once.

The id contract. Token ids are `torch.long` in [0, K). A quantizer picks `codes_per_position` = R
codes per grid position: R = 1 gives ids `[B, *spatial]` (`[B, h, w]` for images); R > 1 (a
residual quantizer's depth) gives `[B, *spatial, R]`, the depth last, level 0 first. Flattened for a
language model, an image's ids run position by position in row-major order, a position's R codes
consecutively (`TokenLayout`); every level's codes share the range [0, K).

K and R may follow from a quantizer's options (FSQ: K = prod(levels)): `derived_codebook_size` and
`derived_codes_per_position` say so, and the tokenizer config fills them in. A quantizer whose codes
are rows of a table holds a `Codebook` (`self.codebook`: the table, its first-batch k-means, EMA
statistics, usage and restarts); one whose codes are implicit holds none and computes
`code_vectors` from the ids.

Subclasses implement the row-wise versions (`_forward_rows`, `_select_rows`, and `code_vectors`
where there is no codebook) on `[N, D]` matrices, may start themselves on the first training batch
(`needs_initialization` / `initialize`), and declare their options; this base class does the
reshaping, the input checks, the option checks and the `Args` section of their docstrings. All
quantizer maths runs in fp32 with autocast disabled, whatever the surrounding precision.

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
from typing import Any, ClassVar

import torch
from torch import nn

from ..parallel.collectives import true_on_every_process
from ..options import CODEBOOK_SIZE, POSITIVE_INT, Option, append_options_doc, check_options
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


# The arguments every quantizer takes, documented once.
BASE_ARGUMENTS = {
    "codebook_size": CODEBOOK_SIZE.documented("K, the number of codes; ids lie in [0, K)."),
    "dim": POSITIVE_INT.documented("D, the dimension of the latent vectors (and of the decoder-side codes)."),
}


class Quantizer(nn.Module):
    """Base class of all quantizers; see the module docstring for the interface.

    A subclass declares its options in `options` (name -> `vqtok.options.Option`): the same
    declaration checks the constructor's keyword arguments here and the fields of the tokenizer
    config that builds the quantizer, and documents them (the `Args` section of the subclass's
    docstring is written from `options`, the constructor's defaults and `option_notes`), so each
    type, range and meaning is written once. Rules that tie several options together go in an
    override of `check_options`.
    """

    options: ClassVar[dict[str, Option]] = {}
    option_notes: ClassVar[dict[str, str]] = {}
    """What a quantizer says about an option beyond its declaration (why its default differs from
    the paper's, ...); also shown in the tokenizer config's docstring."""
    legacy_state_names: ClassVar[dict[str, str]] = {}
    """Names of this quantizer's tensors in vqtok 0.1 checkpoints -> today's (see `vqtok.hub.legacy`)."""

    def __init__(self, codebook_size: int, dim: int, codes_per_position: int = 1):
        super().__init__()
        where = f"{type(self).__name__} argument"
        BASE_ARGUMENTS["codebook_size"].check("codebook_size", codebook_size, where)
        BASE_ARGUMENTS["dim"].check("dim", dim, where)
        self.codebook_size = codebook_size
        self.dim = dim
        self.codes_per_position = codes_per_position

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        append_options_doc(cls, {**BASE_ARGUMENTS, **cls.options}, cls.option_notes)

    @classmethod
    def check_options(cls, values: Mapping[str, Any], where: str | None = None) -> None:
        """Raise `TypeError`/`ValueError` naming the first option in `values` that `options` rejects."""
        check_options(cls.options, values, where or f"{cls.__name__} argument")

    @classmethod
    def derived_codebook_size(cls, dim: int, options: Mapping[str, Any]) -> int | None:
        """K as it follows from the vectors' dimension `dim` and the quantizer's other options (FSQ:
        the product of its levels; LFQ: 2^dim), or None when K is free (a table of any size); the
        tokenizer config fills `codebook_size` from it."""
        return None

    @classmethod
    def derived_codes_per_position(cls, options: Mapping[str, Any]) -> int:
        """R, the codes picked per position for these options (a residual quantizer's depth; 1 here)."""
        return 1

    @classmethod
    def check_codebook_size(cls, codebook_size: Any, dim: int, options: Mapping[str, Any], where: str | None = None) -> None:
        """Raise `TypeError`/`ValueError` unless `codebook_size` is a valid K for `dim` and these
        options: an int >= 2, equal to the derived K where they fix one."""
        where = where or f"{cls.__name__} argument"
        cls.check_dim(dim, options, where)
        CODEBOOK_SIZE.check("codebook_size", codebook_size, where)
        derived = cls.derived_codebook_size(dim, options)
        if derived is not None and codebook_size != derived:
            raise ValueError(
                f"{where} `codebook_size` ({codebook_size}) must equal the {derived} codes that {cls.__name__}'s "
                "options give (leave it out to have it filled in)"
            )

    @classmethod
    def check_dim(cls, dim: int, options: Mapping[str, Any], where: str | None = None) -> None:
        """Raise `ValueError` unless the latent dimension `dim` suits these options (FSQ: one level
        per dimension); any dimension by default."""

    def retired_legacy_state(self) -> set[str]:
        """Today's names of the tensors that vqtok 0.1 saved for this quantizer (with these options) and
        that it no longer keeps; none by default."""
        return set()

    def restore_legacy_state(self, missing: set[str]) -> set[str]:
        """After loading a vqtok 0.1 checkpoint that lacks the tensors `missing` (names relative to
        the quantizer), set those that follow from the loaded state; returns the names set."""
        return set()

    def _set_options(self, **values) -> None:
        """Check `values` (see `check_options`) and keep each as an attribute (numbers as floats)."""
        self.check_options(values)
        for name, value in values.items():
            is_number = self.options[name].kind is float and value is not None
            setattr(self, name, float(value) if is_number else value)

    # --- to implement -------------------------------------------------------------------------
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

    def _embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Decoder-side vectors `[N, D]` for the ids of N positions, `[N]` (or `[N, R]`), already
        range-checked: the codes themselves when R = 1."""
        return self.code_vectors(ids)

    def needs_initialization(self) -> bool:
        """Whether the next training batch must start the quantizer (`initialize`); never by default."""
        return False

    def initialize(self, rows: torch.Tensor) -> None:
        """Start the quantizer's state on the first training batch `rows` `[N, D]` (fp32, detached)."""

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
            vectors = self._embed_ids(flat.long())
        vectors = vectors.reshape(*positions, self.dim)
        return vectors.movedim(-1, 1).contiguous()

    def code_sample(self, max_points: int | None, seed: int = 0) -> torch.Tensor:
        """The vectors `[n, D]` of at most `max_points` codes (all K when None or K <= max_points;
        otherwise a seeded choice, in increasing id order: the same codes on every process for the
        same seed), differentiable as `code_vectors` is."""
        tensors = itertools.chain(self.parameters(), self.buffers())
        device = next(tensors, torch.empty(0)).device
        return self.code_vectors(seeded_subset_ids(self.codebook_size, max_points, seed).to(device))

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
