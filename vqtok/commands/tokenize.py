"""`vqtok tokenize`: tokenize an image dataset with a trained tokenizer and save the tokens for any LM trainer.

    vqtok tokenize                      # the bundled set, the quickstart tokenizer
    vqtok tokenize --source uoft-cs/cifar10 --image_column img --tokenizer your-name/vq-cifar10
    vqtok tokenize --source path/to/images --splits train --output outputs/my_tokens
    vqtok tokenize --id_offset 32000 --bos_token_id 40000 --eos_token_id 40001
    torchrun --standalone --nproc_per_node 2 training/tokenize_dataset.py   # 2 CPU processes
    accelerate launch --num_processes 8 training/tokenize_dataset.py   # 8 GPUs
    vqtok tokenize --streaming --source 'shards/train-{000000..000099}.tar' \
        --splits train --rows_per_shard 100000 --output outputs/my_tokens   # streamed, sharded Parquet

Writes `--output`: a `DatasetDict` (one split per `--splits`, `save_to_disk`: Arrow files) whose rows
keep the dataset's other columns and gain `input_ids` (each image's codes in row-major order, shifted by
`--id_offset`, framed by `--bos_token_id` / `--eos_token_id` when given), plus `vqtok_tokens.json`
(the layout: K, grid, offset, BOS/EOS, tokenizer) that `vqtok prior` reads. Read it back
with `datasets.load_from_disk(output)` or `vqtok.load_tokenized(output)`.

With `--streaming` each split of `--source` (also webdataset tar shards: a brace range or a glob of
`.tar` files) is read as a stream, never whole, and written as Parquet shards
`--output/<split>/<split>-00000.parquet`, ... of the tokens of `--rows_per_shard` images each (fewer
where `--on_bad_image skip` drops some; the last shard is shorter: the shard size, not a shard count,
is chosen, as a stream's length is not known beforehand), beside the same `vqtok_tokens.json`. A shard
is renamed into place when complete: after a crash, rerun the same command and it keeps the finished
shards, skips their images in the stream without decoding them, and goes on with the next. The
streamed path runs in one process (launchers are refused) and takes no `--num_proc`. Read it back with
`vqtok.load_tokenized(output)` or `datasets.load_dataset("parquet", data_files={split: files})`.
"""

from __future__ import annotations

import argparse
import time

import torch
from datasets import DatasetDict

from vqtok.commands import command_parser, holdout_fraction
from vqtok import TokenLayout, save_tokenized, tokenize_dataset, tokenize_stream
from vqtok.data import image_splits, load_image_dataset, load_image_splits
from vqtok.data.image_streams import stream_split_files
from vqtok.data.images import held_out_split
from vqtok.tokens import TokenShards
from vqtok.tokens.tokenization import load_tokenizer_and_processor, process_state
from vqtok.validation import check_output_folder

DEFAULT_TOKENIZER = "outputs/quickstart/tokenizer"
DEFAULT_OUTPUT = "outputs/quickstart/tokens"
DEFAULT_ROWS_PER_SHARD = 100_000


def parse_args(argv=None) -> argparse.Namespace:
    parser = command_parser("tokenize", __doc__, announced=("tokenizer", "source", "splits", "output"))
    parser.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="tokenizer folder or Hub repo id")
    parser.add_argument("--source", default="sample",
                        help="'sample' (bundled), an image folder, a Hub dataset name, or (--streaming) .tar shards")
    parser.add_argument("--splits", nargs="+", default=["train", "test"], help="splits to tokenize")
    parser.add_argument("--image_column", default="image", help="the column holding the images")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="folder to save the token dataset in")
    parser.add_argument("--id_offset", type=int, default=0, help="added to every code id")
    parser.add_argument("--bos_token_id", type=int, default=None, help="id put before each image's tokens")
    parser.add_argument("--eos_token_id", type=int, default=None, help="id put after each image's tokens")
    parser.add_argument("--batch_size", type=int, default=256, help="images per batch")
    parser.add_argument("--num_proc", type=int, default=None, help="datasets worker processes (CPU)")
    parser.add_argument("--on_bad_image", choices=("fail", "skip"), default="fail",
                        help="an unreadable image stops the run (fail) or its row is dropped and reported (skip)")
    parser.add_argument("--keep_images", action="store_true", help="keep the image column beside the tokens")
    parser.add_argument("--streaming", action="store_true",
                        help="read the source as a stream and write resumable Parquet shards")
    parser.add_argument("--rows_per_shard", type=int, default=None,
                        help=f"images per Parquet shard with --streaming (default {DEFAULT_ROWS_PER_SHARD})")
    args = parser.parse_args(argv)
    if not args.streaming and args.rows_per_shard is not None:
        parser.error("--rows_per_shard sizes the Parquet shards of --streaming: pass --streaming too")
    if args.streaming and args.num_proc is not None:
        parser.error("--num_proc spreads a map-style dataset over worker processes; --streaming reads one stream")
    if args.streaming and args.rows_per_shard is None:
        args.rows_per_shard = DEFAULT_ROWS_PER_SHARD
    if args.streaming and args.rows_per_shard < 1:
        parser.error(f"--rows_per_shard must be at least 1, got {args.rows_per_shard}")
    return args


