"""`VQImageProcessor`: PIL images, NumPy arrays or tensors -> `pixel_values` in [-1, 1], and back.

A `transformers` image processor (PIL backend, no torchvision needed), so it saves to and loads
from `preprocessor_config.json` next to a tokenizer and works with `AutoImageProcessor`-style code.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ImagesKwargs

from .configuration import VQTokenizerConfig


class VQImageProcessorKwargs(ImagesKwargs, total=False):
    """Extra argument of `VQImageProcessor`: `num_channels` (1 = greyscale output, 3 = RGB)."""

    num_channels: int


_LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def _to_luma(pixel_values):
    """RGB -> one greyscale channel, for a `[B, 3, H, W]` tensor or a list of `[3, H, W]` arrays."""
    if isinstance(pixel_values, torch.Tensor):
        weights = torch.tensor(_LUMA_WEIGHTS, dtype=pixel_values.dtype).reshape(1, 3, 1, 1)
        return (pixel_values * weights).sum(dim=1, keepdim=True)
    weights = np.array(_LUMA_WEIGHTS, dtype=np.float32).reshape(3, 1, 1)
    return [(np.asarray(image, dtype=np.float32) * weights).sum(axis=0, keepdims=True) for image in pixel_values]


class VQImageProcessor(PilBackend):
    r"""Prepares images for a vqtok tokenizer.

    Each image is converted to RGB, resized so its short side is `size["shortest_edge"]`,
    centre-cropped to `crop_size`, scaled to [0, 1] and normalised with mean 0.5 / std 0.5, which
    gives the [-1, 1] range the tokenizers expect (x / 127.5 - 1). With `num_channels=1` the result
    is converted to greyscale (ITU-R 601 luma).

    >>> processor = VQImageProcessor.for_tokenizer(tokenizer.config)
    >>> pixel_values = processor(images, return_tensors="pt")["pixel_values"]
    >>> ids = tokenizer.encode(pixel_values)
    >>> pictures = processor.postprocess(tokenizer.decode(ids))   # list of PIL images
    """

    valid_kwargs = VQImageProcessorKwargs
    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    image_mean = [0.5, 0.5, 0.5]
    image_std = [0.5, 0.5, 0.5]
    size = {"shortest_edge": 32}
    crop_size = {"height": 32, "width": 32}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    num_channels = 3

    @classmethod
    def for_tokenizer(cls, config: VQTokenizerConfig, **kwargs) -> "VQImageProcessor":
        """A processor matching a tokenizer config's `image_size` and `in_channels`."""
        side = config.image_size
        return cls(
            size={"shortest_edge": side},
            crop_size={"height": side, "width": side},
            num_channels=config.in_channels,
            **kwargs,
        )

    def _preprocess(self, images, **kwargs):
        features = super()._preprocess(images, **kwargs)
        num_channels = kwargs.get("num_channels") or self.num_channels
        if num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 or 3, got {num_channels}")
        if num_channels == 1:
            features["pixel_values"] = _to_luma(features["pixel_values"])
        return features

    @staticmethod
    def postprocess(pixel_values: torch.Tensor) -> list[Image.Image]:
        """`[B, C, H, W]` in [-1, 1] -> list of PIL images (mode `L` or `RGB`)."""
        from .visualize import to_uint8_images

        arrays = to_uint8_images(pixel_values)
        mode = "L" if pixel_values.shape[1] == 1 else "RGB"
        return [Image.fromarray(a[..., 0] if mode == "L" else a, mode=mode) for a in arrays]
