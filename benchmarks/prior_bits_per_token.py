#!/usr/bin/env python
"""Held-out bits per token on the bundled set's test split: uniform, histogram and the trained prior.

Reads the token dataset written by `training/tokenize_dataset.py` (default: the quickstart
tokenizer's tokens of the bundled set) and prints, in bits per token of the test split:

- uniform: log2 K (every code equally likely);
- histogram: the unigram entropy of the training tokens (the issue's figure), and the held-out
  cross-entropy of the test tokens under the training histogram (add-1/2 smoothed);
- prior: the exact code length of the test tokens under the prior (softmax over the K codes).

With no `--train`, the prior saved at `--prior` is evaluated (trained first with
`training/configs/prior.yaml` when there is none). `--train gpt2 llama` trains a fresh prior of each
architecture with that config, initialised and trained as `training/train_prior.py` does (seed
`training.seed`), and reports its training time too. Target: the prior at least 5% below the histogram.

    python benchmarks/prior_bits_per_token.py [--tokens outputs/quickstart/tokens] [--prior outputs/quickstart/prior]
    python benchmarks/prior_bits_per_token.py --train gpt2 llama
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

from accelerate.utils import set_seed

from vqtok import TokenPrior, codes_from_dataset, histogram_bits_per_token, load_tokenized
from vqtok.training import load_prior_run_config, train_prior

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "prior.yaml"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", default="outputs/quickstart/tokens")
    parser.add_argument("--prior", default="outputs/quickstart/prior", help="a saved prior to evaluate")
    parser.add_argument("--train", nargs="*", choices=("gpt2", "llama"), default=None,
                        help="train a fresh prior of each architecture with training/configs/prior.yaml instead")
    return parser.parse_args(argv)


def trained_prior(architecture: str | None, layout, train_codes, eval_codes, output_dir: str):
    """A prior trained with `training/configs/prior.yaml` (architecture overridden when given), and
    its training time in seconds."""
    overrides = [f"training.output_dir={output_dir}", "training.report_to=none"]
    run = load_prior_run_config(str(CONFIG), overrides + ([f"model.architecture={architecture}"] if architecture else []))
    set_seed(run.training.seed)  # as training/train_prior.py does: the same initialisation
    prior = TokenPrior(run.model.build_config(layout))
    started = time.perf_counter()
    train_prior(prior, train_codes, eval_codes, run.training)
    return prior, time.perf_counter() - started


def main(argv=None) -> dict:
    args = parse_args(argv)
    tokens, layout = load_tokenized(args.tokens)
    train_codes, eval_codes = codes_from_dataset(tokens["train"], layout), codes_from_dataset(tokens["test"], layout)
    histogram = histogram_bits_per_token(train_codes, eval_codes, layout.codebook_size)
    rows = {"uniform (log2 K)": math.log2(layout.codebook_size),
            "histogram (unigram entropy of the training tokens)": histogram["histogram_entropy_bits"],
            "histogram (held-out cross-entropy)": histogram["histogram_held_out_bits"]}
    priors = {}
    with tempfile.TemporaryDirectory() as scratch:
        if args.train:
            for architecture in args.train:
                priors[architecture] = trained_prior(architecture, layout, train_codes, eval_codes,
                                                     os.path.join(scratch, architecture))
        elif os.path.isdir(args.prior):
            priors["saved"] = (TokenPrior.from_pretrained(args.prior), None)
        else:
            print(f"no prior at {args.prior}: training one with {CONFIG.relative_to(REPO)}")
            priors["default"] = trained_prior(None, layout, train_codes, eval_codes, scratch)
    for name, (prior, seconds) in priors.items():
        prior.check_tokenizer(layout)
        label = f"prior: {prior.config.architecture} ({prior.num_parameters() / 1e6:.2f}M parameters"
        label += f", trained in {seconds:.0f} s)" if seconds is not None else f", {name})"
        rows[label] = prior.bits_per_token(eval_codes)
    reference = histogram["histogram_entropy_bits"]
    print(f"{len(train_codes)} training / {len(eval_codes)} held-out images, {layout.grid_height}x{layout.grid_width} "
          f"tokens each, K={layout.codebook_size} (tokenizer {layout.tokenizer})")
    print("| code model | held-out bits/token | x histogram |")
    print("|---|---:|---:|")
    for label, bits in rows.items():
        print(f"| {label} | {bits:.3f} | {bits / reference:.3f} |")
    return rows


if __name__ == "__main__":
    main()
