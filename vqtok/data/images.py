"""Image datasets loaded whole, for training and evaluation.

`load_image_dataset` takes the bundled offline sample set (`"sample"`), a local image folder,
webdataset tar shards, or a Hugging Face Hub dataset name, and always returns a `datasets.Dataset` with an `"image"` column of
PIL images. `PixelTransform` turns such rows into `pixel_values` tensors in [-1, 1] through
`VQImageProcessor`, adding the training augmentation.

The sample set is cut from the photographs that ship inside scikit-image (astronaut, coffee,
chelsea the cat, a rocket launch, the Hubble deep field, retina and tissue scans, textures, ...),
so it needs no network. Patches are taken at two scales, shuffled with a fixed seed, and split
into `train` and `test`.

Unreadable images (truncated or corrupt files) are found before training by `check_images`:
`on_bad_image="fail"` raises one error listing them all, `"skip"` drops them with a warning.
`read_image` and `check_on_bad_image` are shared with `vqtok.tokens.tokenization`.
"""

from __future__ import annotations

import functools
import os
import random
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image, get_dataset_split_names, load_dataset
from PIL import Image as PILImage

from ..processing import VQImageProcessor
from .tar_shards import load_shards

# scikit-image's bundled photographs (loaded without a network) used for the sample set.
SAMPLE_PHOTOGRAPHS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "colorwheel",
    "camera",
    "moon",
    "coins",
    "brick",
    "grass",
    "gravel",
    "clock",
    "page",
    "text",
)
SAMPLE_SOURCE = "sample"
# What to do with an image that cannot be read: raise (naming it), or drop it with a warning.
BAD_IMAGE_CHOICES = ("fail", "skip")
# Rows of a dataset read at once when every image is checked.
_CHECK_BATCH = 256
# The seed of the hold-out split of a source without a held-out split: the same images every time.
HOLDOUT_SEED = 0


def _photograph(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3]).astype(np.uint8)


def _patches(image: PILImage.Image, size: int) -> list[PILImage.Image]:
    width, height = image.size
    return [
        image.crop((left, top, left + size, top + size))
        for top in range(0, height - size + 1, size)
        for left in range(0, width - size + 1, size)
    ]


