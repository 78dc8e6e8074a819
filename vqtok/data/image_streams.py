"""Image sources read as streams: data that does not fit on one machine, or is not worth copying.

`open_image_stream` turns a source into a `datasets.IterableDataset` whose rows hold an undecoded
`"image"` cell (`{"bytes", "path"}`: decoding is left to the loader's workers, where a bad image is
named and dealt with) and, where the source has them, `"__key__"` / `"__url__"` (a webdataset
sample's key and shard). A source is

- `"sample"`: the bundled set (split `train` or `test`), cut into a few shards;
- webdataset tar shards: a path with a brace range (`shards/train-{000..099}.tar`), a glob
  (`shards/*.tar`) or one `.tar` file; `image_column` names the sample's image key (`jpg`, `png`,
  ...; the default `"image"` takes the first of `vqtok.data.tar_shards.IMAGE_KEYS` that the shards hold);
- a local folder of images (the `imagefolder` builder; one shard per file);
- a Hub dataset name (streamed over the network).

Local sources are listed as files (`source_files`), so that a reader can put them in a seeded order
per epoch and give each process whole shards. `take_images` keeps the first images of a stream in
memory (a streamed run's held-out set); `write_shards` writes a stream's images into tar shards.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterable

from datasets import Dataset, Features, IterableDataset, Value, load_dataset
from datasets import Image as ImageFeature

from .images import SAMPLE_SOURCE, load_sample_dataset, read_image
from ..validation import check_positive_int
from .tar_shards import IMAGE_KEYS, is_shard_source, shard_files, shard_image_key

# Image file suffixes an image folder is listed by (what the `imagefolder` builder reads).
IMAGE_SUFFIXES = tuple(f".{key}" for key in IMAGE_KEYS)
# Shards the bundled sample set is cut into when streamed.
SAMPLE_SHARDS = 4


def source_files(source: str) -> list[str] | None:
    """The files of a local source, in a fixed order (None for the bundled set and Hub datasets):
    the tar shards of a shard source, the images of a folder (recursively)."""
    if is_shard_source(source):
        return shard_files(source)
    if source != SAMPLE_SOURCE and os.path.isdir(source):
        files = sorted(
            os.path.join(root, name)
            for root, _, names in os.walk(source)
            for name in names
            if name.lower().endswith(IMAGE_SUFFIXES)
        )
        if not files:
            raise FileNotFoundError(f"data.source {source!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        return files
    return None


def open_image_stream(
    source: str = SAMPLE_SOURCE,
    split: str = "train",
    image_column: str = "image",
    files: list[str] | None = None,
    **load_kwargs,
) -> IterableDataset:
    """One split of `source` as a stream of rows with an undecoded `"image"` cell (see the module
    docstring). `files`: the local source's files to read, in this order (default: all of them, as
    `source_files` lists them); Hub datasets and the bundled set take no `files`."""
    if source == SAMPLE_SOURCE:
        splits = load_sample_dataset()
        if split not in splits:
            raise ValueError(f"the sample dataset has splits {sorted(splits)}, got split={split!r}")
        if image_column != "image":
            raise ValueError(f"the sample dataset keeps its images in the column 'image', got image_column={image_column!r}")
        stream = _sample_stream(splits[split])
        return stream.cast_column("image", ImageFeature(decode=False))
    if is_shard_source(source):
        files = files if files is not None else shard_files(source)
        stream = load_dataset("webdataset", data_files={"train": files}, split="train", streaming=True, **load_kwargs)
        image_column = shard_image_key(stream, image_column, source)
    elif os.path.isdir(source):
        files = files if files is not None else source_files(source)
        stream = load_dataset("imagefolder", data_files={"train": files}, split="train", streaming=True, **load_kwargs)
    elif os.path.exists(source):
        raise ValueError(f"dataset source {source!r} is a file; pass tar shards (.tar), a folder of images, 'sample' or a Hub name")
    else:
        stream = load_dataset(source, split=split, streaming=True, **load_kwargs)
    columns = list(stream.features or {})
    if image_column not in columns:
        raise ValueError(f"dataset {source!r} has no column {image_column!r}; columns: {columns} (set image_column)")
    stream = stream.cast_column(image_column, ImageFeature(decode=False))  # first: later steps would decode
    kept = [image_column] + [name for name in ("__key__", "__url__") if name in columns]
    stream = stream.select_columns(kept)
    return stream.rename_column(image_column, "image") if image_column != "image" else stream


def take_images(stream: IterableDataset, count: int) -> Dataset:
    """The first `count` rows of a stream of `open_image_stream` as an in-memory `Dataset` (images
    kept encoded, decoded when read), for evaluating a streamed run."""
    rows = list(stream.take(count))
    if not rows:
        raise ValueError("the held-out stream holds no images")
    features = Features({name: ImageFeature() if name == "image" else Value("string") for name in rows[0]
                         if name in ("image", "__key__", "__url__")})
    return Dataset.from_list([{name: row[name] for name in features} for row in rows], features=features)


def _sample_stream(split: Dataset) -> IterableDataset:
    return split.to_iterable_dataset(num_shards=min(SAMPLE_SHARDS, len(split)))


def write_shards(
    images: Iterable[dict],
    output_dir: str,
    samples_per_shard: int = 1000,
    prefix: str = "train",
) -> list[str]:
    """Write image cells (`{"bytes", "path"}` dicts, as `open_image_stream` gives them) into
    webdataset tar shards `output_dir/{prefix}-000000.tar`, ... of `samples_per_shard` samples each.

    Sample `i` is stored as `{i:09d}.<ext>`: the file's own bytes under its suffix when the cell has
    them (a JPEG stays a JPEG), else the image encoded as PNG. Each shard is written as
    `<name>.partial` and renamed when complete. Returns the shard paths."""
    check_positive_int("samples_per_shard", samples_per_shard)
    os.makedirs(output_dir, exist_ok=True)
    written, tar, path = [], None, None
    try:
        for index, cell in enumerate(images):
            if tar is None:
                path = os.path.join(output_dir, f"{prefix}-{len(written):06d}.tar")
                tar, count = tarfile.open(path + ".partial", "w"), 0
            name, data = _sample_file(index, cell)
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
            count += 1
            if count == samples_per_shard:
                written.append(_complete(tar, path))
                tar = None
        if tar is not None:
            written.append(_complete(tar, path))
            tar = None
    finally:
        if tar is not None:  # an error mid-shard: its .partial file stays, never taken for a shard
            tar.close()
    return written


def _complete(tar: tarfile.TarFile, path: str) -> str:
    """Close a shard written as `path.partial` and rename it `path`."""
    tar.close()
    os.replace(path + ".partial", path)
    return path


def _sample_file(index: int, cell) -> tuple[str, bytes]:
    """The tar member name and bytes of sample `index`: the image file's bytes under its suffix, or a PNG."""
    source = cell.get("path") if isinstance(cell, dict) else None
    suffix = os.path.splitext(source or "")[1].lower()
    data = cell.get("bytes") if isinstance(cell, dict) else None
    if data is None and source and os.path.isfile(source):
        with open(source, "rb") as handle:
            data = handle.read()
    if data is not None and suffix in IMAGE_SUFFIXES:
        read_image({"bytes": data, "path": source})  # an unreadable image fails here, named below
        return f"{index:09d}{'.jpg' if suffix == '.jpeg' else suffix}", data
    buffer = io.BytesIO()
    read_image(cell if data is None else {"bytes": data, "path": source}).save(buffer, format="PNG")
    return f"{index:09d}.png", buffer.getvalue()
