"""Webdataset tar shards: naming them (brace ranges, globs) and loading them whole.

A shard source is a path ending in `.tar`: one file, a glob (`shards/train-*.tar`) or a brace range
(`shards/train-{000000..000099}.tar`). Each sample is a group of tar members sharing a key; its image
is the member under an image suffix (`IMAGE_KEYS`). `vqtok.data.image_streams` reads shards as a stream.
"""

from __future__ import annotations

import glob
import os
import re
import tarfile

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
    for path in files:
        check_shard(path)
    return files


def check_shard(path: str) -> None:
    """`ValueError` naming the shard at `path` unless it is a whole tar file whose every sample holds
    an image. Only the members' headers are read (not the images): a shard cut short, or a sample of
    text only, would otherwise be met mid-run, unnamed, or pass unnoticed with its images missing."""
    try:
        with tarfile.open(path) as archive:
            members = archive.getmembers()
    except tarfile.TarError as error:
        raise ValueError(f"shard {path} is not a readable tar file ({error}): rewrite it (vqtok shards) or leave it out") from None
    if _cut_short(path, members):
        raise ValueError(f"shard {path} is cut short (it ends before its end-of-archive marker): its last images are "
                         "lost; rewrite it (vqtok shards) or leave it out")
    samples: dict[str, set[str]] = {}
    for member in members:
        folder, name = os.path.split(member.name)
        if member.isfile() and "." in name:  # webdataset: the key is the name up to its first dot
            key, suffix = name.split(".", 1)
            samples.setdefault(os.path.join(folder, key), set()).add(suffix.lower())
    imageless = next((key for key, suffixes in samples.items() if not suffixes & set(IMAGE_KEYS)), None)
    if imageless is not None:
        raise ValueError(f"sample {imageless!r} of shard {path} holds no image (its members: "
                         f"{sorted(samples[imageless])}; images are {list(IMAGE_KEYS)})")


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


def _cut_short(path: str, members: list[tarfile.TarInfo]) -> bool:
    """Whether the tar file ends before the end-of-archive marker (a zero block) that follows its last
    member: tarfile stops silently at a header cut short, and a member's data may end past the file."""
    end = 0
    if members:
        last = members[-1]
        end = last.offset_data + -(-last.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
    with open(path, "rb") as handle:
        handle.seek(end)
        marker = handle.read(tarfile.BLOCKSIZE)
    return len(marker) < tarfile.BLOCKSIZE or any(marker)
