"""`tokenize_stream`: one split of a streamed image source -> sharded Parquet token files, resumable.

For image sets too large to hold as one `datasets.Dataset` (what `tokenize_dataset` maps over): the
source is read as a stream (`vqtok.data.image_streams.open_image_stream`: the bundled set, webdataset tar
shards, a folder of images, a Hub dataset; or any `datasets.IterableDataset`), tokenized batch by
batch with the code `tokenize_dataset` uses (`BatchTokenizer`: the tokenizer's saved processor, the
`TokenLayout` with its offset and BOS/EOS) and written as::

    output/vqtok_tokens.json                the layout (`TokenLayout.save`)
    output/<split>/<split>-00000.parquet    the tokens of the stream's images [0, rows_per_shard)
    output/<split>/<split>-00001.parquet    images [rows_per_shard, 2 * rows_per_shard), ...

Shard `i` holds the rows of the `rows_per_shard` images `[i * rows_per_shard, (i + 1) * rows_per_shard)`
of the stream, in order (fewer where bad images were skipped; the last shard may be shorter): the
stream's other columns, then `input_ids`, as `tokenize_dataset` gives them. Each shard is written as
`<name>.partial` and renamed when complete; its Parquet metadata (key `vqtok`) records the run's
options, how far into the stream it ends, the stream's `state_dict` there, and whether it is the last.

Resuming: a rerun with the same options keeps the finished shards (ValueError naming the options that
differ otherwise), restores the stream's state after the last of them (`IterableDataset.load_state_dict`:
the rows they hold are skipped, their images neither decoded nor encoded, finished source files not
even opened) and goes on with the next shard; a finished split is not read again. The stream must give
its rows in the same order on every pass (a shuffle buffer's state is not restored exactly).

Read the result with `load_tokenized_shards(output)` (`vqtok.tokens.parquet_shards`) or
`vqtok.load_tokenized(output)`, or with plain `datasets.load_dataset("parquet", data_files={split: files})`
(`sharded_token_files` lists them).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from itertools import islice

import pyarrow as pa
import pyarrow.parquet as pq
from datasets import Features, IterableDataset
from datasets import Image as ImageFeature
from datasets.table import embed_table_storage
from tqdm.auto import tqdm

from ..data import check_on_bad_image
from ..data.image_streams import file_changes, file_records, open_image_stream, source_files
from ..processing import VQImageProcessor
from ..validation import check_positive_int
from .layout import LAYOUT_FILE, TokenLayout
from .parquet_shards import PROGRESS_KEY, listed_shards, read_progress, shard_path
from .tokenization import (
    _ERROR_COLUMN,
    DEFAULT_TEXT_TEMPLATE,
    BatchTokenizer,
    check_columns,
    interleaving,
    prepare_tokenizer,
    process_state,
    saved_with_save_to_disk,
    token_features,
    undecoded,
    warn_skipped,
)

# Rows gathered before they are written as one Parquet row group.
_ROW_GROUP_ROWS = 8192
_SPLIT_NAME = re.compile(r"\w+(\.\w+)*")


@dataclass(frozen=True)
class TokenShards:
    """One split's shards, as `tokenize_stream` leaves them.

    Attributes:
        split: the split's name (its folder in the output).
        files: every shard of the split, in order.
        rows: the token rows they hold.
        images: the stream's images they cover (`rows` plus `skipped`).
        skipped: the images that could not be tokenized (`on_bad_image="skip"`).
        reused: the shards kept from an earlier, interrupted run.
    """

    split: str
    files: list[str]
    rows: int
    images: int
    skipped: int
    reused: int


def tokenize_stream(
    source: str | os.PathLike | IterableDataset,
    tokenizer,
    output: str | os.PathLike,
    split: str = "train",
    image_column: str = "image",
    *,
    processor: VQImageProcessor | None = None,
    id_offset: int = 0,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    batch_size: int = 256,
    rows_per_shard: int = 100_000,
    on_bad_image: str = "fail",
    keep_image_column: bool = False,
    desc: str | None = None,
    files: list[str] | None = None,
    text_column: str | None = None,
    text_template: str = DEFAULT_TEXT_TEMPLATE,
) -> TokenShards:
    """Tokenize one split of a streamed source into Parquet shards `output/<split>/<split>-NNNNN.parquet`
    (see the module docstring), resuming an interrupted run.

    Args:
        source: a source `vqtok.data.image_streams.open_image_stream` reads (`"sample"`, tar shards, an image
            folder, a Hub dataset name), or a `datasets.IterableDataset` (then `split` only names the
            output folder).
        tokenizer: a vqtok tokenizer, or its repo id / path; or a `vqtok.VQMultimodalProcessor`, with
            `text_column` and `text_template` as in `tokenize_dataset`.
        output: the folder of the token dataset (`vqtok_tokens.json` and one folder per split).
        split: the split to read and to write.
        image_column: the column holding the images (of the source: see `open_image_stream`).
        processor, id_offset, bos_token_id, eos_token_id, batch_size: as in `tokenize_dataset`.
        rows_per_shard: the stream's images per shard.
        on_bad_image: `"fail"` (default) raises `ValueError` at the first image that cannot be
            tokenized, naming it by its row in the stream and its webdataset shard and key (or its
            file); `"skip"` drops such images, counts them and warns, naming them.
        keep_image_column: keep the images (embedded) beside the tokens.
        desc: the progress bar's label (default: `tokenizing <split>`).
        files: the files of a local source to read (default: all of the split's; a folder's split
            made by holding out part of `train`: `vqtok.data.image_streams.stream_split_files`).
            The shards record the files read (names and sizes): a rerun on other files is refused,
            naming them, since its finished shards would hold images the source no longer has and
            miss others.
        text_column, text_template: as in `tokenize_dataset` (a stream's text column: a Hub dataset's
            or an `IterableDataset`'s).

    Returns:
        The split's `TokenShards`. Runs in one process only (ValueError under several).
    """
    _check_stream_arguments(source, split, batch_size, rows_per_shard, on_bad_image)
    state = process_state()
    if state.num_processes > 1:
        raise ValueError(f"tokenize_stream runs in one process, got {state.num_processes}: several processes would "
                         "each write every shard; run it without a launcher (torchrun / accelerate launch)")
    model, processor, layout = prepare_tokenizer(tokenizer, processor, state.device, id_offset=id_offset,
                                                 bos_token_id=bos_token_id, eos_token_id=eos_token_id)
    if files is None and not isinstance(source, IterableDataset):
        files = source_files(os.fspath(source), split, "source")
    stream, column = _open_stream(source, split, image_column, files)
    text_with_image = interleaving(tokenizer, text_column, text_template, list(stream.features))
    features = token_features(stream.features, column, keep_image_column)
    if keep_image_column:
        features[column] = ImageFeature()  # stored with the bytes embedded, decoded when read
    target = _SplitOutput(_prepare_output(output, split, layout), split, features,
                          _run_options(source, split, image_column, rows_per_shard, keep_image_column, layout, files,
                                       text_column and {"text_column": text_column, "text_template": text_template}))
    finished = _finished_shards(target)
    previous = finished[-1] if finished else None
    if previous is not None and previous["last"]:
        return _summary(split, finished, reused=len(finished))
    function = BatchTokenizer(model, processor, layout, on_bad_image, text_with_image=text_with_image)
    written, bad = _write_shards(stream, function, column, target, previous, batch_size, desc or f"tokenizing {split}",
                                 text_column)
    if bad:
        warn_skipped(bad, written[-1]["rows_read"] - (previous["rows_read"] if previous else 0), stacklevel=3)
    return _summary(split, finished + written, reused=len(finished))


def _check_stream_arguments(source, split, batch_size, rows_per_shard, on_bad_image) -> None:
    if not isinstance(source, (str, os.PathLike, IterableDataset)):
        raise TypeError(f"source must be a source name / path or a datasets.IterableDataset, got {type(source).__name__}")
    if not isinstance(split, str) or not _SPLIT_NAME.fullmatch(split):
        raise ValueError(f"split must be a name of word characters and dots (a folder of the output), got {split!r}")
    check_positive_int("batch_size", batch_size)
    check_positive_int("rows_per_shard", rows_per_shard)
    check_on_bad_image(on_bad_image)


def _open_stream(source, split: str, image_column: str, files: list[str] | None) -> tuple[IterableDataset, str]:
    """The stream (its image column undecoded) and the name of its image column."""
    if isinstance(source, IterableDataset):
        stream, column = source, image_column
    else:
        stream = open_image_stream(os.fspath(source), split=split, image_column=image_column,
                                   **({"files": files} if files is not None else {}))
        column = "image"
    if stream.features is None:
        raise ValueError("the stream's columns are unknown (features is None): give it features (IterableDataset.cast)")
    check_columns(list(stream.features), column, what="the stream")
    return undecoded(stream, column), column


def _run_options(source, split, image_column, rows_per_shard, keep_image_column, layout: TokenLayout,
                 files: list[str] | None, text: dict | None) -> dict:
    """What a rerun must share with the run that wrote the finished shards (as JSON reads it back);
    `text`: the text column and template of sequences of text and image."""
    return {
        **(text or {}),
        "source": None if isinstance(source, IterableDataset) else os.fspath(source),
        "split": split,
        "image_column": image_column,
        "rows_per_shard": rows_per_shard,
        "keep_image_column": keep_image_column,
        "layout": asdict(layout),
        "files": file_records(files) if files is not None else None,
    }


def _prepare_output(output, split: str, layout: TokenLayout) -> str:
    """Check `output` (a folder, not a `save_to_disk` dataset, of this layout when it has one), write
    the layout there and make the split's folder; returns that folder."""
    output = os.fspath(output)
    if os.path.exists(output) and not os.path.isdir(output):
        raise OSError(f"output {output!r} is a file, not a folder: choose a folder to write into")
    if saved_with_save_to_disk(output):
        raise ValueError(f"output {output!r} holds a dataset saved with save_to_disk (tokenize_dataset): "
                         "choose another folder")
    if os.path.isfile(os.path.join(output, LAYOUT_FILE)):
        saved = TokenLayout.load(output)
        if saved != layout:
            raise ValueError(f"output {output!r} holds tokens of another layout "
                             f"({_differences(asdict(saved), asdict(layout))}): rerun with its options, or choose another folder")
    else:
        layout.save(output)
    folder = os.path.join(output, split)
    os.makedirs(folder, exist_ok=True)
    return folder


def _differences(there: dict, now: dict) -> str:
    """`key: old there, new now; ...` for the keys whose values differ."""
    return "; ".join(f"{key}: {there.get(key)!r} there, {now.get(key)!r} now"
                     for key in now if there.get(key) != now.get(key))


@dataclass(frozen=True)
class _SplitOutput:
    """Where a split's shards go (`folder`), their rows' `features`, and the options of the run."""

    folder: str
    split: str
    features: Features
    run: dict

    def shard(self, index: int) -> _ShardWriter:
        return _ShardWriter(shard_path(self.folder, self.split, index), self.features)


def _finished_shards(target: _SplitOutput) -> list[dict]:
    """The progress records of the finished shards 0, 1, ... (up to the first gap, or the last shard),
    each checked to come from a run with the options `target.run`."""
    finished = []
    for expected, (index, path) in enumerate(listed_shards(target.folder, target.split)):
        if index != expected:
            break
        progress = read_progress(path)
        recorded = progress["run"].get("files")
        changes = file_changes(recorded, target.run["files"]) if recorded is not None and target.run["files"] else ""
        if changes:
            raise ValueError(f"{path} was written from other files than the source holds now ({changes}): its rows "
                             "would be kept and the rest read from other images; put the files back as they were, or "
                             "tokenize into another output folder")
        options = {key: value for key, value in progress["run"].items() if key != "files"}
        now = {key: value for key, value in target.run.items() if key != "files"}
        if options != now:
            raise ValueError(f"{path} was written with other options ({_differences(options, now)}): "
                             "rerun with those to resume, or choose another output folder")
        finished.append(progress)
        if progress["last"]:
            break
    return finished


class _ShardWriter:
    """One shard: written into `<path>.partial` in row groups, renamed to `path` when finished."""

    def __init__(self, path: str, features: Features):
        self.path, self.features = path, features
        self.writer = pq.ParquetWriter(path + ".partial", features.arrow_schema)
        self.pending: list[pa.Table] = []  # rows not written yet, until they fill a row group
        self.rows = self.skipped = self.written = 0

    def add(self, columns: dict, skipped: int) -> None:
        """Add rows (`columns`: a list of values per feature) and count `skipped` images."""
        table = pa.Table.from_pydict(self.features.encode_batch(columns), schema=self.features.arrow_schema)
        self.pending.append(embed_table_storage(table))  # images read from their files, when kept
        self.rows += table.num_rows
        self.skipped += skipped
        if self.rows - self.written >= _ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.concat_tables(self.pending))
            self.pending, self.written = [], self.rows

    def finish(self, progress: dict) -> dict:
        """Write the rest and the progress record (`progress` plus the row counts), rename the file
        into place; returns the record."""
        self._flush()
        progress = {**progress, "tokenized": self.rows, "skipped": self.skipped}
        self.writer.add_key_value_metadata({PROGRESS_KEY: json.dumps(progress)})
        self.writer.close()
        os.replace(self.path + ".partial", self.path)
        return {**progress, "path": self.path}

    def abandon(self) -> None:
        """Close the unfinished file (it stays `<path>.partial`, rewritten by the next run)."""
        self.writer.close()


