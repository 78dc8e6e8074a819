"""`vqtok shards`: write an image folder (or the bundled set, or a Hub dataset) into webdataset tar shards.

    vqtok shards --source path/to/images --output shards --samples_per_shard 1000
    vqtok shards --source sample --splits train test --output outputs/sample_shards

Writes `--output/<split>-000000.tar`, `<split>-000001.tar`, ...: sample `i` of a split is
`{i:09d}.<ext>`, the image file's own bytes (or a PNG of an in-memory image). Train on them with
`data.source='--output/train-{000000..000009}.tar'` (or a glob, `'--output/train-*.tar'`) and
`data.streaming=true`, or tokenize them with `vqtok tokenize --source ... --streaming`.
An image that cannot be read stops the command, named. A folder without a split asked for (an image
folder has only `train`) holds out part of `train` as it, the images `vqtok train` holds out, and
says so. Shards of a split already in `--output` are refused (a glob would read both runs' shards as
one set) unless `--overwrite`, which replaces them once the new ones are complete.
"""

from __future__ import annotations

import argparse

from tqdm.auto import tqdm

from vqtok.commands import command_parser
from vqtok.data.image_streams import earlier_shards, open_image_stream, stream_split_files, write_shards
from vqtok.training.arguments import DataArguments
from vqtok.validation import check_output_folder


def parse_args(argv=None) -> argparse.Namespace:
    parser = command_parser("shards", __doc__)
    parser.add_argument("--source", required=True, help="'sample' (bundled), an image folder, or a Hub dataset name")
    parser.add_argument("--splits", nargs="+", default=["train"],
                        help="splits to write (an image folder has one: 'train')")
    parser.add_argument("--image_column", default="image", help="the column holding the images (Hub datasets)")
    parser.add_argument("--output", required=True, help="folder to write the shards into")
    parser.add_argument("--samples_per_shard", type=int, default=1000, help="images per tar shard")
    parser.add_argument("--holdout_fraction", type=float, default=DataArguments.options["holdout_fraction"].default,
                        help="the part of a folder's 'train' held out as a split it lacks (as `vqtok train` does)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the shards of a split that --output already holds (an earlier run's)")
    args = parser.parse_args(argv)
    if args.samples_per_shard < 1:
        parser.error(f"--samples_per_shard must be at least 1, got {args.samples_per_shard}")
    return args


def main(argv=None) -> dict[str, list[str]]:
    args = parse_args(argv)
    check_output_folder(args.output, "--output")
    try:  # every split checked before any is written
        for split in args.splits:
            earlier_shards(args.output, split, args.overwrite)
    except FileExistsError as error:
        raise FileExistsError(f"{error} (--overwrite)") from None
    splits = stream_split_files(args.source, args.splits, args.holdout_fraction, "--source")
    if splits is not None and splits.held_out:
        print(f"--source {args.source!r} has no split {splits.held_out!r}: holding out {splits.split_off} of its 'train' "
              f"images as it (--holdout_fraction {args.holdout_fraction}, the images `vqtok train` holds out)")
    written = {}
    for split in args.splits:
        stream = open_image_stream(args.source, split=split, image_column=args.image_column,
                                   **({"files": splits.files[split]} if splits is not None else {}))
        cells = (row["image"] for row in tqdm(stream, desc=f"sharding {split}", unit="images"))
        written[split] = write_shards(cells, args.output, args.samples_per_shard, prefix=split, overwrite=args.overwrite)
        print(f"wrote {len(written[split])} shard(s) of split {split!r} to {args.output}")
    return written

