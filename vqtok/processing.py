"""`VQImageProcessor`: PIL images, NumPy arrays or tensors -> `pixel_values` in [-1, 1], and back.

The one pixel pipeline of vqtok: the training transforms (`vqtok.data.PixelTransform`) run every
image through it too, so a tokenizer sees the same pixel values in training and in use. A
`transformers` image processor (PIL backend, no torchvision needed): it saves to and loads from
`preprocessor_config.json` next to a tokenizer and is registered with `AutoImageProcessor` for
every tokenizer type.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ImagesKwargs

_LUMA_WEIGHTS = np.array((0.299, 0.587, 0.114), dtype=np.float32).reshape(3, 1, 1)


class VQImageProcessorKwargs(ImagesKwargs, total=False):
    """Extra argument of `VQImageProcessor`: `num_channels` (1 = greyscale output, 3 = RGB)."""

    num_channels: int


def to_greyscale(image: np.ndarray) -> np.ndarray:
    """A channels-first image as one greyscale channel (ITU-R 601 luma). uint8 images are converted
    by PIL (`convert("L")`, which rounds to uint8), float images by the weighted sum."""
    if image.shape[0] == 1:
        return image
    if image.shape[0] != 3:
        raise ValueError(f"cannot convert an image with {image.shape[0]} channels to greyscale (expected 1 or 3)")
    if image.dtype == np.uint8:
        return np.asarray(Image.fromarray(np.moveaxis(image, 0, -1)).convert("L"))[None]
    return (image.astype(np.float32) * _LUMA_WEIGHTS).sum(axis=0, keepdims=True)


class VQImageProcessor(PilBackend):
    r"""Prepares images for a vqtok tokenizer.

    Each image is converted to RGB, or to greyscale (ITU-R 601 luma, on the uint8 pixels as PIL's
    `convert("L")` does) with `num_channels=1`; resized so its short side is
    `size["shortest_edge"]` (bicubic); centre-cropped to `crop_size`; scaled to [0, 1] and
    normalised with mean 0.5 / std 0.5, which gives the [-1, 1] range the tokenizers expect
    (x / 127.5 - 1).

    Inputs are PIL images, uint8 arrays or tensors (pixels in [0, 255]), or float arrays or tensors
    already scaled to [0, 1], which need `do_rescale=False` (as with any `transformers` image
    processor): with the default `do_rescale=True`, a float image whose values all lie in [0, 1]
    raises a `ValueError` saying so, rather than being divided by 255 a second time (which would
    leave every pixel near -1). An empty list of images raises a `ValueError` too.

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
    def for_image_size(cls, image_size: int, num_channels: int = 3, **kwargs) -> VQImageProcessor:
        """A processor giving `num_channels` x `image_size` x `image_size` pixel values."""
        size, crop_size = {"shortest_edge": image_size}, {"height": image_size, "width": image_size}
        return cls(size=size, crop_size=crop_size, num_channels=num_channels, **kwargs)

    @classmethod
    def for_tokenizer(cls, config, **kwargs) -> VQImageProcessor:
        """A processor matching a tokenizer config's `image_size` and `in_channels`."""
        return cls.for_image_size(config.image_size, config.in_channels, **kwargs)

    def process_image(self, image, *args, num_channels: int | None = None, **kwargs) -> np.ndarray:
        """One raw image -> channels-first array, in RGB or (with `num_channels=1`) greyscale,
        before any resizing, so that resampling works on the output's own channels. ValueError for
        a float image already in [0, 1] when `do_rescale` is on."""
        array = super().process_image(image, *args, **kwargs)
        if kwargs.get("do_rescale", self.do_rescale) and _already_rescaled(array):
            raise ValueError(
                f"got a float image with values in [{array.min():.3g}, {array.max():.3g}], i.e. already "
                "rescaled to [0, 1], and do_rescale=True would divide it by 255 again; pass do_rescale=False "
                "for images in [0, 1] (or pass uint8 images with values in [0, 255])"
            )
        if np.issubdtype(array.dtype, np.floating) and array.size and (array.min() < 0 or array.max() > 1):
            raise ValueError(
                f"got a float image with values in [{array.min():.3g}, {array.max():.3g}]: float images must lie in "
                "[0, 1] (with do_rescale=False); pass images with values in [0, 255] as uint8 "
                "(e.g. array.round().astype(numpy.uint8)) or as PIL images"
            )
        num_channels = num_channels or self.num_channels
        if num_channels not in (1, 3):
            raise ValueError(f"num_channels must be 1 or 3, got {num_channels}")
        return to_greyscale(array) if num_channels == 1 else array

    def normalize(self, image: np.ndarray, mean, std, **kwargs) -> np.ndarray:
        """`(image - mean) / std` per channel; per-channel statistics that are all equal also serve a
        greyscale image (the defaults, [0.5, 0.5, 0.5], serve both)."""
        return super().normalize(image, _per_channel(mean, image.shape[0], "image_mean"),
                                 _per_channel(std, image.shape[0], "image_std"), **kwargs)

    def _preprocess(self, images: list[np.ndarray], *args, **kwargs):
        if not images:
            raise ValueError("no images to process: pass an image or a non-empty list of images")
        return super()._preprocess(images, *args, **kwargs)

    @staticmethod
    def postprocess(pixel_values: torch.Tensor) -> list[Image.Image]:
        """`[B, C, H, W]` in [-1, 1] -> list of PIL images (mode `L` or `RGB`)."""
        arrays = to_uint8_images(pixel_values)
        mode = "L" if pixel_values.shape[1] == 1 else "RGB"
        return [Image.fromarray(a[..., 0] if mode == "L" else a, mode=mode) for a in arrays]


def to_uint8_images(pixel_values: torch.Tensor) -> np.ndarray:
    """`[B, C, H, W]` in [-1, 1] -> `[B, H, W, 3]` uint8 (grey images repeated to RGB)."""
    images = ((pixel_values.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    return images.permute(0, 2, 3, 1).numpy()


def _already_rescaled(image: np.ndarray) -> bool:
    """A float image whose values all lie in [0, 1] (and are not all 0, which reads the same either way)."""
    return np.issubdtype(image.dtype, np.floating) and image.size > 0 and image.min() >= 0 and 0 < image.max() <= 1


def _per_channel(values, channels: int, name: str):
    """`values` fitted to `channels` channels: a scalar or a list of that length as given, a list of
    equal values shortened to one."""
    if np.isscalar(values) or len(values) == channels:
        return values
    if channels == 1 and len(set(values)) == 1:
        return [values[0]]
    raise ValueError(f"{name} has {len(values)} values but the images have {channels} channel(s): {list(values)}")