def main(argv=None) -> DatasetDict | dict[str, TokenShards]:
    args = parse_args(argv)
    state = process_state()
    if state.is_main_process:
        check_output_folder(args.output, "--output")
    tokenizer, processor = load_tokenizer_and_processor(args.tokenizer)
    layout_options = dict(id_offset=args.id_offset, bos_token_id=args.bos_token_id, eos_token_id=args.eos_token_id)
    layout = TokenLayout.for_tokenizer(tokenizer, **layout_options)
    if args.streaming:
        return tokenize_streams(args, tokenizer, processor, layout, layout_options)
    splits, started = DatasetDict(), time.perf_counter()
    for split, images in split_images(args, tokenizer).items():
        splits[split] = tokenize_dataset(
            images, tokenizer, processor=processor, batch_size=args.batch_size, num_proc=args.num_proc,
            on_bad_image=args.on_bad_image, keep_image_column=args.keep_images, desc=f"tokenizing {split}",
            **layout_options,
        )
    seconds = time.perf_counter() - started
    save_tokenized(splits, args.output, layout)
    if state.is_main_process:
        images = sum(len(split) for split in splits.values())
        print_layout(layout)
        for name, split in splits.items():
            print(f"  {name}: {len(split)} rows, columns {split.column_names}")
        print(f"first row's input_ids: {splits[args.splits[0]][0]['input_ids']}")
        print(f"tokenized {images} images in {seconds:.1f} s ({images / seconds:.0f} images/s)")
        print(f"saved tokens to {args.output}")
    return splits


def split_images(args: argparse.Namespace, tokenizer) -> dict:
    """The images of each of `--splits`; a source without a held-out split asked for (an image folder
    has only `train`) gives the part of `train` that `vqtok train` held out as it, and the rest as
    `train` (said in one line)."""
    held_out = held_out_split(image_splits(args.source, "--source"), args.splits)
    if held_out is None:
        return {split: load_image_dataset(args.source, split, args.image_column, "--source") for split in args.splits}
    fraction = holdout_fraction(tokenizer)
    parts = load_image_splits(args.source, "train", held_out, args.image_column, fraction, "--source")
    say_held_out(args.source, held_out, parts.split_off, len(parts.train), fraction)
    return {split: parts.train if split == "train" else parts.held_out if split == held_out
            else load_image_dataset(args.source, split, args.image_column, "--source") for split in args.splits}


def say_held_out(source: str, held_out: str, split_off: int, kept: int, fraction: float) -> None:
    print(f"--source {source!r} has no split {held_out!r}: it is the {split_off} 'train' images held out "
          f"for evaluation (fraction {fraction}, as `vqtok train` held them out), and 'train' the other {kept}")


def tokenize_streams(args: argparse.Namespace, tokenizer, processor, layout: TokenLayout,
                     layout_options: dict) -> dict[str, TokenShards]:
    """`--streaming`: each split of `--source` into Parquet shards under `--output` (`tokenize_stream`);
    a folder's split made by holding out part of `train`, as without `--streaming`."""
    fraction = holdout_fraction(tokenizer)
    folder = stream_split_files(args.source, args.splits, fraction, "--source")
    if folder is not None and folder.held_out:
        say_held_out(args.source, folder.held_out, folder.split_off, len(folder.files.get("train", [])), fraction)
    shards = {}
    for split in args.splits:
        shards[split] = tokenize_stream(
            args.source, tokenizer, args.output, split, image_column=args.image_column, processor=processor,
            batch_size=args.batch_size, rows_per_shard=args.rows_per_shard, on_bad_image=args.on_bad_image,
            keep_image_column=args.keep_images, desc=f"tokenizing {split}",
            files=folder.files[split] if folder is not None else None, **layout_options,
        )
    print_layout(layout)
    for split, result in shards.items():
        kept = f", {result.reused} kept from an earlier run" if result.reused else ""
        skipped = f", {result.skipped} image(s) skipped" if result.skipped else ""
        print(f"  {split}: {result.rows} rows in {len(result.files)} shard(s){kept}{skipped}")
    print(f"saved tokens to {args.output} (Parquet shards: <split>/<split>-00000.parquet, ...)")
    return shards


def print_layout(layout: TokenLayout) -> None:
    print(f"\n{layout.describe()} tokens per image, K={layout.codebook_size}, "
          f"{layout.sequence_length} ids per row; image ids in [{layout.id_offset}, {layout.id_offset + layout.codebook_size})")

