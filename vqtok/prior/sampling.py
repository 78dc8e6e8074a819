"""Token grids from nothing, three ways (the schemes of the VQ-VAE tutorial), and their decoding.

- `sample_uniform`: every code independently and uniformly from the K codes;
- `sample_from_histogram`: every code independently from the empirical code frequencies of a
  tokenized dataset (`code_counts`);
- `TokenPrior.generate_codes`: autoregressively from a trained prior, through `transformers`'
  `generate` (temperature, top-k, top-p).

`decode_samples` checks that the codes fit the tokenizer (K, grid, range) before decoding them.
"""

from __future__ import annotations

import math

import torch

from ..quantizers.functional import entropy_from_counts
from ..tokens.layout import check_codes
from ..validation import check_positive_int

SCHEMES = ("uniform", "histogram", "prior")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_num_samples(num_samples) -> None:
    """ValueError unless `num_samples` is a positive int."""
    check_positive_int("num_samples", num_samples)


def check_seed(seed) -> None:
    """ValueError unless `seed` is an int in [0, 2^64) (what `torch.Generator.manual_seed` takes)."""
    if not _is_int(seed) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an int in [0, 2**64), got {seed!r}")


def check_sampling_arguments(grid, seed, codebook_size=None) -> tuple[int, ...]:
    """ValueError unless `grid` is a non-empty tuple of positive ints (one image's token shape),
    `seed` an int in [0, 2^64) (what `torch.Generator.manual_seed` takes) and `codebook_size`, when
    given, a positive int. Returns the grid as a tuple."""
    shape = tuple(grid) if isinstance(grid, (tuple, list, torch.Size)) else None
    if not shape or not all(_is_int(size) and size >= 1 for size in shape):
        raise ValueError(f"grid must be one image's token shape, a tuple of positive ints such as (16, 16), got {grid!r}")
    check_seed(seed)
    if codebook_size is not None and (not _is_int(codebook_size) or codebook_size < 1):
        raise ValueError(f"codebook_size must be a positive int, got {codebook_size!r}")
    return shape


def sample_uniform(codebook_size: int, grid: tuple[int, ...], num_samples: int, seed: int = 0) -> torch.LongTensor:
    """`num_samples` grids `[N, *grid]` of codes drawn independently and uniformly from [0, K); `grid`
    is one image's token shape, `(h, w)` or `(h, w, R)`."""
    check_num_samples(num_samples)
    grid = check_sampling_arguments(grid, seed, codebook_size)
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(codebook_size, (num_samples, *grid), generator=generator)


def code_counts(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """How often each of the K codes occurs in `codes` (any shape; ValueError for ids outside [0, K))."""
    flat = torch.as_tensor(codes).reshape(-1)
    check_codes(flat[None], codebook_size, (1, flat.numel()))
    return torch.bincount(flat, minlength=codebook_size)


def histogram_bits_per_token(train_codes: torch.Tensor, eval_codes: torch.Tensor | None, codebook_size: int) -> dict:
    """Code lengths of the i.i.d. histogram model, in bits per token: `histogram_entropy_bits`, the
    unigram entropy of the training codes, and `histogram_held_out_bits`, the cross-entropy of
    `eval_codes` under the training histogram (add-1/2 smoothed, so that an unseen code costs a
    finite length; NaN without `eval_codes`)."""
    counts = code_counts(train_codes, codebook_size).double()
    if counts.sum() == 0:
        raise ValueError("train_codes is empty: there is no histogram to measure")
    entropy = float(entropy_from_counts(counts)) / math.log(2)
    smoothed = (counts + 0.5) / (counts.sum() + 0.5 * codebook_size)
    held_out = math.nan
    if eval_codes is not None:
        eval_counts = code_counts(eval_codes, codebook_size).double()  # checks the range: -1 must not index from the end
        if eval_counts.sum() == 0:
            raise ValueError("eval_codes is empty: pass None to measure the training histogram only")
        held_out = float(-(eval_counts * smoothed.log2()).sum() / eval_counts.sum())
    return {"histogram_entropy_bits": entropy, "histogram_held_out_bits": held_out}


def sample_from_histogram(counts: torch.Tensor, grid: tuple[int, ...], num_samples: int, seed: int = 0) -> torch.LongTensor:
    """`num_samples` grids `[N, *grid]` of codes drawn independently with probabilities proportional
    to `counts` `[K]` (a code never seen is never drawn); `grid` as in `sample_uniform`."""
    check_num_samples(num_samples)
    grid = check_sampling_arguments(grid, seed)
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.dim() != 1 or counts.numel() < 2 or (counts < 0).any() or not torch.isfinite(counts).all():
        raise ValueError(f"counts must be a vector of K >= 2 finite non-negative numbers, got shape {list(counts.shape)}")
    if counts.sum() <= 0:
        raise ValueError("counts are all zero: there is no histogram to sample from")
    generator = torch.Generator().manual_seed(seed)
    draws = torch.multinomial(counts, num_samples * math.prod(grid), replacement=True, generator=generator)
    return draws.reshape(num_samples, *grid)


@torch.no_grad()
def decode_samples(tokenizer, codes: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Images `[N, C, H, W]` in [-1, 1] for sampled codes `[N, *token_shape]`; ValueError when the
    codes' grid or range does not fit the tokenizer."""
    config = tokenizer.config
    codes = check_codes(codes, config.codebook_size, config.token_shape, what="sampled codes")
    codes = codes.reshape(codes.shape[0], *config.token_shape)
    return torch.cat([tokenizer.decode(chunk).cpu() for chunk in codes.split(batch_size)])
