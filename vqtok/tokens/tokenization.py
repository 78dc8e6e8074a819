"""`tokenize_dataset`: an image dataset -> a dataset of token sequences, for any LM trainer.

Built on `datasets.Dataset.map(batched=True)` and the tokenizer's saved image processor: every
image is read, run through `VQImageProcessor` and encoded; its codes are laid out by a
`TokenLayout` (row-major, optional BOS/EOS and an id offset) into an `input_ids` column. The other
columns are kept. `num_proc` spreads the work over `datasets` worker processes; under several
Accelerate processes each process tokenizes its contiguous shard and the shards are gathered in
order, so every process ends with the whole dataset. `save_tokenized` writes it with
`save_to_disk` plus the layout (`vqtok_tokens.json`); `load_tokenized` reads both back.

An image that cannot be read or processed is reported with its row index: `on_bad_image="fail"`
raises at the first one, `"skip"` drops those rows and warns, listing every skipped row and why.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import pyarrow.compute as pc
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from datasets import Dataset, DatasetDict, Features, IterableDataset, List, Value, concatenate_datasets, load_from_disk
from datasets import Image as ImageFeature
from datasets.table import InMemoryTable

from ..auto import VQTokenizer
from ..data import check_on_bad_image, read_image
from ..parallel.launch import accelerator_options, check_launch
from ..processing import VQImageProcessor
from ..validation import check_positive_int
from .layout import TokenLayout
from .parquet_shards import load_tokenized_shards

# Temporary column carrying, per row, why its image could not be tokenized (null when it could).
_ERROR_COLUMN = "__vqtok_image_error__"
# Where a row's text and image go in its sequence (see `tokenize_dataset`).
DEFAULT_TEXT_TEMPLATE = "{text}<image>"
# Rows named one by one in the skip warning before the rest are only counted.
_LISTED_BAD_ROWS = 20


def load_tokenizer_and_processor(tokenizer, processor: VQImageProcessor | None = None):
    """`(model, processor)` for a tokenizer given as a model or a repo id / path.

    The processor is, in order: `processor` when given; the one saved beside the tokenizer
    (`preprocessor_config.json` in its folder or repo); else `VQImageProcessor.for_tokenizer`.
    ValueError when its output size or channels differ from the tokenizer's config."""
    model = VQTokenizer.from_pretrained(tokenizer) if isinstance(tokenizer, (str, os.PathLike)) else tokenizer
    config = getattr(model, "config", None)
    if config is None or not hasattr(model, "encode"):
        raise TypeError(f"tokenizer must be a vqtok tokenizer or its repo id / path, got {type(tokenizer).__name__}")
    if processor is None:
        processor = _saved_processor(config.name_or_path) or VQImageProcessor.for_tokenizer(config)
    crop = processor.crop_size or {}
    size = (crop.get("height"), crop.get("width"), processor.num_channels)
    if size != (config.image_size, config.image_size, config.in_channels):
        raise ValueError(
            f"the image processor gives {size[0]}x{size[1]} images with {size[2]} channel(s), but the tokenizer "
            f"expects {config.image_size}x{config.image_size} with {config.in_channels}"
        )
    return model.eval(), processor


def prepare_tokenizer(tokenizer, processor: VQImageProcessor | None, device, **layout_options):
    """`(model, processor, layout)`: the tokenizer and its processor (`load_tokenizer_and_processor`),
    the model moved to `device`, and the `TokenLayout` of its codes with `layout_options` (`id_offset`,
    `bos_token_id`, `eos_token_id`). A `VQMultimodalProcessor` gives its own three: the layout of an
    image among its text tokens."""
    if is_multimodal(tokenizer):
        given = {name: value for name, value in layout_options.items() if value not in (None, 0)}
        if given or processor is not None:
            raise ValueError(f"{sorted(given) or ['processor']} cannot be given with a VQMultimodalProcessor: the image "
                             "layout and processor are its own")
        return tokenizer.vq_model.to(device), tokenizer.image_processor, tokenizer.layout
    model, processor = load_tokenizer_and_processor(tokenizer, processor)
    layout = TokenLayout.for_tokenizer(model, **layout_options)
    return model.to(device), processor, layout


def is_multimodal(tokenizer) -> bool:
    """Whether `tokenizer` is a `vqtok.VQMultimodalProcessor` (told by what it has: `vqtok.tokens`
    does not import `vqtok.multimodal`, which builds on it)."""
    return hasattr(tokenizer, "vq_model") and hasattr(tokenizer, "encode_text")