def _write_shards(stream: IterableDataset, function: BatchTokenizer, column: str, target: _SplitOutput,
                  previous: dict | None, batch_size: int, desc: str, text_column: str | None) -> tuple[list[dict], list[str]]:
    """Tokenize the stream, from where `previous` (the last finished shard's record) ends, into the
    next shards; returns their progress records and the descriptions of the images skipped."""
    if previous is not None:
        stream.load_state_dict(previous["stream_state"])  # the finished shards' rows are not read again
    rows_per_shard = target.run["rows_per_shard"]
    row = previous["rows_read"] if previous else 0
    index = previous["shard"] + 1 if previous else 0
    written, bad, writer = [], [], None
    progress_bar = tqdm(desc=desc, unit="images", initial=row)
    try:
        for number, (batch, stream_state, following) in enumerate(_batches(stream, batch_size, rows_per_shard, row)):
            if number == 0 and previous is not None:
                _check_resumed_at(previous, batch[0], column)
            writer = writer or target.shard(index)
            columns, errors = _tokenize_batch(function, batch, column, row, target.features, text_column)
            writer.add(columns, skipped=len(errors))
            bad += errors
            row += len(batch)
            progress_bar.update(len(batch))
            if row % rows_per_shard == 0 or following is None:
                written.append(writer.finish(_progress(target.run, index, row, stream_state, following, column)))
                writer, index = None, index + 1
    finally:
        progress_bar.close()
        if writer is not None:
            writer.abandon()
    if not written:  # an empty stream: one empty shard marks the split finished
        written.append(target.shard(index).finish(_progress(target.run, index, row, stream.state_dict(), None, column)))
    _remove_stale_shards(target.folder, target.split, after=written[-1]["shard"])
    return written, bad


