#!/usr/bin/env python
"""Tokenization throughput (images/s): the `tokenize_dataset` pipeline beside bare `encode`.

In one process, on the bundled sample set's training split (2480 PNG-encoded 32x32 images) saved
to disk and read back as Arrow (as a real dataset is):

- bare `encode`: `tokenizer.encode` on the already decoded and processed `pixel_values`, batches of
  `--batch_size`;
- pipeline: `vqtok.tokenize_dataset` (image decoding, `VQImageProcessor`, `encode`, writing the
  `input_ids` Arrow cache file), same batch size, `datasets` caching off so that every run works.

Runs alternate (encode, pipeline, encode, ...) `--repeats` times after one warm-up of each; the
medians are printed with their ratio (the pipeline's cost as a multiple of bare encode's; target
<= 1.5).

    python benchmarks/tokenization_throughput.py [--tokenizer outputs/quickstart/tokenizer] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import datasets
import torch

from vqtok import tokenize_dataset
from vqtok.data import load_sample_dataset
from vqtok.tokens.tokenization import load_tokenizer_and_processor


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default="outputs/quickstart/tokenizer")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    return parser.parse_args(argv)


def encode_seconds(tokenizer, pixel_values: torch.Tensor, batch_size: int) -> float:
    started = time.perf_counter()
    for batch in pixel_values.split(batch_size):
        tokenizer.encode(batch)
    return time.perf_counter() - started


def pipeline_seconds(dataset, tokenizer, processor, batch_size: int) -> float:
    started = time.perf_counter()
    tokenize_dataset(dataset, tokenizer, processor=processor, batch_size=batch_size)
    return time.perf_counter() - started


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    datasets.disable_caching()
    datasets.disable_progress_bars()
    tokenizer, processor = load_tokenizer_and_processor(args.tokenizer)
    with tempfile.TemporaryDirectory() as folder:
        load_sample_dataset()["train"].save_to_disk(folder)
        images = datasets.load_from_disk(folder)
        pixel_values = processor(list(images["image"]), return_tensors="pt")["pixel_values"]
        count = len(images)
        encode_seconds(tokenizer, pixel_values, args.batch_size)  # warm-up
        pipeline_seconds(images, tokenizer, processor, args.batch_size)
        encode_runs, pipeline_runs = [], []
        for _ in range(args.repeats):
            encode_runs.append(encode_seconds(tokenizer, pixel_values, args.batch_size))
            pipeline_runs.append(pipeline_seconds(images, tokenizer, processor, args.batch_size))
    encode_rate = count / statistics.median(encode_runs)
    pipeline_rate = count / statistics.median(pipeline_runs)
    print(f"{count} images of 32x32, batch {args.batch_size}, {torch.get_num_threads()} torch thread(s), "
          f"median of {args.repeats} runs")
    print("| what | images/s | cost x bare encode |")
    print("|---|---:|---:|")
    print(f"| bare `encode` on decoded tensors | {encode_rate:.0f} | 1.00 |")
    print(f"| `tokenize_dataset` (decode PNG, process, encode, write Arrow) | {pipeline_rate:.0f} | "
          f"{encode_rate / pipeline_rate:.2f} |")
    return {"encode_images_per_second": encode_rate, "pipeline_images_per_second": pipeline_rate,
            "cost_ratio": encode_rate / pipeline_rate}


if __name__ == "__main__":
    main()