class TextWithImage:
    """Per row, the ids of a text with its image: `template` with `{text}` replaced by the row's text
    and the processor's image placeholder by the image's tokens (`VQMultimodalProcessor.encode_text`)."""

    def __init__(self, multimodal_processor, template: str):
        placeholder = multimodal_processor.image_token
        if template.count(placeholder) != 1 or "{text}" not in template:
            raise ValueError(f"text_template must hold '{{text}}' and one {placeholder!r} (where the image goes), got "
                             f"{template!r}")
        self.processor, self.template = multimodal_processor, template

    def __call__(self, text, image_sequence, name: str) -> np.ndarray:
        if not isinstance(text, str):
            raise ValueError(f"{name}: its text is {text!r}, not a string; fill or drop such rows first")
        ids = self.processor.encode_text(self.template.replace("{text}", text), [image_sequence.tolist()])
        return np.asarray(ids, dtype=np.int64)


def _saved_processor(name_or_path: str | None) -> VQImageProcessor | None:
    if not name_or_path:
        return None
    try:
        return VQImageProcessor.from_pretrained(name_or_path)
    except (OSError, ValueError):
        return None  # no preprocessor_config.json beside the tokenizer


class BatchTokenizer:
    """The function `tokenize_dataset` maps (and `tokenize_stream` calls): a batch of image cells ->
    `input_ids` (null for a row whose image failed) and the reason of each failure. Picklable, so
    `num_proc` workers get a copy."""

    def __init__(self, model, processor, layout: TokenLayout, on_bad_image: str, row_offset: int = 0,
                 threads: int | None = None, text_with_image: TextWithImage | None = None):
        self.model, self.processor, self.layout = model, processor, layout
        self.on_bad_image, self.row_offset, self.threads = on_bad_image, row_offset, threads
        self.text_with_image = text_with_image

    def __call__(self, cells: Sequence, indices: Sequence[int], names: Sequence[str] | None = None,
                 texts: Sequence[str] | None = None) -> dict:
        """`cells`: the batch's images; `indices`: their rows (counted from `row_offset`); `names`:
        how a failure names each image (default: `row <row_offset + index>`); `texts`: each row's
        text, with `text_with_image` (then each row's ids are its text's with the image in it)."""
        if self.threads and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)  # a `num_proc` worker: share the cores
        names = names if names is not None else [f"row {self.row_offset + index}" for index in indices]
        errors: list[str | None] = [None] * len(cells)
        images = {}
        for position, cell in enumerate(cells):
            try:
                images[position] = read_image(cell)
            except Exception as error:  # noqa: BLE001 - any unreadable image is reported by row
                errors[position] = self._bad(names[position], "cannot read the image", error)
        pixels = self._process(images, names, errors)
        sequences: list[np.ndarray | None] = [None] * len(cells)
        if pixels:
            codes = self.model.encode(torch.stack(list(pixels.values())).to(self.model.device))
            for position, row in zip(pixels, self.layout.to_sequences(codes).cpu().numpy()):
                sequences[position] = row
        if self.text_with_image is not None:
            sequences = [row if row is None else self.text_with_image(texts[position], row, names[position])
                         for position, row in enumerate(sequences)]
        return {"input_ids": sequences, _ERROR_COLUMN: errors}

    def with_texts(self, cells: Sequence, texts: Sequence[str], indices: Sequence[int]) -> dict:
        """`__call__` in the order `datasets.map` passes two input columns and the indices."""
        return self(cells, indices, texts=texts)

    def _process(self, images: dict, names: Sequence[str], errors: list) -> dict[int, torch.Tensor]:
        """Pixel values of every readable image: one processor call for the batch, or image by image
        when the batch call fails, to find the rows at fault."""
        if not images:
            return {}
        try:
            batch = self.processor(list(images.values()), return_tensors="pt")["pixel_values"]
            return dict(zip(images, batch))
        except Exception:  # noqa: BLE001 - retried one by one below to name the rows
            pixels = {}
            for position, image in images.items():
                try:
                    pixels[position] = self.processor(image, return_tensors="pt")["pixel_values"][0]
                except Exception as error:  # noqa: BLE001
                    errors[position] = self._bad(names[position], "cannot process the image", error)
            return pixels

    def _bad(self, name: str, what: str, error: Exception) -> str:
        message = f"{name}: {what} ({type(error).__name__}: {error})"
        if self.on_bad_image == "fail":
            raise ValueError(f"{message}; pass on_bad_image='skip' to drop such rows") from error
        return message


