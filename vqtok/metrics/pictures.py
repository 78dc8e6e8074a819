"""Pictures of what a tokenizer does: originals above their reconstructions, and grids of images
(decoded samples)."""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image

from ..processing import to_uint8_images


def save_reconstruction_grid(
    originals: torch.Tensor,
    reconstructions: torch.Tensor | list[torch.Tensor],
    path: str | os.PathLike,
    columns: int = 8,
    scale: int = 4,
    gap: int = 2,
) -> str:
    """Save a PNG with rows of originals, each followed by a row of their reconstructions (one row per
    set when several are given, e.g. two tokenizers side by side).

    Args:
        originals: `[B, C, H, W]` in [-1, 1].
        reconstructions: one tensor of the originals' shape, or a list of them.
        path: where to write the PNG (parent folders are created).
        columns: images per row.
        scale: nearest-neighbour enlargement, so small images stay visible.
        gap: white pixels between images (before enlargement).
    Returns:
        The path written.
    """
    sets = [reconstructions] if isinstance(reconstructions, torch.Tensor) else list(reconstructions)
    for reconstruction in sets:
        if originals.shape != reconstruction.shape:
            raise ValueError(
                f"originals and reconstructions must have the same shape, got {list(originals.shape)} "
                f"and {list(reconstruction.shape)}"
            )
    groups = [to_uint8_images(images) for images in [originals, *sets]]
    rows = [group[start : start + columns] for start in range(0, len(originals), columns) for group in groups]
    return _save_rows(rows, path, columns, scale, gap)


def save_image_grid(
    pixel_values: torch.Tensor, path: str | os.PathLike, columns: int = 8, scale: int = 4, gap: int = 2
) -> str:
    """Save a PNG of images `[B, C, H, W]` in [-1, 1], `columns` per row (other arguments as in
    `save_reconstruction_grid`). Returns the path written."""
    images = to_uint8_images(pixel_values)
    return _save_rows([images[start : start + columns] for start in range(0, len(images), columns)], path, columns, scale, gap)


def _save_rows(rows: list[np.ndarray], path: str | os.PathLike, columns: int, scale: int, gap: int) -> str:
    """Draw rows of uint8 images (`[n <= columns, H, W, 3]` each) one under the other on white, with
    `gap` pixels around each, enlarge `scale` times (nearest neighbour) and save as PNG."""
    height, width = rows[0].shape[1:3]
    cell_h, cell_w = height + gap, width + gap
    canvas = np.full((len(rows) * cell_h + gap, columns * cell_w + gap, 3), 255, dtype=np.uint8)
    for row, images in enumerate(rows):
        for col, image in enumerate(images):
            y, x = gap + row * cell_h, gap + col * cell_w
            canvas[y : y + height, x : x + width] = image
    image = Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.Resampling.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    image.save(path)
    return str(path)
