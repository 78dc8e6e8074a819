#!/usr/bin/env python
"""Train an image tokenizer, then tokenize the held-out images, report metrics and draw them.

    python training/train_tokenizer.py --config training/configs/quickstart.yaml
    python training/train_tokenizer.py --config training/configs/vq.yaml training.max_steps=200
    accelerate launch training/train_tokenizer.py --config training/configs/vq.yaml

Writes to `training.output_dir`: the tokenizer (`tokenizer/`: model.safetensors + config.json),
`metrics.json`, and `reconstructions.png` (held-out originals above their reconstructions).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from vqtok import VQTokenizer
from vqtok.data import load_image_dataset, pixel_dataset, stack_pixel_values
from vqtok.metrics import evaluate_tokenizer
from vqtok.run_config import load_run_config
from vqtok.trainer import train_tokenizer
from vqtok.visualize import save_reconstruction_grid


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML run config (sections: model, data, training)")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. training.max_steps=200")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    run = load_run_config(args.config, args.overrides)
    config, data, training = run.model, run.data, run.training
    accelerator = Accelerator(
        mixed_precision=training.mixed_precision, gradient_accumulation_steps=training.gradient_accumulation_steps
    )
    set_seed(training.seed)

    def prepared(split: str, augment: bool):
        images = load_image_dataset(data.source, split=split, image_column=data.image_column)
        return pixel_dataset(images, config.image_size, config.in_channels, augment=augment)

    train_set = prepared(data.train_split, data.augment)
    eval_set = prepared(data.eval_split, False) if data.eval_split else None
    model = VQTokenizer.from_config(config)
    accelerator.print(
        f"{type(model).__name__}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
        f"K={config.codebook_size}, {config.token_grid[0]}x{config.token_grid[1]} tokens per image, "
        f"{len(train_set)} training images"
    )

    started = time.time()
    train_tokenizer(model, train_set, None, training, accelerator)
    train_seconds = time.time() - started

    results: dict = {}
    if accelerator.is_main_process:
        save_dir = os.path.join(training.output_dir, "tokenizer")
        accelerator.unwrap_model(model).save_pretrained(save_dir)
        # Reload what was saved, so the numbers below are those of the published artefact.
        tokenizer = VQTokenizer.from_pretrained(save_dir).eval()
        if eval_set is not None:
            results = evaluate_tokenizer(tokenizer, eval_set, training.eval_batch_size)
            originals = stack_pixel_values(eval_set, limit=32)
            ids = tokenizer.encode(originals)
            grid_path = save_reconstruction_grid(
                originals, tokenizer.decode(ids), os.path.join(training.output_dir, "reconstructions.png")
            )
            print(f"\ntoken ids of the first held-out image ({ids.shape[1]}x{ids.shape[2]}):\n{ids[0].tolist()}")
            print(f"\nheld-out results on {len(eval_set)} images after {training.max_steps} steps ({train_seconds:.0f} s):")
            for name, value in results.items():
                print(f"  {name:15s} {value:.4f}")
            print(f"\nsaved tokenizer to {save_dir}\nwrote {grid_path}")
        results["train_seconds"] = train_seconds
        with open(os.path.join(training.output_dir, "metrics.json"), "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    accelerator.end_training()
    return results


if __name__ == "__main__":
    torch.set_float32_matmul_precision("high")
    main()