def _progress(run: dict, index: int, rows_read: int, stream_state: dict, following: dict | None, column: str) -> dict:
    """A shard's progress record (`_ShardWriter.finish` adds its row counts): see `read_progress`."""
    return {"run": run, "shard": index, "rows_read": rows_read, "last": following is None,
            "stream_state": stream_state, "next": None if following is None else _where(following, column)}


def _batches(stream: IterableDataset, batch_size: int, rows_per_shard: int, first_row: int) -> Iterator[tuple]:
    """`(rows, state, following)` for the stream's batches (its row `first_row` first): at most
    `batch_size` rows, never across a shard's end; `state`: the stream's `state_dict` after the
    batch's last row; `following`: the next row (read ahead), None after the last batch."""
    iterator = iter(stream)
    pending = next(iterator, None)
    row = first_row
    while pending is not None:
        size = min(batch_size, rows_per_shard - row % rows_per_shard)
        rows = [pending, *islice(iterator, size - 1)]
        state = stream.state_dict()
        pending = next(iterator, None)
        yield rows, state, pending
        row += len(rows)


def _tokenize_batch(function: BatchTokenizer, rows: list[dict], column: str, first_row: int,
                    features: Features, text_column: str | None) -> tuple[dict, list[str]]:
    """The columns of the batch's rows whose image was tokenized, and why the others were not."""
    numbers = range(first_row, first_row + len(rows))
    names = [_row_name(number, row, column) for number, row in zip(numbers, rows)]
    texts = {"texts": [row[text_column] for row in rows]} if text_column else {}
    result = function([row[column] for row in rows], list(numbers), names, **texts)
    errors = result[_ERROR_COLUMN]
    good = [position for position, error in enumerate(errors) if error is None]
    columns = {name: [rows[position][name] for position in good] for name in features if name != "input_ids"}
    columns["input_ids"] = [result["input_ids"][position].tolist() for position in good]
    return columns, [error for error in errors if error is not None]