def tokenize_dataset(
    dataset: Dataset,
    tokenizer,
    image_column: str = "image",
    *,
    processor: VQImageProcessor | None = None,
    id_offset: int = 0,
    bos_token_id: int | None = None,
    eos_token_id: int | None = None,
    batch_size: int = 256,
    num_proc: int | None = None,
    on_bad_image: str = "fail",
    keep_image_column: bool = False,
    desc: str = "tokenizing images",
    save_to: str | os.PathLike | None = None,
    text_column: str | None = None,
    text_template: str = DEFAULT_TEXT_TEMPLATE,
) -> Dataset:
    """Tokenize every image of `dataset` into an `input_ids` column.

    Args:
        dataset: a `datasets.Dataset` whose `image_column` holds images (the `Image` feature, PIL
            images, file paths or arrays).
        tokenizer: a vqtok tokenizer, or its repo id / path (loaded with `VQTokenizer.from_pretrained`);
            or a `vqtok.VQMultimodalProcessor`, to write each row's text and image as one sequence
            of the text tokenizer's ids (with `text_column`).
        image_column: the column holding the images.
        processor: the image processor; default: the one saved with the tokenizer (see
            `load_tokenizer_and_processor`).
        id_offset, bos_token_id, eos_token_id: the layout of `input_ids` (see `TokenLayout`): each
            row is `[bos] codes+id_offset [eos]`, the codes in row-major order (a position's R codes
            consecutively, for a tokenizer with R codes per position).
        batch_size: images per `map` batch (one processor call and one `encode` each).
        num_proc: `datasets` worker processes (CPU only; each uses a share of torch's threads).
        on_bad_image: `"fail"` (default) raises `ValueError` naming the first unreadable image's row;
            `"skip"` drops such rows and warns, listing them with the reason.
        keep_image_column: keep the images beside the tokens (default: dropped).
        desc: the progress bar's label.
        save_to: also write the result there with `save_tokenized` (main process only).
        text_column: with a `VQMultimodalProcessor`, the column of each image's text (a caption).
        text_template: where the text and the image go in a row's sequence: `{text}` is replaced by
            the row's text and the processor's placeholder (`<image>`) by the image's tokens; e.g.
            `"{text}<image>"` (text then image, the default) or `"<image>{text}"`.

    Returns:
        The dataset with `input_ids` (a list of int64 per row) and every other column, in the
        original row order; on every Accelerate process the whole dataset.
    """
    _check_arguments(dataset, image_column, on_bad_image)
    check_positive_int("batch_size", batch_size)
    check_positive_int("num_proc", num_proc, optional=True)
    text_with_image = interleaving(tokenizer, text_column, text_template, dataset.column_names)
    state = process_state()
    model, processor, layout = prepare_tokenizer(tokenizer, processor, state.device, id_offset=id_offset,
                                                 bos_token_id=bos_token_id, eos_token_id=eos_token_id)
    if num_proc and num_proc > 1 and state.device.type != "cpu":
        raise ValueError(
            f"num_proc={num_proc} forks worker processes, which cannot use {state.device.type}: "
            "use several Accelerate processes instead"
        )
    start, stop = _shard_bounds(len(dataset), state.num_processes, state.process_index)
    shard = dataset if state.num_processes == 1 else dataset.select(range(start, stop))
    threads = max(1, torch.get_num_threads() // num_proc) if num_proc and num_proc > 1 else None
    function = BatchTokenizer(model, processor, layout, on_bad_image, row_offset=start, threads=threads,
                              text_with_image=text_with_image)
    desc = desc if state.num_processes == 1 else f"{desc} (process {state.process_index})"
    tokenized = _map_shard(shard, function, image_column, keep_image_column, text_column, batch_size=batch_size,
                           num_proc=num_proc if num_proc and num_proc > 1 else None, desc=desc)
    if state.num_processes > 1:
        tokenized = _gather_in_order(tokenized)
    tokenized = _drop_bad_rows(tokenized, warn=state.is_main_process)
    if save_to is not None:
        save_tokenized(tokenized, save_to, layout)
    return tokenized


def interleaving(tokenizer, text_column: str | None, text_template: str, columns: Sequence[str]) -> TextWithImage | None:
    """What writes each row's text and image as one sequence (None for image tokens alone); ValueError
    when `text_column` comes without a `VQMultimodalProcessor`, or the reverse, or is not a column."""
    if not is_multimodal(tokenizer):
        if text_column is not None:
            raise ValueError(f"text_column={text_column!r} needs a vqtok.VQMultimodalProcessor as the tokenizer (the "
                             "text tokenizer to write the text with)")
        return None
    if text_column is None:
        raise ValueError("a VQMultimodalProcessor tokenizes a text with each image: name its column (text_column)")
    if text_column not in columns:
        raise ValueError(f"the data have no column {text_column!r} (text_column); columns: {list(columns)}")
    return TextWithImage(tokenizer, text_template)


def _check_arguments(dataset, image_column: str, on_bad_image: str) -> None:
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a datasets.Dataset (one split), got {type(dataset).__name__}")
    check_columns(dataset.column_names, image_column)
    check_on_bad_image(on_bad_image)


def check_columns(columns: Sequence[str], image_column: str, what: str = "dataset") -> None:
    """ValueError unless `columns` hold `image_column` and no `input_ids` (the column tokenization adds)."""
    if image_column not in columns:
        raise ValueError(f"{what} has no column {image_column!r} (image_column); columns: {list(columns)}")
    if "input_ids" in columns:
        raise ValueError(f"{what} already has an `input_ids` column; rename or remove it first")


def _map_shard(shard: Dataset, function: BatchTokenizer, image_column: str, keep_image_column: bool,
               text_column: str | None, **map_kwargs):
    """`shard.map(function)` over the image column (read undecoded, so each image is decoded inside
    `function`, where its errors are caught) and the text column if any, with the output's features:
    the kept columns, `input_ids` and the error column."""
    image_feature = shard.features[image_column]
    shard = undecoded(shard, image_column)
    features = token_features(shard.features, image_column, keep_image_column)
    features[_ERROR_COLUMN] = Value("string")
    if len(shard) == 0:  # `map` would return it without the new columns
        return Dataset.from_dict({name: [] for name in features}, features=features)
    if len(shard) == 1:
        map_kwargs["num_proc"] = None
    inputs = [image_column] if text_column is None else [image_column, text_column]
    tokenized = shard.map(function if text_column is None else function.with_texts, with_indices=True,
                          input_columns=inputs, batched=True, features=features,
                          remove_columns=None if keep_image_column else [image_column], **map_kwargs)
    if keep_image_column and isinstance(image_feature, ImageFeature):
        tokenized = tokenized.cast_column(image_column, image_feature)
    return tokenized


def undecoded(dataset: Dataset | IterableDataset, image_column: str) -> Dataset | IterableDataset:
    """`dataset` with its `Image` column read undecoded (`{"bytes", "path"}`), so that each image is
    decoded by `BatchTokenizer`, where its errors are caught and named."""
    if isinstance(dataset.features[image_column], ImageFeature):
        return dataset.cast_column(image_column, ImageFeature(decode=False))
    return dataset


def token_features(features: Features, image_column: str, keep_image_column: bool) -> Features:
    """The features of the tokens: the kept columns of `features` (all but the image column, unless
    `keep_image_column`) then `input_ids` (a list of int64)."""
    kept = Features({name: feature for name, feature in features.items() if keep_image_column or name != image_column})
    kept["input_ids"] = List(Value("int64"))
    return kept


def process_state() -> PartialState:
    """Accelerate's process state, on the CPU when `ACCELERATE_USE_CPU` says so or when a launcher
    started several processes on a machine without a GPU (`vqtok.parallel.launch.accelerator_options`), so
    that several CPU processes are seen as such. Raises `RuntimeError` (`vqtok.parallel.launch.check_launch`)
    when the state sees fewer processes than were launched: each would tokenize everything alone."""
    state = PartialState(**accelerator_options())
    check_launch(state)
    return state


def _shard_bounds(size: int, num_shards: int, index: int) -> tuple[int, int]:
    """Rows `[start, stop)` of contiguous shard `index` of `num_shards` (sizes differ by at most one)."""
    base, extra = divmod(size, num_shards)
    start = index * base + min(index, extra)
    return start, start + base + (index < extra)


def _gather_in_order(shard: Dataset) -> Dataset:
    """Every process's shard, concatenated in process order, on every process."""
    tables = gather_object([shard.flatten_indices().data.table])
    return concatenate_datasets([Dataset(InMemoryTable(table), info=shard.info.copy()) for table in tables])


def _drop_bad_rows(dataset: Dataset, warn: bool) -> Dataset:
    """Remove the rows whose image failed (warning with their row indices and reasons) and the
    error column."""
    errors = dataset.data.column(_ERROR_COLUMN).to_pylist()  # map's output has no indices mapping
    bad = [message for message in errors if message is not None]
    dataset = dataset.remove_columns([_ERROR_COLUMN])
    if not bad:
        return dataset
    if warn:
        warn_skipped(bad, len(errors), stacklevel=4)
    return dataset.select([index for index, message in enumerate(errors) if message is None])


def warn_skipped(bad: Sequence[str], total: int, stacklevel: int = 2) -> None:
    """Warn that the images described in `bad` (of `total`) were skipped, naming the first ones."""
    listed = "; ".join(bad[:_LISTED_BAD_ROWS]) + (f"; and {len(bad) - _LISTED_BAD_ROWS} more" if len(bad) > _LISTED_BAD_ROWS else "")
    warnings.warn(f"skipped {len(bad)} of {total} images that could not be tokenized: {listed}", stacklevel=stacklevel)


def save_tokenized(dataset: Dataset | DatasetDict, path: str | os.PathLike, layout: TokenLayout) -> str:
    """Write a token dataset (or a `DatasetDict` of splits) with `save_to_disk`, and its layout as
    `vqtok_tokens.json` beside it, on the main process only. Returns `path`."""
    state = process_state()
    if state.is_main_process:
        dataset.save_to_disk(os.fspath(path))
        layout.save(path)
    state.wait_for_everyone()
    return os.fspath(path)


def load_tokenized(path: str | os.PathLike) -> tuple[Dataset | DatasetDict, TokenLayout]:
    """A token dataset saved by `save_tokenized` (or `vqtok tokenize`) and its layout;
    one written as Parquet shards by `tokenize_stream` (`--streaming`) is read with
    `load_tokenized_shards`."""
    layout = TokenLayout.load(path)  # first: a folder without it is no token dataset
    if not saved_with_save_to_disk(path):
        return load_tokenized_shards(path)
    return load_from_disk(os.fspath(path)), layout


def saved_with_save_to_disk(path: str | os.PathLike) -> bool:
    """Whether `path` holds a dataset (or a `DatasetDict`) written by `save_to_disk`."""
    return any(os.path.isfile(os.path.join(path, name)) for name in ("dataset_dict.json", "dataset_info.json"))


def tokenized_split(tokens: Dataset | DatasetDict, split: str, source: str | os.PathLike, option: str = "split") -> Dataset:
    """The split `split` of a token dataset loaded from `source` (`load_tokenized`); `ValueError`
    naming `option`, the split and the splits there are when it has no such split."""
    if not isinstance(tokens, DatasetDict):
        raise ValueError(f"{option}={split!r}: the token dataset at {os.fspath(source)} has no named splits "
                         "(it was saved as one Dataset); save a DatasetDict to pick a split")
    if split not in tokens:
        raise ValueError(f"{option}={split!r} is not a split of the token dataset at {os.fspath(source)}; it has "
                         f"{sorted(tokens)}")
    return tokens[split]


def codes_from_dataset(dataset: Dataset, layout: TokenLayout, column: str = "input_ids") -> torch.Tensor:
    """The codes `[N, *layout.token_shape]` (torch.long, in [0, K)) of a token dataset's `column`, checked against
    `layout` (ValueError naming the first row that does not fit)."""
    if column not in dataset.column_names:
        raise ValueError(f"dataset has no column {column!r}; columns: {dataset.column_names}")
    if len(dataset) == 0:
        return torch.empty(0, *layout.token_shape, dtype=torch.long)
    rows = dataset.with_format("arrow", columns=[column])[:][column].combine_chunks()
    lengths = pc.unique(pc.list_value_length(rows)).to_pylist()
    if lengths != [layout.sequence_length]:
        raise ValueError(f"every row of {column!r} must have {layout.sequence_length} ids, got lengths {sorted(lengths)[:5]}")
    values = rows.flatten().to_numpy(zero_copy_only=False)
    return layout.to_codes(torch.from_numpy(values.astype(np.int64)).reshape(len(rows), -1))
