"""The files of a token dataset written by `vqtok.tokens.stream_tokenization.tokenize_stream`, and its reader.

    output/vqtok_tokens.json                the layout (`TokenLayout.save`)
    output/<split>/<split>-00000.parquet    shard 0 of the split, then 00001, ...

Each shard's Parquet metadata holds a progress record under the key `vqtok` (`read_progress`): the
options of the run that wrote it, how far into the stream it ends, the stream's state there, and
whether it is the split's last shard. `load_tokenized_shards` reads a finished dataset (each split
with `datasets.load_dataset("parquet")`); `sharded_token_files` lists its shards for any other reader.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Dataset, DatasetDict, Features, IterableDataset, IterableDatasetDict, load_dataset

from .layout import TokenLayout

# The Parquet metadata key of a shard's progress record.
PROGRESS_KEY = "vqtok"


def shard_path(folder: str, split: str, index: int) -> str:
    """The file of shard `index` of `split` in `folder`: `<split>-00000.parquet`, ..."""
    return os.path.join(folder, f"{split}-{index:05d}.parquet")


def listed_shards(folder: str, split: str) -> list[tuple[int, str]]:
    """`(index, path)` of the finished shard files of `split` in `folder`, by index."""
    pattern = re.compile(re.escape(split) + r"-(\d{5,})\.parquet")
    matches = ((pattern.fullmatch(name), name) for name in os.listdir(folder))
    return sorted((int(match.group(1)), os.path.join(folder, name)) for match, name in matches if match)


def read_progress(path: str) -> dict:
    """A shard's progress record, from its Parquet metadata: `run` (the options of the run that wrote
    it), `shard` (its index), `rows_read` (the stream's rows up to its end), `tokenized` and `skipped`
    (its rows and the images dropped), `last` (whether the stream ends with it), `stream_state` (the
    stream's `state_dict` at its end), `next` (where the following row comes from, when known), and
    `path`. ValueError naming the file when it is not a shard written by `tokenize_stream`."""
    try:
        metadata = pq.read_metadata(path).metadata or {}
    except (OSError, pa.ArrowException) as error:
        raise ValueError(f"{path} is not a readable Parquet file ({error}); delete it to write it again") from None
    if PROGRESS_KEY.encode() not in metadata:
        raise ValueError(f"{path} is no shard written by tokenize_stream (its metadata has no {PROGRESS_KEY!r} record)")
    return {**json.loads(metadata[PROGRESS_KEY.encode()]), "path": path}


def sharded_token_files(path: str | os.PathLike) -> dict[str, list[str]]:
    """`{split: shard files, in order}` of a token dataset written by `tokenize_stream`: every folder of
    `path` holding shards of its name. ValueError naming a split whose shards are incomplete (an
    interrupted run: rerun it to finish)."""
    path = os.fspath(path)
    files = {}
    for split in sorted(os.listdir(path)):
        folder = os.path.join(path, split)
        listed = listed_shards(folder, split) if os.path.isdir(folder) else []
        if listed:
            last = read_progress(listed[-1][1])
            if [index for index, _ in listed] != list(range(len(listed))) or not last["last"]:
                raise ValueError(f"split {split!r} of {path} is incomplete ({len(listed)} shard(s), the stream not read to its "
                                 "end): rerun tokenize_stream (`vqtok tokenize --streaming`) with the same "
                                 "options to finish it")
            files[split] = [file for _, file in listed]
    return files


def load_tokenized_shards(path: str | os.PathLike, **load_kwargs) -> tuple[DatasetDict | IterableDatasetDict, TokenLayout]:
    """A token dataset written by `tokenize_stream` (one split per folder) and its layout. Each split's
    shards are read with `datasets.load_dataset("parquet", data_files={split: files}, split=split)` (one
    split at a time: splits may differ in columns), which `load_kwargs` go to (e.g. `cache_dir`;
    `streaming=True` gives an `IterableDatasetDict`)."""
    layout = TokenLayout.load(path)  # first: a folder without it is no token dataset
    files = sharded_token_files(path)
    if not files:
        raise FileNotFoundError(f"{os.fspath(path)} holds neither a dataset saved with save_to_disk nor Parquet token "
                                "shards (<split>/<split>-00000.parquet, ...)")
    streaming = load_kwargs.get("streaming", False)
    splits = {split: _load_split(split, paths, load_kwargs) for split, paths in files.items()}
    return (IterableDatasetDict if streaming else DatasetDict)(splits), layout


def _load_split(split: str, paths: list[str], load_kwargs: dict) -> Dataset | IterableDataset:
    """One split's shards, read by `load_dataset("parquet")`; one without rows (which it cannot read)
    made empty with the shards' features."""
    if any(pq.read_metadata(path).num_rows for path in paths):
        return load_dataset("parquet", data_files={split: paths}, split=split, **load_kwargs)
    features = Features.from_arrow_schema(pq.read_schema(paths[0]))
    if load_kwargs.get("streaming"):
        return IterableDataset.from_generator(_no_rows, features=features)
    return Dataset.from_dict({name: [] for name in features}, features=features)


def _no_rows() -> Iterator[dict]:
    yield from ()