def _where(row: dict, column: str) -> str | None:
    """Where a stream row comes from: its webdataset shard and key, or its file (None when unknown)."""
    if "__key__" in row and "__url__" in row:
        return f"sample {row['__key__']} of shard {row['__url__']}"
    cell = row.get(column)
    path = cell.get("path") if isinstance(cell, dict) and not cell.get("bytes") else None
    return f"file {path}" if path else None


def _row_name(number: int, row: dict, column: str) -> str:
    where = _where(row, column)
    return f"row {number}" + (f" ({where})" if where else "")


def _check_resumed_at(previous: dict, row: dict, column: str) -> None:
    """ValueError unless the resumed stream starts with the row that followed the last finished shard."""
    expected, found = previous.get("next"), _where(row, column)
    if expected != found:
        raise ValueError(f"the stream did not resume where {previous['path']} ends: the next row was {expected}, "
                         f"now it is {found}; the source changed since: choose another output folder")


def _remove_stale_shards(folder: str, split: str, after: int) -> None:
    """Delete shard files numbered above `after` (left by an earlier run over a longer stream)."""
    for index, path in listed_shards(folder, split):
        if index > after:
            os.remove(path)


def _summary(split: str, shards: list[dict], reused: int) -> TokenShards:
    return TokenShards(split, [shard["path"] for shard in shards], rows=sum(shard["tokenized"] for shard in shards),
                       images=shards[-1]["rows_read"], skipped=sum(shard["skipped"] for shard in shards), reused=reused)
