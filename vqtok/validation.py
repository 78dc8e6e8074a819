"""Input checks with errors that name the argument, what was expected and what was received."""

from __future__ import annotations

import math
import os
import tempfile

import torch

# Pixel values may overshoot [-1, 1] slightly after resampling; beyond this they are a mistake
# (typically images in [0, 255]).
PIXEL_RANGE_TOLERANCE = 1e-2


def check_positive_int(name: str, value, optional: bool = False) -> None:
    """ValueError naming `name` unless `value` is an int >= 1, not a bool (or None, when `optional`)."""
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if optional else ''}, got {value!r}")


def _check_has_data(name: str, tensor: torch.Tensor) -> None:
    """A tensor on the `meta` device has a shape but no values: nothing can be computed from it."""
    if tensor.device.type == "meta":
        raise ValueError(
            f"{name} is on the meta device (a shape without data), got shape {list(tensor.shape)}; "
            "pass a tensor holding values, e.g. on the CPU or the model's device"
        )


def check_pixel_values(pixel_values, in_channels: int, factor: int, exact_size: int | None = None) -> None:
    """Raise unless `pixel_values` is a finite float tensor `[B, in_channels, H, W]` in [-1, 1]
    with H and W positive multiples of `factor` (both `exact_size` when given: a 1-D backbone's
    decoder makes images of one size), holding data (not on the `meta` device)."""
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(
            f"pixel_values must be a torch.Tensor of shape [B, C, H, W], got {type(pixel_values).__name__}; "
            "convert images with vqtok.VQImageProcessor"
        )
    _check_has_data("pixel_values", pixel_values)
    if not pixel_values.is_floating_point():
        raise TypeError(
            f"pixel_values must be floating point in [-1, 1], got dtype {pixel_values.dtype}; "
            "integer images must be scaled first (x / 127.5 - 1), e.g. with vqtok.VQImageProcessor"
        )
    if pixel_values.dim() != 4:
        raise ValueError(f"pixel_values must have shape [B, C, H, W], got shape {list(pixel_values.shape)}")
    batch, channels, height, width = pixel_values.shape
    if channels != in_channels:
        raise ValueError(f"pixel_values must have {in_channels} channel(s) (config.in_channels), got {channels}")
    for name, side in (("height", height), ("width", width)):
        if side < factor or side % factor:
            raise ValueError(
                f"pixel_values {name} must be a positive multiple of the downsampling factor {factor}, "
                f"got {side}; resize or crop the images first"
            )
    if exact_size is not None and (height, width) != (exact_size, exact_size):
        raise ValueError(f"pixel_values must be {exact_size}x{exact_size} (config.image_size: a 1-D token backbone "
                         f"encodes images of one size), got {height}x{width}; resize or crop the images first")
    if batch == 0:
        raise ValueError("pixel_values is an empty batch (B = 0)")
    if not torch.isfinite(pixel_values).all():
        raise ValueError("pixel_values contains NaN or infinite values")
    check_pixel_range(pixel_values)


def check_pixel_range(pixel_values: torch.Tensor, name: str = "pixel_values") -> None:
    """Raise `ValueError` naming `name` unless the values of `pixel_values` lie in [-1, 1] (up to
    rounding): float images in 0..255 or 0..1 measured as if in [-1, 1] give wrong figures silently."""
    low, high = float(pixel_values.detach().min()), float(pixel_values.detach().max())
    if low < -1 - PIXEL_RANGE_TOLERANCE or high > 1 + PIXEL_RANGE_TOLERANCE:
        raise ValueError(
            f"{name} must lie in [-1, 1], got values in [{low:.3g}, {high:.3g}]; "
            "scale [0, 255] images with x / 127.5 - 1 (vqtok.VQImageProcessor does this)"
        )


def token_shape(grid: tuple[int, ...], codes_per_position: int) -> tuple[int, ...]:
    """The shape of one image's ids (the id contract): the grid `(h, w)` (or the 1-D sequence `(L,)`),
    then R for R > 1 codes per position."""
    return tuple(grid) if codes_per_position == 1 else (*grid, codes_per_position)


def grid_fields(grid: tuple[int, ...]) -> dict[str, int | None]:
    """The fields of token positions `(h, w)` or `(L,)` in a `TokenLayout` or a `PriorConfig`:
    `grid_height`, `grid_width` and `num_latent_tokens`, the unused ones None."""
    if len(grid) == 1:
        return {"grid_height": None, "grid_width": None, "num_latent_tokens": grid[0]}
    return {"grid_height": grid[0], "grid_width": grid[1], "num_latent_tokens": None}


