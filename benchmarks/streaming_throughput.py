#!/usr/bin/env python
"""Streaming throughput (images/s): what the streaming loader delivers alone, and what training consumes.

In one run, on the quickstart config (32x32, batch 64, random crop and flip), with the bundled
set's training split (2480 images) written into webdataset tar shards of `--samples_per_shard`:

- loader alone: `StreamingImages.batches` (tar reading, the seeded block shuffle of
  `data.shuffle_buffer` images, PNG decoding, `VQImageProcessor`, crop and flip) with
  `--num_workers` threads, `--batches` batches after two warm-up ones, `--repeats` times (median);
- training, in memory: `train_tokenizer` on the same images loaded as a map-style dataset (the
  quickstart's own path, decoding in the training process), `--steps` timed steps;
- training, streamed: the same run reading the shards (`data.streaming=true`, `--num_workers`);
  the two runs alternate `--repeats` times (medians).

Printed: the three rates, loader / streamed training (how far the loader is ahead of what training
takes; target > 1: the loader is not the bottleneck) and streamed / in-memory training (target:
about 1).

    python benchmarks/streaming_throughput.py [--num_workers 1] [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from accelerate.utils import set_seed
from datasets import Image

from vqtok import VQTokenizer
from vqtok.data import PixelTransform, load_sample_dataset, pixel_dataset
from vqtok.data.image_streams import write_shards
from vqtok.training import train_tokenizer
from vqtok.training.streamed_data import StreamingImages
from vqtok.training.run_config import load_run_config
from vqtok.training.trainer import THROUGHPUT_SKIP_STEPS

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "quickstart.yaml"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_workers", type=int, default=1, help="the loader's decoding threads")
    parser.add_argument("--samples_per_shard", type=int, default=100)
    parser.add_argument("--batches", type=int, default=20, help="timed loader batches per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per run")
    return parser.parse_args(argv)


def stream_of(run, shards: str) -> StreamingImages:
    config, data, training = run.model, run.data, run.training
    transform = PixelTransform(config.image_size, config.in_channels, data.augment, data.augment)
    return StreamingImages(shards, "train", transform, training.seed, data.shuffle_buffer, on_bad_image=data.on_bad_image)


def loader_rate(run, shards: str, num_workers: int, batches: int) -> float:
    """Images/s of the loader alone over `batches` batches, after two warm-up ones."""
    iterator = stream_of(run, shards).batches(run.training.batch_size, num_workers)
    for _ in range(2):
        next(iterator)
    started = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * run.training.batch_size / (time.perf_counter() - started)


def training_rate(run, train_set, output_dir: Path, steps: int, num_workers: int) -> float:
    """Images/s the trainer measured over `steps` steps (after its THROUGHPUT_SKIP_STEPS)."""
    training = run.training
    training.max_steps, training.output_dir, training.num_workers = THROUGHPUT_SKIP_STEPS + steps, str(output_dir), num_workers
    training.report_to, training.log_every = "none", training.max_steps
    set_seed(training.seed)
    model = VQTokenizer.from_config(run.model)
    return train_tokenizer(model, train_set, None, training)["images_per_second"]


def main(argv=None) -> dict:
    args = parse_args(argv)
    run = load_run_config(str(CONFIG), [])
    with tempfile.TemporaryDirectory() as folder:
        cells = (row["image"] for row in load_sample_dataset()["train"].cast_column("image", Image(decode=False)))
        files = write_shards(cells, folder, args.samples_per_shard)
        shards = str(Path(folder) / "train-*.tar")
        loader = statistics.median(loader_rate(run, shards, args.num_workers, args.batches) for _ in range(args.repeats))
        config = run.model
        in_memory_rates, streamed_rates = [], []
        for repeat in range(args.repeats):  # alternated, so that drifts of the machine hit both alike
            images = pixel_dataset(load_sample_dataset()["train"], config.image_size, config.in_channels, augment=run.data.augment)
            in_memory_rates.append(training_rate(run, images, Path(folder) / f"memory{repeat}", args.steps, 0))
            streamed_rates.append(training_rate(run, stream_of(run, shards), Path(folder) / f"streamed{repeat}", args.steps,
                                                args.num_workers))
        in_memory, streamed = statistics.median(in_memory_rates), statistics.median(streamed_rates)
    results = {"loader_images_per_second": loader, "in_memory_training_images_per_second": in_memory,
               "streamed_training_images_per_second": streamed,
               "loader_over_streamed_training": loader / streamed, "streamed_over_in_memory_training": streamed / in_memory}
    print(f"quickstart config, batch {run.training.batch_size}, {len(files)} shards of {args.samples_per_shard}, "
          f"shuffle_buffer {run.data.shuffle_buffer}, {args.num_workers} loader threads, torch threads {torch.get_num_threads()}")
    print(f"  loader alone                  {loader:9.1f} images/s (median of {args.repeats})")
    print(f"  training, in memory           {in_memory:9.1f} images/s (median of {args.repeats})")
    print(f"  training, streamed            {streamed:9.1f} images/s (median of {args.repeats})")
    print(f"  loader / streamed training    {results['loader_over_streamed_training']:9.2f}  (target > 1)")
    print(f"  streamed / in-memory training {results['streamed_over_in_memory_training']:9.2f}  (target about 1)")
    return results


if __name__ == "__main__":
    main()
