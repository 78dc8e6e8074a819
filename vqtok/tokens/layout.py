"""`TokenLayout`: how a grid of image codes is laid out as one flat sequence of ids, and back.

A tokenizer gives codes `[B, h, w]` in [0, K), or `[B, h, w, R]` when its quantizer picks R codes
per position (a residual quantizer's depth, level 0 first); a 1-D backbone's are a sequence `[B, L]`
(`[B, L, R]`), laid out the same way, position by position. A language model reads flat sequences:
the codes position by position in row-major order, a position's R codes consecutively, each shifted
by `id_offset` (so that image tokens can sit after a text vocabulary; every level's codes share the
range [0, K)), optionally framed by a BOS and an EOS id::

    [bos] c(0,0)+offset c(0,1)+offset ... c(h-1,w-1)+offset [eos]                   (R = 1)
    [bos] c(0,0,0) c(0,0,1) ... c(0,0,R-1) c(0,1,0) ... c(h-1,w-1,R-1) [eos]      (R > 1, offset added)

The layout is what `vqtok.tokenize_dataset` writes into `input_ids` and what the prior and the
sampling code read back; it travels with a saved token dataset as `vqtok_tokens.json`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields

import torch

from ..options import CODEBOOK_SIZE, NON_NEGATIVE_INT, POSITIVE_INT, Option, check_options
from ..validation import describe_tokens, grid_fields, grid_of, token_shape

LAYOUT_FILE = "vqtok_tokens.json"

_OPTIONS = {
    "codebook_size": CODEBOOK_SIZE,
    "grid_height": Option(int, low=1, optional=True),
    "grid_width": Option(int, low=1, optional=True),
    "num_latent_tokens": Option(int, low=1, optional=True),
    "id_offset": NON_NEGATIVE_INT,
    "bos_token_id": Option(int, low=0, optional=True),
    "eos_token_id": Option(int, low=0, optional=True),
    "tokenizer": Option(str, optional=True),
    "codes_per_position": POSITIVE_INT,
}


@dataclass(frozen=True)
class TokenLayout:
    """The flat-sequence layout of a token grid.

    Args:
        codebook_size: K; codes lie in [0, K) and are stored as `code + id_offset`.
        grid_height / grid_width: the token grid (h, w) of one image (None for a 1-D sequence).
        id_offset: added to every code (image ids then lie in [id_offset, id_offset + K)).
        bos_token_id / eos_token_id: ids put before / after each image's tokens (None: none). They
            must lie outside the image ids' range.
        tokenizer: the repo id or path of the tokenizer that made the tokens (provenance only).
        codes_per_position: R, the codes per grid position (1 for most tokenizers).
        num_latent_tokens: L, for the 1-D token sequence of one image (a `titok` backbone's), in place
            of the grid.
    """

    codebook_size: int
    grid_height: int | None = None
    grid_width: int | None = None
    id_offset: int = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    tokenizer: str | None = None
    codes_per_position: int = 1
    num_latent_tokens: int | None = None

    def __post_init__(self):
        check_options(_OPTIONS, asdict(self), "token layout option")
        self.grid  # noqa: B018 - the fields hold a grid or a sequence, or this raises
        for name in ("bos_token_id", "eos_token_id"):
            value = getattr(self, name)
            if value is not None and self.id_offset <= value < self.id_offset + self.codebook_size:
                raise ValueError(
                    f"{name}={value} lies among the image token ids [{self.id_offset}, "
                    f"{self.id_offset + self.codebook_size}) (id_offset={self.id_offset}, K={self.codebook_size}); "
                    "choose an id outside that range"
                )
        if self.bos_token_id is not None and self.bos_token_id == self.eos_token_id:
            raise ValueError(f"bos_token_id and eos_token_id must differ, both are {self.bos_token_id}")

    @classmethod
    def for_tokenizer(cls, tokenizer, **options) -> TokenLayout:
        """The layout of a vqtok tokenizer's (or its config's) codes: K, the grid and the codes per
        position from its config, `tokenizer` from its `name_or_path` unless given; `options` as in
        the class."""
        config = getattr(tokenizer, "config", tokenizer)
        options.setdefault("tokenizer", getattr(config, "name_or_path", None) or None)
        options.setdefault("codes_per_position", config.codes_per_position)
        return cls(config.codebook_size, **grid_fields(config.token_grid), **options)

    @property
    def grid(self) -> tuple[int, ...]:
        """`(h, w)`, or `(L,)` for a 1-D sequence."""
        return grid_of(self.grid_height, self.grid_width, self.num_latent_tokens, "token layout")

    @property
    def token_shape(self) -> tuple[int, ...]:
        """The shape of one image's codes: `(h, w)` (or `(L,)`), then R for R > 1 codes per position."""
        return token_shape(self.grid, self.codes_per_position)

    @property
    def tokens_per_image(self) -> int:
        return math.prod(self.token_shape)

    @property
    def sequence_length(self) -> int:
        """Ids per image: the tokens plus BOS and EOS where set."""
        return self.tokens_per_image + (self.bos_token_id is not None) + (self.eos_token_id is not None)

    def check_compatible(self, other, what: str = "tokenizer", owner: str = "the tokens") -> None:
        """ValueError unless `other` (a tokenizer, a prior, their config, or a layout) has this
        layout's K and token positions (grid or sequence, and codes per position); `what` and `owner`
        name the two sides in the message."""
        config = getattr(other, "config", other)
        grid = tuple(config.grid if isinstance(config, TokenLayout) else config.token_grid)
        if (config.codebook_size, grid, config.codes_per_position) != (self.codebook_size, self.grid, self.codes_per_position):
            raise ValueError(
                f"{owner} has K={self.codebook_size} codes on a {self.describe()} grid, but the "
                f"{what} has K={config.codebook_size} on a {describe_tokens(grid, config.codes_per_position)} grid"
            )

    def describe(self) -> str:
        """The token positions in words: "8x8", "8x8 (x4 codes per position)", "32 (1-D)"."""
        return describe_tokens(self.grid, self.codes_per_position)

    def to_sequences(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes `[B, *token_shape]` (or `[B, tokens_per_image]`) -> id sequences `[B, sequence_length]`
        (torch.long)."""
        flat = check_codes(codes, self.codebook_size, self.token_shape).reshape(codes.shape[0], -1).long() + self.id_offset
        parts = [flat]
        if self.bos_token_id is not None:
            parts.insert(0, flat.new_full((flat.shape[0], 1), self.bos_token_id))
        if self.eos_token_id is not None:
            parts.append(flat.new_full((flat.shape[0], 1), self.eos_token_id))
        return torch.cat(parts, dim=1)

    def to_codes(self, sequences) -> torch.Tensor:
        """Id sequences `[B, sequence_length]` -> codes `[B, *token_shape]` in [0, K); ValueError naming
        the first row whose length, BOS/EOS or image ids do not fit the layout."""
        sequences = torch.as_tensor(sequences)
        if sequences.dim() != 2 or sequences.shape[1] != self.sequence_length:
            raise ValueError(
                f"token sequences must have shape [B, {self.sequence_length}] ({self.describe()} "
                f"tokens{' + BOS' if self.bos_token_id is not None else ''}"
                f"{' + EOS' if self.eos_token_id is not None else ''}), got shape {list(sequences.shape)}"
            )
        start = int(self.bos_token_id is not None)
        for column, name in ((0, "bos_token_id"), (-1, "eos_token_id")):
            expected = getattr(self, name)
            if expected is not None and (bad := (sequences[:, column] != expected).nonzero()).numel():
                row = int(bad[0])
                raise ValueError(f"row {row} has id {int(sequences[row, column])} where {name}={expected} belongs")
        codes = sequences[:, start : start + self.tokens_per_image].long() - self.id_offset
        check_codes(codes, self.codebook_size, self.token_shape, what="image token ids", offset=self.id_offset)
        return codes.reshape(-1, *self.token_shape)

    def save(self, folder: str | os.PathLike) -> str:
        """Write the layout as `folder/vqtok_tokens.json`; returns the path."""
        path = os.path.join(folder, LAYOUT_FILE)
        os.makedirs(folder, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(asdict(self), handle, indent=2)
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike) -> TokenLayout:
        """Read `folder/vqtok_tokens.json`: OSError naming the file when it is missing, ValueError
        naming it when it is not JSON, not an object, or holds unknown or invalid fields."""
        path = os.path.join(folder, LAYOUT_FILE)
        if not os.path.isfile(path):
            raise OSError(f"{folder} has no {LAYOUT_FILE}: not a token dataset saved by vqtok.save_tokenized")
        try:
            with open(path, encoding="utf-8") as handle:
                values = json.load(handle)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is not valid JSON ({error}); rewrite it with TokenLayout.save or save_tokenized") from None
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a JSON object of token layout fields, got {type(values).__name__}")
        unknown = sorted(set(values) - {field.name for field in fields(cls)})
        if unknown:
            raise ValueError(f"{path} holds unknown token layout field(s) {unknown}; known: {[field.name for field in fields(cls)]}")
        try:
            return cls(**values)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{path}: {error}") from None


def check_codes(codes, codebook_size: int, shape: tuple[int, ...], what: str = "codes", offset: int = 0) -> torch.Tensor:
    """Raise unless `codes` is an integer tensor `[B, *shape]` or `[B, prod(shape)]` for one image's
    token `shape` (`(h, w)`, or `(h, w, R)`), with every value in [0, K); `offset` only shifts the
    range named in the message. Returns `codes`."""
    if not isinstance(codes, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, got {type(codes).__name__}")
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise TypeError(f"{what} must have an integer dtype, got {codes.dtype}")
    shape, count = tuple(shape), math.prod(shape)
    if tuple(codes.shape[1:]) not in (shape, (count,)):
        raise ValueError(
            f"{what} must have shape [B, {', '.join(map(str, shape))}] or [B, {count}] (the tokenizer's grid), "
            f"got shape {list(codes.shape)}"
        )
    if codes.numel():
        low, high = int(codes.min()), int(codes.max())
        if low < 0 or high >= codebook_size:
            raise ValueError(
                f"{what} must lie in [{offset}, {offset + codebook_size}) (K={codebook_size}), "
                f"got values in [{low + offset}, {high + offset}]"
            )
    return codes
