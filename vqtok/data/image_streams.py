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

Local sources are listed as files (`source_files`; a folder's by split, its sub-folders named like
splits as the `imagefolder` builder reads them), so that a reader can put them in a seeded order per
epoch and give each process whole shards. A folder without the held-out split asked for holds out
part of `train` instead (`stream_split_files`): the same images `vqtok train` holds out when it loads
the folder. What a reader read is recorded as its files' names and sizes (`file_records`), so that a
resumed run or tokenization notices when they changed (`file_changes`). `take_images` keeps the first
images of a stream in memory (a streamed run's held-out set); `write_shards` writes a stream's images
into tar shards.
"""

from __future__ import annotations

import glob
import io
import os
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass

from datasets import Dataset, Features, IterableDataset, Value, load_dataset
from datasets import Image as ImageFeature
from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns

from .images import SAMPLE_SOURCE, held_out_split, holdout_indices, load_sample_dataset, read_image
from ..validation import check_positive_int
from .tar_shards import IMAGE_KEYS, is_shard_source, shard_files, shard_image_key

# Image file suffixes an image folder is listed by (what the `imagefolder` builder reads).
IMAGE_SUFFIXES = tuple(f".{key}" for key in IMAGE_KEYS)
# Shards the bundled sample set is cut into when streamed.
SAMPLE_SHARDS = 4


def source_files(source: str, split: str = "train", option: str = "data.source") -> list[str] | None:
    """The files of a local source, in a fixed order (None for the bundled set and Hub datasets):
    the tar shards of a shard source (one split), the images of a folder's `split`."""
    if is_shard_source(source):
        return shard_files(source)
    if source != SAMPLE_SOURCE and os.path.isdir(source):
        splits = folder_split_files(source, option)
        if split not in splits:
            raise ValueError(f"{option} {source!r} has no split {split!r} (its splits: {sorted(splits)})")
        return splits[split]
    return None


def folder_split_files(folder: str, option: str = "data.source") -> dict[str, list[str]]:
    """A folder's image files by split, in a fixed order: its sub-folders named like splits
    (`train/`, `test/`, `validation/`, ...), as the `imagefolder` builder reads them; else every
    image of the folder (recursively) as `train`."""
    try:
        patterns = get_data_patterns(folder)
    except EmptyDatasetError:
        patterns = {}
    splits = {str(split): [str(path) for path in paths if str(path).lower().endswith(IMAGE_SUFFIXES)]
              for split, paths in (DataFilesDict.from_patterns(patterns, folder) if patterns else {}).items()}
    splits = {split: files for split, files in splits.items() if files}
    if not splits:
        raise FileNotFoundError(f"{option} {folder!r} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return splits


@dataclass
class StreamSplits:
    """The files each split of a folder source reads (see `stream_split_files`).

    Attributes:
        files: split -> its image files, in order.
        held_out: the split made by holding out part of `train` (None: the folder has every split).
        split_off: how many images were held out.
    """

    files: dict[str, list[str]]
    held_out: str | None = None
    split_off: int = 0


def stream_split_files(source: str, splits: list[str], holdout_fraction: float, option: str = "data.source",
                       train_split: str = "train") -> StreamSplits | None:
    """The files each of `splits` reads from a folder source: a split the folder lacks is a seeded
    `holdout_fraction` of its `train_split` (`holdout_indices`, as `load_image_splits` holds out),
    and the training split keeps the rest. None for the other sources, whose splits are read by name."""
    if source == SAMPLE_SOURCE or is_shard_source(source) or not os.path.isdir(source):
        return None
    available = folder_split_files(source, option)
    held_out = held_out_split(list(available), splits, train_split)
    files = {split: source_files(source, split, option) for split in splits if split != held_out}
    if held_out is None:
        return StreamSplits(files)
    train = available[train_split]
    kept, removed = holdout_indices(len(train), holdout_fraction, f"{option} {source!r} has no split {held_out!r}")
    files[held_out] = [train[index] for index in removed]
    if train_split in files:
        files[train_split] = [train[index] for index in kept]
    return StreamSplits(files, held_out, len(removed))


def file_records(files: list[str]) -> list[list]:
    """What a reader records of the files it reads: each one's path relative to their common folder,
    and its size in bytes."""
    root = os.path.commonpath([os.path.dirname(os.path.abspath(path)) for path in files]) if files else ""
    return [[os.path.relpath(os.path.abspath(path), root), os.path.getsize(path)] for path in files]


def file_changes(recorded: list, current: list) -> str:
    """How the files of two `file_records` differ (empty when they do not): the files added, the
    files gone and those whose size changed, a few of each named."""
    before, after = {name: size for name, size in recorded}, {name: size for name, size in current}

    def listed(names: list[str]) -> str:
        return ", ".join(names[:3]) + (f", ... ({len(names)} in all)" if len(names) > 3 else "")

    parts = [f"{what}: {listed(names)}" for what, names in (
        ("added", sorted(set(after) - set(before))),
        ("gone", sorted(set(before) - set(after))),
        ("changed in size", sorted(name for name in set(before) & set(after) if before[name] != after[name])),
    ) if names]
    if not parts and list(before) != list(after):
        parts = ["the same files in another order"]
    return "; ".join(parts)


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
        files = files if files is not None else source_files(source, split, "source")
        stream = load_dataset("imagefolder", data_files={"train": files}, split="train", streaming=True, **load_kwargs)
    elif os.path.exists(source):
        raise ValueError(f"dataset source {source!r} is a file; pass tar shards (.tar), a folder of images, 'sample' or a Hub name")
    else:
        try:
            stream = load_dataset(source, split=split, streaming=True, **load_kwargs)
        except ValueError as error:
            if "split" not in str(error).lower():
                raise
            raise ValueError(f"dataset {source!r} has no split {split!r}: {error}") from error
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


def earlier_shards(output_dir: str, prefix: str, overwrite: bool = False) -> list[str]:
    """The shards of `prefix` that `output_dir` already holds (an earlier run's); `FileExistsError`
    when there are some and not `overwrite`, since a glob would read both runs' shards as one set."""
    earlier = sorted(glob.glob(os.path.join(glob.escape(output_dir), f"{prefix}-*.tar")))
    if earlier and not overwrite:
        raise FileExistsError(
            f"{output_dir} already holds {len(earlier)} shard(s) of {prefix!r} ({os.path.basename(earlier[0])}, ...) from "
            "an earlier run: new shards beside them would be read as one set; write into another folder, or overwrite them"
        )
    return earlier


def write_shards(
    images: Iterable[dict],
    output_dir: str,
    samples_per_shard: int = 1000,
    prefix: str = "train",
    overwrite: bool = False,
) -> list[str]:
    """Write image cells (`{"bytes", "path"}` dicts, as `open_image_stream` gives them) into
    webdataset tar shards `output_dir/{prefix}-000000.tar`, ... of `samples_per_shard` samples each.

    Sample `i` is stored as `{i:09d}.<ext>`: the file's own bytes under its suffix when the cell has
    them (a JPEG stays a JPEG), else the image encoded as PNG; an image that cannot be read stops the
    writing, named. The shards are written as `<name>.partial` and renamed once all are complete, so
    that a failed run leaves the folder as it was. Shards of `prefix` already in `output_dir` (an
    earlier run's) raise `FileExistsError`, since a glob would read both runs' shards as one set,
    unless `overwrite`: then they are removed once the new ones are complete. Returns the shard paths."""
    check_positive_int("samples_per_shard", samples_per_shard)
    os.makedirs(output_dir, exist_ok=True)
    earlier = earlier_shards(output_dir, prefix, overwrite)
    for stale in glob.glob(os.path.join(glob.escape(output_dir), f"{prefix}-*.tar.partial")):
        os.remove(stale)  # a crashed run's unfinished shard
    partials = []
    try:
        tar = None
        for index, cell in enumerate(images):
            if tar is None:
                partials.append(os.path.join(output_dir, f"{prefix}-{len(partials):06d}.tar.partial"))
                tar, count = tarfile.open(partials[-1], "w"), 0
            name, data = _sample_file(index, cell)
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
            count += 1
            if count == samples_per_shard:
                tar.close()
                tar = None
        if tar is not None:
            tar.close()
    except BaseException:
        if tar is not None:
            tar.close()
        for path in partials:  # the folder is left as it was
            if os.path.exists(path):
                os.remove(path)
        raise
    written = [path.removesuffix(".partial") for path in partials]
    for path in set(earlier) - set(written):
        os.remove(path)
    for partial, path in zip(partials, written):
        os.replace(partial, path)
    return written


def _sample_file(index: int, cell) -> tuple[str, bytes]:
    """The tar member name and bytes of sample `index`: the image file's bytes under its suffix, or a
    PNG; `ValueError` naming the image (its file, or its place in the stream) when it cannot be read."""
    try:
        return _sample_bytes(index, cell)
    except Exception as error:  # noqa: BLE001 - any unreadable image is reported, named
        path = cell.get("path") if isinstance(cell, dict) else None
        where = f"file {path}" if path else f"image {index} of the stream"
        raise ValueError(f"{where} cannot be read ({type(error).__name__}: {error}): remove it, or convert it to an "
                         "image file PIL reads") from None


def _sample_bytes(index: int, cell) -> tuple[str, bytes]:
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
