"""Evaluation of a tokenizer: held-out reconstruction and codebook metrics (`metrics`) and the
pictures drawn from them (`visualize`)."""

from ..processing import to_uint8_images
from ..metrics.pixels import per_image_mse, psnr_from_mse
from .metrics import codebook_topology, evaluate_tokenizer
from .visualize import save_image_grid, save_reconstruction_grid

__all__ = [
    "codebook_topology",
    "evaluate_tokenizer",
    "per_image_mse",
    "psnr_from_mse",
    "save_image_grid",
    "save_reconstruction_grid",
    "to_uint8_images",
]