def grid_of(grid_height: int | None, grid_width: int | None, num_latent_tokens: int | None,
            owner: str) -> tuple[int, ...]:
    """The token positions the fields of `grid_fields` give, `(h, w)` or `(L,)`; `ValueError` naming
    `owner` unless they hold exactly one of the two (a grid with both sides, or a sequence)."""
    if num_latent_tokens is None and None not in (grid_height, grid_width):
        return grid_height, grid_width
    if num_latent_tokens is not None and (grid_height, grid_width) == (None, None):
        return (num_latent_tokens,)
    raise ValueError(
        f"{owner}: a grid (grid_height and grid_width) or a 1-D sequence (num_latent_tokens), one of the two; got "
        f"grid_height={grid_height}, grid_width={grid_width}, num_latent_tokens={num_latent_tokens}"
    )


def describe_tokens(grid: tuple[int, ...], codes_per_position: int = 1) -> str:
    """`(8, 8)` -> "8x8", with R = 4 "8x8 (x4 codes per position)"; a 1-D `(32,)` -> "32 (1-D)"."""
    text = "x".join(map(str, grid)) if len(grid) == 2 else f"{grid[0]} (1-D)"
    return text if codes_per_position == 1 else f"{text} (x{codes_per_position} codes per position)"


_WIDE_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)


def check_token_grid(input_ids, grid: tuple[int, ...], codes_per_position: int = 1) -> torch.Tensor:
    """Return `input_ids` as `[B, *grid]`, or `[B, *grid, R]` with R > 1 codes per position. Accepts a
    grid `[B, h, w(, R)]` of any h, w (a 2-D `grid`), the sequence `[B, L(, R)]` of a 1-D one (its L
    exactly: each position has its own learnt embedding), or the flattening `[B, prod(grid) * R]`
    (position-major, depth last); holding data (not on the `meta` device) and at least one token per
    image. Dtype and range are checked by the quantizer."""
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"input_ids must be a torch.Tensor, got {type(input_ids).__name__}")
    _check_has_data("input_ids", input_ids)
    if input_ids.dtype in _WIDE_UNSIGNED:  # torch has few kernels for them (not even min / max): read as int64
        input_ids = input_ids.to(torch.int64)
    shape, depth = token_shape(grid, codes_per_position), codes_per_position
    sequence = len(grid) == 1
    axes = ("L",) if sequence else ("h", "w")
    full = f"[B, {', '.join(axes)}{f', {depth}' if depth > 1 else ''}]"
    flat = f"[B, {'*'.join(axes)}{f'*{depth}' if depth > 1 else ''}]"
    if input_ids.dim() >= 2 and input_ids.numel() == 0:
        raise ValueError(
            f"input_ids is empty, got shape {list(input_ids.shape)}; decode needs at least one image "
            "(B > 0) of at least one token"
        )
    if tuple(input_ids.shape[1:]) == shape:
        return input_ids
    if not sequence and input_ids.dim() == 1 + len(shape) and (depth == 1 or input_ids.shape[-1] == depth):
        return input_ids  # a grid of another size
    count = math.prod(shape)
    if input_ids.dim() == 2:
        if input_ids.shape[1] != count:
            tokens = f"{count} = {'x'.join(map(str, shape))}" if len(shape) > 1 else f"{count}"
            raise ValueError(
                f"{'flattened ' if len(shape) > 1 else ''}input_ids must have {tokens} tokens per image (the "
                f"config's {'sequence' if sequence else 'grid'}), got shape {list(input_ids.shape)}"
                + ("" if sequence else f"; pass {full} for other grid sizes")
            )
        return input_ids.reshape(input_ids.shape[0], *shape)
    raise ValueError(
        f"input_ids must have shape {full} or {flat} (= [B, {', '.join(map(str, shape))}] or [B, {count}] for the "
        f"config's {'sequence' if sequence else 'grid'}), got shape {list(input_ids.shape)}"
    )


def check_output_folder(path: str | os.PathLike, option: str = "training.output_dir") -> None:
    """OSError naming `option` unless `path` is a folder this process can write into (made when
    missing): run before any work, so that a file or a read-only folder does not fail a finished run."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise OSError(f"{option} {path!r} is a file, not a folder: choose a folder to write into")
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise OSError(f"{option} {path!r} cannot be written into ({error.strerror or error}): choose another folder") from None
