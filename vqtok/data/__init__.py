"""Images in: datasets loaded whole (`images.py`: the bundled sample set, local folders, Hub
datasets, the pixel transforms of training), webdataset tar shards (`tar_shards.py`: naming and
loading them) and sources read as streams (`image_streams.py`: data that does not fit on one
machine, and streams written into tar shards)."""

from .images import (
    BAD_IMAGE_CHOICES,
    SAMPLE_PHOTOGRAPHS,
    SAMPLE_SOURCE,
    PixelTransform,
    check_images,
    check_on_bad_image,
    collate_pixel_values,
    ImageSplits,
    image_splits,
    load_image_dataset,
    load_image_splits,
    load_sample_dataset,
    pixel_dataset,
    read_image,
    stack_pixel_values,
)

__all__ = [
    "BAD_IMAGE_CHOICES",
    "SAMPLE_PHOTOGRAPHS",
    "SAMPLE_SOURCE",
    "PixelTransform",
    "check_images",
    "check_on_bad_image",
    "collate_pixel_values",
    "ImageSplits",
    "image_splits",
    "load_image_dataset",
    "load_image_splits",
    "load_sample_dataset",
    "pixel_dataset",
    "read_image",
    "stack_pixel_values",
]
