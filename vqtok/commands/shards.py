"""`vqtok shards`: write an image folder (or the bundled set, or a Hub dataset) into webdataset tar shards.

    vqtok shards --source path/to/images --output shards --samples_per_shard 1000
    vqtok shards --source sample --splits train test --output outputs/sample_shards

Writes `--output/<split>-000000.tar`, `<split>-000001.tar`, ...: sample `i` of a split is
`{i:09d}.<ext>`, the image file's own bytes (or a PNG of an in-memory image). Train on them with
`data.source='--output/train-{000000..000009}.tar'` (or a glob, `'--output/train-*.tar'`) and
`data.streaming=true`, or tokenize them with `vqtok tokenize --source ... --streaming`.
An image that cannot be read stops the command, named.
"""

from __future__ import annotations

import argparse

from tqdm.auto import tqdm

from vqtok.commands import command_parser
from vqtok.data.image_streams import open_image_stream, write_shards
from vqtok.training.arguments import check_output_folder


def parse_args(argv=None) -> argparse.Namespace:
    parser = command_parser("shards", __doc__)
    parser.add_argument("--source", required=True, help="'sample' (bundled), an image folder, or a Hub dataset name")
    parser.add_argument("--splits", nargs="+", default=["train"],
                        help="splits to write (an image folder has one: 'train')")
    parser.add_argument("--image_column", default="image", help="the column holding the images (Hub datasets)")
    parser.add_argument("--output", required=True, help="folder to write the shards into")
    parser.add_argument("--samples_per_shard", type=int, default=1000, help="images per tar shard")
    args = parser.parse_args(argv)
    if args.samples_per_shard < 1:
        parser.error(f"--samples_per_shard must be at least 1, got {args.samples_per_shard}")
    return args


def main(argv=None) -> dict[str, list[str]]:
    args = parse_args(argv)
    check_output_folder(args.output, "--output")
    written = {}
    for split in args.splits:
        stream = open_image_stream(args.source, split=split, image_column=args.image_column)
        cells = (row["image"] for row in tqdm(stream, desc=f"sharding {split}", unit="images"))
        written[split] = write_shards(cells, args.output, args.samples_per_shard, prefix=split)
        print(f"wrote {len(written[split])} shard(s) of split {split!r} to {args.output}")
    return written