@functools.lru_cache(maxsize=4)
def load_sample_dataset(
    patch_size: int = 32,
    scales: Sequence[int] = (1, 2, 4),
    max_patches_per_scale: int = 96,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> DatasetDict:
    """The bundled offline image set: square RGB patches of scikit-image's photographs.

    Each photograph is downscaled by every factor in `scales` and cut into non-overlapping
    `patch_size` patches, of which at most `max_patches_per_scale` (chosen with `seed`) are kept,
    so large photographs do not dominate. The patches are shuffled with `seed` and split into
    `train` and `test` (`test_fraction`). The result is cached per process.

    Returns:
        `DatasetDict` with `train` and `test` splits; columns `image` (PIL RGB) and `source`
        (which photograph the patch came from).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    rng = random.Random(seed)
    images, sources = [], []
    for index, name in enumerate(SAMPLE_PHOTOGRAPHS):
        photo = PILImage.fromarray(_photograph(name))
        for scale in scales:
            scaled = photo.resize((photo.width // scale, photo.height // scale), PILImage.Resampling.LANCZOS)
            patches = _patches(scaled, patch_size)
            if len(patches) > max_patches_per_scale:
                patches = rng.sample(patches, max_patches_per_scale)
            images += patches
            sources += [index] * len(patches)
    order = list(range(len(images)))
    rng.shuffle(order)
    features = Features({"image": Image(), "source": ClassLabel(names=list(SAMPLE_PHOTOGRAPHS))})
    dataset = Dataset.from_dict(
        {"image": [images[i] for i in order], "source": [sources[i] for i in order]}, features=features
    )
    split = dataset.train_test_split(test_size=test_fraction, shuffle=False)
    return DatasetDict(train=split["train"], test=split["test"])


def load_image_dataset(
    source: str = SAMPLE_SOURCE,
    split: str = "train",
    image_column: str = "image",
    option: str = "source",
    **load_kwargs,
) -> Dataset:
    """One split of an image dataset, with the images in an `"image"` column.

    Args:
        source: `"sample"` for the bundled offline set, a path to a local folder of images
            (loaded with the `imagefolder` builder; sub-folders become labels), webdataset tar
            shards (`shards/train-{000..009}.tar`, a glob or one file: one split, `split` is not
            used; see `vqtok.data.image_streams`), or a Hub dataset name such as `"uoft-cs/cifar10"`.
        split: split name (`"train"`, `"test"`, or a slice such as `"train[:1000]"`).
        image_column: column holding the images in a Hub dataset (renamed to `"image"`); for tar
            shards the samples' image key (default: the first image key they hold).
        option: how errors name `source` (a command names its option, e.g. `data.source`).
        load_kwargs: passed to `datasets.load_dataset` (e.g. `revision`, `cache_dir`).
    """
    if source == SAMPLE_SOURCE:
        if image_column != "image":
            raise ValueError(f"the sample dataset keeps its images in the column 'image', got image_column={image_column!r}")
        splits = load_sample_dataset()
        if split not in splits:
            raise ValueError(f"the sample dataset has splits {sorted(splits)}, got split={split!r}")
        return splits[split]
    if source.endswith(".tar"):  # webdataset shards: one split, images under a key (see vqtok.data.image_streams)
        return load_shards(source, image_column, **load_kwargs)
    _check_local_source(source, option)
    if os.path.isdir(source):
        dataset = _load_split(source, split, option, "imagefolder", data_dir=source, **load_kwargs)
    else:
        dataset = _load_split(source, split, option, source, **load_kwargs)
    if image_column not in dataset.column_names:
        raise ValueError(
            f"dataset {source!r} has no column {image_column!r}; columns: {dataset.column_names} "
            "(set image_column)"
        )
    if image_column != "image":
        dataset = dataset.rename_column(image_column, "image")
    return dataset


def _check_local_source(source: str, option: str) -> None:
    """Errors naming `option` for a source that is a file, or a local path (not a Hub dataset's
    `name` or `namespace/name`) that does not exist."""
    if os.path.isfile(source):
        raise ValueError(f"{option} {source!r} is a file; pass a folder of images, 'sample' or a Hub dataset name")
    looks_like_a_path = os.path.isabs(source) or source.startswith((".", "~")) or source.count("/") > 1
    if looks_like_a_path and not os.path.isdir(source):
        raise FileNotFoundError(
            f"{option} {source!r} does not exist: give a folder of images, tar shards ('folder/train-*.tar'), 'sample' "
            "(the bundled set) or a Hub dataset name ('namespace/name')"
        )


def _load_split(source: str, split: str, option: str, path: str, **load_kwargs) -> Dataset:
    """`datasets.load_dataset(path, split=split)`, its errors naming `option` and `source`."""
    try:
        return load_dataset(path, split=split, **load_kwargs)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{option} {source!r} cannot be loaded: {error}") from error
    except ValueError as error:
        if "split" not in str(error).lower():
            raise
        raise ValueError(f"{option} {source!r} has no split {split!r}: {error}") from error


def image_splits(source: str, option: str = "source") -> list[str]:
    """The split names of an image source: the bundled set's (`train`, `test`), a folder's (its
    sub-folders named like splits, else `train`), a Hub dataset's; tar shards are one split, `train`."""
    if source == SAMPLE_SOURCE:
        return list(load_sample_dataset())
    if source.endswith(".tar"):
        return ["train"]
    _check_local_source(source, option)
    if os.path.isdir(source):
        return list(load_dataset("imagefolder", data_dir=source))
    try:
        return list(get_dataset_split_names(source))
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{option} {source!r} cannot be loaded: {error}") from error


@dataclass
class ImageSplits:
    """The training and held-out images of a source (see `load_image_splits`).

    Attributes:
        train: the training images.
        held_out: the held-out images (None: no evaluation).
        split_off: how many of the training split's images were held out (0 when the source has the
            held-out split itself).
    """

    train: Dataset
    held_out: Dataset | None
    split_off: int = 0


def load_image_splits(
    source: str = SAMPLE_SOURCE,
    train_split: str = "train",
    eval_split: str | None = "test",
    image_column: str = "image",
    holdout_fraction: float = 0.1,
    option: str = "source",
) -> ImageSplits:
    """The training images of `source` and its held-out images: its `eval_split` where it has one;
    where it has not (an image folder has only `train`), `holdout_fraction` of `train_split` split
    off, the same images every time (a shuffle seeded with `HOLDOUT_SEED`: a later `vqtok evaluate`
    holds out the same ones). `eval_split=None`: no held-out images."""
    if eval_split is None:
        return ImageSplits(load_image_dataset(source, train_split, image_column, option), None)
    if eval_split in image_splits(source, option):
        return ImageSplits(load_image_dataset(source, train_split, image_column, option),
                           load_image_dataset(source, eval_split, image_column, option))
    images = load_image_dataset(source, train_split, image_column, option)
    kept, held_out = holdout_indices(len(images), holdout_fraction, f"{option} {source!r} has no split {eval_split!r}")
    return ImageSplits(images.select(kept), images.select(held_out), len(held_out))


def holdout_indices(count: int, fraction: float, why: str = "holding out images") -> tuple[list[int], list[int]]:
    """The indices of `count` images split into those kept for training and the `fraction` held out:
    the same ones every time (a shuffle seeded with `HOLDOUT_SEED`), whether the images are loaded
    (`load_image_splits`) or streamed from a folder's files (`vqtok.data.image_streams.stream_split_files`).
    `why` opens the error when there are too few images."""
    if not 0 < fraction < 1:
        raise ValueError(f"holdout_fraction must lie in (0, 1), got {fraction}")
    if count < 2:
        raise ValueError(f"{why} and only {count} image(s) to train on: too few to hold some out for evaluation")
    parts = Dataset.from_dict({"index": list(range(count))}).train_test_split(test_size=fraction, seed=HOLDOUT_SEED)
    return parts["train"]["index"], parts["test"]["index"]


def held_out_split(available: list[str], asked: list[str], train_split: str = "train") -> str | None:
    """The one split of `asked` that a source lacks and makes instead by holding out part of its
    `train_split` (an image folder has only `train`), or None when it has every split asked for (or
    lacks more than one, or lacks `train_split` itself, which are errors where the splits are read)."""
    missing = [split for split in asked if split not in available]
    return missing[0] if len(missing) == 1 and missing[0] != train_split and train_split in available else None


def read_image(value) -> PILImage.Image:
    """One image cell, fully decoded: a PIL image, a `datasets` image dict (`bytes` / `path`), a
    file path or a NumPy array (or nested lists) (H, W[, C]) of uint8 pixels (integers in [0, 255] of another dtype too)."""
    if isinstance(value, PILImage.Image):
        value.load()
        return value
    if isinstance(value, list):  # an array column read without a numpy format
        value = np.asarray(value)
    if isinstance(value, np.ndarray):
        if np.issubdtype(value.dtype, np.integer) and value.size and 0 <= value.min() and value.max() <= 255:
            value = value.astype(np.uint8)  # pixels stored as Arrow integers come back as int64
        return PILImage.fromarray(value)
    if isinstance(value, str):
        value = {"path": value, "bytes": None}
    if isinstance(value, dict):
        path = value.get("path")
        if not value.get("bytes") and path and os.path.isfile(path):  # read here: a failed decode leaks no file
            with open(path, "rb") as handle:
                value = {"path": path, "bytes": handle.read()}
        return Image().decode_example(value)
    raise TypeError(f"expected an image, its bytes or its path, got {type(value).__name__}")


def check_on_bad_image(on_bad_image) -> None:
    """ValueError unless `on_bad_image` is one of `BAD_IMAGE_CHOICES`."""
    if on_bad_image not in BAD_IMAGE_CHOICES:
        raise ValueError(f"on_bad_image must be one of {list(BAD_IMAGE_CHOICES)}, got {on_bad_image!r}")


def check_images(dataset: Dataset, on_bad_image: str = "fail", image_column: str = "image",
                 warn: bool = True) -> tuple[Dataset, list[str]]:
    """Read (fully decode) every image of `dataset` and deal with those that cannot be read.

    Each unreadable image is named by its file when it was read from one (a local image folder),
    else by its row index, with the reason. `on_bad_image="fail"` raises one `ValueError` listing
    them all; `"skip"` returns the dataset without them and warns (when `warn`), naming each.

    Returns:
        `(dataset, bad)`: the dataset (unchanged when every image reads) and the descriptions of the
        images dropped.
    """
    check_on_bad_image(on_bad_image)
    if image_column not in dataset.column_names:
        raise ValueError(f"dataset has no column {image_column!r}; columns: {dataset.column_names}")
    cells = dataset.select_columns([image_column])
    if isinstance(cells.features[image_column], Image):  # read undecoded: decoding errors are caught below
        cells = cells.cast_column(image_column, Image(decode=False))
    bad, bad_rows = [], []
    for start in range(0, len(cells), _CHECK_BATCH):
        for row, cell in enumerate(cells[start : start + _CHECK_BATCH][image_column], start):
            try:
                read_image(cell)
            except Exception as error:  # noqa: BLE001 - any unreadable image is reported
                bad.append(f"{_image_name(cell, row)} ({type(error).__name__}: {error})")
                bad_rows.append(row)
    if not bad:
        return dataset, []
    listed = "; ".join(bad)
    if on_bad_image == "fail":
        raise ValueError(f"{len(bad)} of {len(dataset)} images cannot be read: {listed}; "
                         "remove them, or set data.on_bad_image=skip to train without them")
    if warn:
        warnings.warn(f"skipping {len(bad)} of {len(dataset)} images that cannot be read: {listed}", stacklevel=2)
    dropped = set(bad_rows)
    return dataset.select([row for row in range(len(dataset)) if row not in dropped]), bad


def _image_name(cell, row: int) -> str:
    """An image's file when it was read from one (a path, no embedded bytes), else its row."""
    path = cell if isinstance(cell, str) else None
    if isinstance(cell, dict) and not cell.get("bytes"):
        path = cell.get("path")
    return f"file {path}" if path else f"row {row}"


class PixelTransform:
    """Turns a batch of dataset rows into `{"pixel_values": FloatTensor [B, C, S, S]}` in [-1, 1].

    Every image goes through `VQImageProcessor` (the one pixel pipeline: greyscale conversion,
    resize of the short side to `image_size`, scaling to [-1, 1]), so training sees exactly the pixel
    values a user's processor gives. Without `random_crop` the processor also centre-crops; with it
    the square is cut at a random position instead, and `random_flip` flips it left-right half of
    the time. Use with `dataset.with_transform(PixelTransform(...))`.

    The random crop and flip draw from `generator` (a `torch.Generator`), or from torch's global
    generator when it is None, so `torch.manual_seed` / `accelerate.utils.set_seed` make them
    repeatable. `image_to_tensor(image, generator=...)` takes a per-image generator: the trainer
    seeds one per sample, which makes augmentation independent of data-loader workers and exact
    across checkpoint resumes.
    """

    def __init__(
        self,
        image_size: int,
        channels: int = 3,
        random_crop: bool = False,
        random_flip: bool = False,
        generator: torch.Generator | None = None,
    ):
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {channels}")
        self.image_size = image_size
        self.channels = channels
        self.random_crop = random_crop
        self.random_flip = random_flip
        self.generator = generator
        self.processor = VQImageProcessor.for_image_size(image_size, channels)

    @property
    def is_random(self) -> bool:
        """True when the transform draws random numbers (random crop or flip)."""
        return self.random_crop or self.random_flip

    def image_to_tensor(self, image: PILImage.Image, generator: torch.Generator | None = None) -> torch.Tensor:
        """One PIL image -> `[C, S, S]` float tensor in [-1, 1]; random draws come from `generator`
        (default: the transform's own generator, else torch's global one)."""
        return self.images_to_tensors([image], [generator])[0]

    def images_to_tensors(
        self, images: Sequence[PILImage.Image], generators: Sequence[torch.Generator | None]
    ) -> list[torch.Tensor]:
        """Several images at once (one call of the processor), image `i` drawing its crop and flip
        from `generators[i]` (None: the transform's own generator, else torch's global one)."""
        processed = self.processor(images, do_center_crop=not self.random_crop)["pixel_values"]
        return [self._augment(torch.from_numpy(pixels), generator) for pixels, generator in zip(processed, generators)]

    def _augment(self, pixels: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        generator = generator if generator is not None else self.generator
        if self.random_crop:
            spare_h, spare_w = pixels.shape[1] - self.image_size, pixels.shape[2] - self.image_size
            left, top = _randint(spare_w, generator), _randint(spare_h, generator)
            pixels = pixels[:, top : top + self.image_size, left : left + self.image_size]
        if self.random_flip and _randint(1, generator) == 1:
            pixels = pixels.flip(-1)
        return pixels.contiguous()

    def __call__(self, batch: dict) -> dict:
        images = batch["image"]
        return {"pixel_values": self.images_to_tensors(images, [None] * len(images))}


def _randint(high: int, generator: torch.Generator | None) -> int:
    """A uniform integer in [0, high] drawn from `generator` (torch's global one when None)."""
    return int(torch.randint(high + 1, (), generator=generator))


def collate_pixel_values(rows: list[dict]) -> torch.Tensor:
    """Stack rows produced by `PixelTransform` into one `[B, C, S, S]` batch."""
    missing = next((row for row in rows if "pixel_values" not in row), None)
    if missing is not None:
        raise ValueError(
            f"the rows hold no 'pixel_values' (a row's columns: {sorted(missing)}): view images through "
            "vqtok.data.pixel_dataset(dataset, image_size) first, which resizes them and scales them to [-1, 1]"
        )
    return torch.stack([row["pixel_values"] for row in rows])


def pixel_dataset(dataset: Dataset, image_size: int, channels: int = 3, augment: bool = False) -> Dataset:
    """`dataset` viewed through a `PixelTransform` (random crop and flip when `augment`)."""
    return dataset.with_transform(PixelTransform(image_size, channels, random_crop=augment, random_flip=augment))


def stack_pixel_values(dataset: Dataset, limit: int | None = None) -> torch.Tensor:
    """All (or the first `limit`) `pixel_values` of a transformed dataset as one tensor."""
    count = len(dataset) if limit is None else min(limit, len(dataset))
    return collate_pixel_values([dataset[i] for i in range(count)])
