"""Grid and 1-D tokenizers on the bundled set, at equal training steps: the conv grid (8x8 = 64 tokens,
the quickstart's), the ViT's 8x8 patch grid, and TiTok-style 1-D sequences of 16 and 32 tokens, all
with the same VQ quantizer (K = 512, D = 64). For each: held-out PSNR, codes used and bits per image
(tokens x log2 K), then a prior (training/configs/prior.yaml) on its tokens and the prior's held-out
bits per image. Writes one picture: held-out originals above each tokenizer's reconstructions. A
variant whose prior is already in `--output` is read, not trained again.

    python benchmarks/grid_and_1d_tokens.py --output outputs/grid_and_1d_tokens [--steps 600]
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from vqtok import VQImageProcessor, VQTokenizer
from vqtok.commands import run
from vqtok.data import load_image_dataset
from vqtok.metrics import save_reconstruction_grid

QUICKSTART, VIT, TITOK, PRIOR = (f"training/configs/{name}.yaml" for name in ("quickstart", "vit_cpu", "titok_cpu", "prior"))
VARIANTS = {
    "conv grid 8x8": (QUICKSTART, []),
    "vit grid 8x8": (VIT, []),
    "titok 1-D, 16 tokens": (TITOK, ["model.backbone_config.num_latent_tokens=16"]),
    "titok 1-D, 32 tokens": (TITOK, []),
}


def train_and_model_tokens(folder: str, config: str, overrides: list[str], args) -> None:
    """Train a tokenizer into `folder`, tokenize the bundled set with it and train a prior on its tokens."""
    assert run("train", ["--config", config, *overrides, f"training.max_steps={args.steps}",
                         f"training.output_dir={folder}"]) == 0
    assert run("tokenize", ["--tokenizer", os.path.join(folder, "tokenizer"), "--output", os.path.join(folder, "tokens")]) == 0
    assert run("prior", ["--config", PRIOR, f"data.tokens={os.path.join(folder, 'tokens')}",
                         f"training.output_dir={os.path.join(folder, 'prior')}", f"training.max_steps={args.prior_steps}"]) == 0


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="outputs/grid_and_1d_tokens")
    parser.add_argument("--steps", type=int, default=600, help="training steps of every tokenizer")
    parser.add_argument("--prior_steps", type=int, default=600, help="training steps of every prior")
    args = parser.parse_args(argv)
    table, reconstructions, originals = {}, [], None
    for name, (config, overrides) in VARIANTS.items():
        folder = os.path.join(args.output, name.replace(" ", "_").replace(",", ""))
        if not os.path.isfile(os.path.join(folder, "prior", "metrics.json")):  # a finished variant is kept
            train_and_model_tokens(folder, config, overrides, args)
        tokenizer = VQTokenizer.from_pretrained(os.path.join(folder, "tokenizer")).eval()
        if originals is None:
            processor = VQImageProcessor.for_tokenizer(tokenizer.config)
            originals = processor(list(load_image_dataset("sample", "test")["image"][:8]), return_tensors="pt")["pixel_values"]
        with open(os.path.join(folder, "metrics.json")) as handle:
            tokenizer_metrics = json.load(handle)
        with open(os.path.join(folder, "prior", "metrics.json")) as handle:
            prior_metrics = json.load(handle)
        tokens = tokenizer.config.token_shape
        count = int(torch.tensor(tokens).prod())
        table[name] = {
            "tokens_per_image": count,
            "psnr": tokenizer_metrics["psnr"],
            "codes_used": tokenizer_metrics["codes_used"],
            "bits_per_image": tokenizer_metrics["bits_per_image"],
            "prior_bits_per_image": prior_metrics["prior_bits"] * count,
            "parameters": tokenizer.num_parameters(),
        }
        reconstructions.append(tokenizer.decode(tokenizer.encode(originals)))
    picture = save_reconstruction_grid(originals, reconstructions, os.path.join(args.output, "reconstructions.png"))
    with open(os.path.join(args.output, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(table, handle, indent=2)
    print(f"\n{'tokenizer':22s} {'tokens':>6s} {'PSNR':>8s} {'codes used':>10s} {'bits/image':>10s} "
          f"{'prior bits/image':>16s} {'params':>9s}")
    for name, row in table.items():
        print(f"{name:22s} {row['tokens_per_image']:6d} {row['psnr']:8.3f} {row['codes_used']:10.3f} "
              f"{row['bits_per_image']:10.1f} {row['prior_bits_per_image']:16.1f} {row['parameters']:9,d}")
    print(f"wrote {picture} (rows: originals, then {', '.join(VARIANTS)})")
    return table


if __name__ == "__main__":
    main()
