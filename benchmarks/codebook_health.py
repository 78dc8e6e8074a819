#!/usr/bin/env python
"""Codebook health out of the box: vqtok's VectorQuantizer defaults vs vector-quantize-pytorch's.

Trains the quickstart backbone (training/configs/quickstart.yaml) twice for the same steps on the
bundled sample set, same seed and data order, changing only the quantizer:
  - vqtok:      vqtok.quantizers.VectorQuantizer with its defaults (k-means init, EMA, dead-code restart),
  - vq-pytorch: vector_quantize_pytorch.VectorQuantize(dim, codebook_size) with its defaults,
then prints held-out MSE, PSNR, codebook perplexity and the fraction of codes used.
Targets: vqtok uses >= 90% of the codes, with MSE no worse than vector-quantize-pytorch's.

    python benchmarks/codebook_health.py [--steps 300]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from vqtok import VQTokenizer
from vqtok.data import load_image_dataset, pixel_dataset
from vqtok.metrics.evaluation import evaluate_tokenizer
from vqtok.quantizers import Quantizer, QuantizerOutput, code_histogram, usage_stats
from vqtok.training.run_config import load_run_config
from vqtok.training.trainer import train_tokenizer

QUICKSTART = os.path.join(os.path.dirname(__file__), "..", "training", "configs", "quickstart.yaml")


class VectorQuantizePytorch(Quantizer):
    """vector_quantize_pytorch.VectorQuantize (its defaults) behind vqtok's quantizer interface."""

    def __init__(self, codebook_size: int, dim: int):
        super().__init__(codebook_size, dim)
        from vector_quantize_pytorch import VectorQuantize

        self.inner = VectorQuantize(dim=dim, codebook_size=codebook_size)

    def code_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        return self.inner.codebook[ids].float()

    def _forward_rows(self, rows: torch.Tensor) -> QuantizerOutput:
        quantized, indices, commitment = self.inner(rows[None])
        indices = indices[0]
        stats = usage_stats(code_histogram(indices, self.codebook_size))
        return QuantizerOutput(quantized[0], indices, {"commitment_loss": commitment.sum()}, stats)

    def _select_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return self.inner(rows[None])[1][0]


def run(name: str, steps: int, output_dir: str) -> dict:
    run_config = load_run_config(QUICKSTART, [f"training.max_steps={steps}", f"training.output_dir={output_dir}"])
    config, training = run_config.model, run_config.training
    torch.manual_seed(training.seed)
    model = VQTokenizer.from_config(config)
    if name == "vq-pytorch":
        model.quantizer = VectorQuantizePytorch(config.codebook_size, config.latent_dim)
    train_set = pixel_dataset(load_image_dataset("sample", "train"), config.image_size, config.in_channels, augment=True)
    test_set = pixel_dataset(load_image_dataset("sample", "test"), config.image_size, config.in_channels)
    started = time.time()
    train_tokenizer(model, train_set, None, training)
    results = evaluate_tokenizer(model, test_set, progress=False)
    results["seconds"] = time.time() - started
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--output_dir", default="outputs/codebook_health")
    args = parser.parse_args()
    results = {name: run(name, args.steps, os.path.join(args.output_dir, name)) for name in ("vqtok", "vq-pytorch")}
    print(f"\nheld-out codebook health after {args.steps} steps (quickstart backbone, K=512, bundled sample set)")
    print(f"{'quantizer':<12} {'MSE':>9} {'PSNR dB':>8} {'perplexity':>11} {'codes used':>11} {'train s':>8}")
    for name, r in results.items():
        print(f"{name:<12} {r['mse']:>9.5f} {r['psnr']:>8.2f} {r['perplexity']:>11.1f} {r['codes_used']:>10.1%} {r['seconds']:>8.0f}")
    ours, theirs = results["vqtok"], results["vq-pytorch"]
    used_ok, mse_ok = ours["codes_used"] >= 0.9, ours["mse"] <= theirs["mse"]
    print(f"\ncodes used >= 90%: {'yes' if used_ok else 'NO'};  MSE no worse than vector-quantize-pytorch: {'yes' if mse_ok else 'NO'}")
    return 0 if used_ok and mse_ok else 1


if __name__ == "__main__":
    sys.exit(main())
