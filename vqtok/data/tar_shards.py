"""Webdataset tar shards: naming them (brace ranges, globs) and loading them whole.

A shard source is a path ending in `.tar`: one file, a glob (`shards/train-*.tar`) or a brace range
(`shards/train-{000000..000099}.tar`). Each sample is a group of tar members sharing a key; its image
is the member under an image suffix (`IMAGE_KEYS`). `vqtok.data.image_streams` reads shards as a stream.
"""

from __future__ import annotations

import glob
import os
import re

from datasets import Dataset, IterableDataset, load_dataset

# Image keys of webdataset samples, in the order the default image column looks for them.
IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def is_shard_source(source: str) -> bool:
    """Whether `source` names webdataset tar shards (a `.tar` path, pattern or glob)."""
    return isinstance(source, str) and source.endswith(".tar")


def expand_braces(pattern: str) -> list[str]:
    """`shards/{000..012}.tar` -> the 13 paths, zero-padded to the width of the range's first bound
    (several ranges expand in turn); a pattern without a range is returned as it is."""
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    first, last = match.group(1), match.group(2)
    if int(last) < int(first):
        raise ValueError(f"shard pattern {pattern!r}: the range {{{first}..{last}}} runs backwards")
    width = len(first) if first.startswith("0") else 0
    head, tail = pattern[: match.start()], pattern[match.end():]
    return [path for number in range(int(first), int(last) + 1) for path in expand_braces(f"{head}{number:0{width}d}{tail}")]


def shard_files(pattern: str) -> list[str]:
    """The tar files a shard source names (brace ranges expanded, globs matched), in order; every
    named file must exist."""
    files = []
    for path in expand_braces(pattern):
        matched = sorted(glob.glob(path)) if glob.has_magic(path) else [path]
        files += matched
    missing = [path for path in files if not os.path.isfile(path)]
    if missing or not files:
        shown = ", ".join(missing[:3]) + (f", ... ({len(missing)} in all)" if len(missing) > 3 else "")
        raise FileNotFoundError(f"data.source {pattern!r}: " + (f"no such shard(s): {shown}" if missing else "matches no tar file"))
    return files


def load_shards(pattern: str, image_column: str = "image", **load_kwargs) -> Dataset:
    """Webdataset tar shards loaded whole (map-style, cached as Arrow), with their images in an
    `"image"` column beside `__key__` and `__url__`."""
    dataset = load_dataset("webdataset", data_files={"train": shard_files(pattern)}, split="train", **load_kwargs)
    key = shard_image_key(dataset, image_column, pattern)
    dataset = dataset.select_columns([key] + [name for name in ("__key__", "__url__") if name in dataset.column_names])
    return dataset.rename_column(key, "image") if key != "image" else dataset


def shard_image_key(stream: IterableDataset | Dataset, image_column: str, source: str) -> str:
    """The image key of webdataset samples: `image_column` when the shards hold it, else (for the
    default `"image"`) the first of `IMAGE_KEYS` they hold."""
    keys = list(stream.features or {})
    if image_column in keys or image_column != "image":
        return image_column
    for key in IMAGE_KEYS:
        if key in keys:
            return key
    raise ValueError(f"the shards {source!r} hold no image key of {list(IMAGE_KEYS)}; their keys: {keys} (set image_column)")
