"""`vqtok sample`: generate images from nothing: sample token grids, decode them with the tokenizer, save PNG grids.

    vqtok sample                                  # all three schemes, quickstart defaults
    vqtok sample --schemes prior --temperature 0.9 --top_k 100 --num_samples 64
    vqtok sample --schemes uniform histogram --tokenizer your-name/vq-cifar10 --tokens path/to/tokens

Schemes (those of the VQ-VAE tutorial): `uniform` draws every code uniformly from the K codes;
`histogram` draws every code independently from the code frequencies of the token dataset's
`--split`; `prior` samples the trained prior autoregressively through `transformers`' `generate`
(`--temperature`, `--top_k`, `--top_p`). Writes `--output_dir/samples_<scheme>.png` and prints, per
scheme, the held-out bits per token of that scheme's code model where it can measure it.
"""

from __future__ import annotations

import argparse
import math
import os

import torch

from vqtok.commands import command_parser
from vqtok import (
    TokenPrior,
    VQTokenizer,
    code_counts,
    codes_from_dataset,
    decode_samples,
    load_tokenized,
    sample_from_histogram,
    sample_uniform,
    tokenized_split,
)
from vqtok.prior import SCHEMES
from vqtok.metrics.pictures import save_image_grid

DEFAULT_PRIOR = "outputs/quickstart/prior"
DEFAULT_TOKENIZER = "outputs/quickstart/tokenizer"
DEFAULT_TOKENS = "outputs/quickstart/tokens"


def parse_args(argv=None) -> argparse.Namespace:
    parser = command_parser("sample", __doc__, announced=("schemes", "prior", "tokens", "output_dir"))
    parser.add_argument("--schemes", nargs="+", choices=SCHEMES, default=list(SCHEMES), help="sampling schemes")
    parser.add_argument("--prior", default=DEFAULT_PRIOR, help="prior folder or Hub repo id (scheme 'prior')")
    parser.add_argument("--tokenizer", default=None,
                        help=f"tokenizer folder or Hub repo id (default: the prior's, else {DEFAULT_TOKENIZER})")
    parser.add_argument("--tokens", default=DEFAULT_TOKENS, help="token dataset for the histogram (scheme 'histogram')")
    parser.add_argument("--split", default="train", help="split of --tokens whose code frequencies are used")
    parser.add_argument("--num_samples", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0, help="prior: softmax temperature")
    parser.add_argument("--top_k", type=int, default=0, help="prior: keep the k most likely codes (0: all)")
    parser.add_argument("--top_p", type=float, default=1.0, help="prior: nucleus probability (1: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default="outputs/quickstart/samples")
    parser.add_argument("--columns", type=int, default=8, help="images per row of the PNG grid")
    parser.add_argument("--scale", type=int, default=2, help="pixel enlargement of the PNG grid")
    args = parser.parse_args(argv)
    for name in ("num_samples", "columns", "scale"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not 0 < args.temperature < math.inf:
        parser.error(f"--temperature must be a positive finite number, got {args.temperature}")
    if args.top_k < 0:
        parser.error(f"--top_k must be 0 (off) or positive, got {args.top_k}")
    if not 0 < args.top_p <= 1:
        parser.error(f"--top_p must lie in (0, 1], got {args.top_p}")
    if not 0 <= args.seed < 2**64:
        parser.error(f"--seed must lie in [0, 2**64), got {args.seed}")
    return args


def main(argv=None) -> dict[str, torch.Tensor]:
    args = parse_args(argv)
    prior = TokenPrior.from_pretrained(args.prior).eval() if "prior" in args.schemes else None
    tokenizer_name = args.tokenizer or (prior.config.tokenizer if prior is not None else None) or DEFAULT_TOKENIZER
    tokenizer = VQTokenizer.from_pretrained(tokenizer_name).eval()
    if prior is not None:
        prior.check_tokenizer(tokenizer)
    config = tokenizer.config
    if "histogram" in args.schemes:  # read before any sampling, so a bad --tokens or --split fails first
        tokens, layout = load_tokenized(args.tokens)
        layout.check_compatible(tokenizer, "tokenizer")
        histogram_split = tokenized_split(tokens, args.split, args.tokens, option="--split")
    samples = {}
    for scheme in args.schemes:
        if scheme == "uniform":
            codes = sample_uniform(config.codebook_size, config.token_shape, args.num_samples, seed=args.seed)
        elif scheme == "histogram":
            counts = code_counts(codes_from_dataset(histogram_split, layout), config.codebook_size)
            codes = sample_from_histogram(counts, config.token_shape, args.num_samples, seed=args.seed)
        else:
            codes = prior.generate_codes(args.num_samples, temperature=args.temperature, top_k=args.top_k,
                                         top_p=args.top_p, seed=args.seed)
        images = decode_samples(tokenizer, codes)
        path = save_image_grid(images, os.path.join(args.output_dir, f"samples_{scheme}.png"),
                               columns=args.columns, scale=args.scale)
        print(f"{scheme}: {len(codes)} samples, {len(torch.unique(codes))} distinct codes -> {path}")
        samples[scheme] = codes
    return samples

