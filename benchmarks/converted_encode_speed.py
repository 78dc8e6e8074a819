#!/usr/bin/env python
"""Encode throughput (images/s) of converted tokenizers beside the reference classes they came from.

For each source with a reference class, the real configuration, randomly initialised (the released
weights cannot be downloaded here; the convolutions, attention and search cost the same):

- janus:     transformers' `JanusVQVAE` with its default config, LlamaGen-16 (K = 16384, D = 8, f = 16);
- chameleon: transformers' `ChameleonVQVAE` with its default config (K = 8192, D = 256, f = 16);
- diffusers: diffusers' `VQModel` in the LDM f8 shape (channels 128-256-512-512, K = 16384, D = 4).

Each reference is saved and converted with `vqtok.conversion.convert_checkpoint`; the ids of both
on the benchmark batch are compared (the count that differ is printed). Then, in one process,
`--repeats` rounds alternate the reference's encode to ids (`encode(...).image_tokens`; diffusers:
`encode` then its quantizer) and vqtok's `encode`, after one warm-up of each, under
`torch.no_grad()`. The medians are printed with the ratio vqtok / reference (images/s; >= 1.0 means
vqtok is at least as fast).

    python benchmarks/converted_encode_speed.py [--image_size 256] [--batch_size 4] [--repeats 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from vqtok.conversion import convert_checkpoint

SOURCES = ("janus", "chameleon", "diffusers")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=list(SOURCES))
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    return parser.parse_args(argv)


def reference_model(source: str):
    """(reference model, its encode-to-ids function) in the real configuration, random weights."""
    torch.manual_seed(0)
    if source == "janus":
        from transformers import JanusVQVAE, JanusVQVAEConfig

        model = JanusVQVAE(JanusVQVAEConfig())
        with torch.no_grad():  # unit-length codes, as LlamaGen initialises them (see the conversion notes)
            model.quantize.embedding.weight.copy_(torch.nn.functional.normalize(model.quantize.embedding.weight, dim=1))
        return model.eval(), lambda pixels: model.encode(pixels).image_tokens
    if source == "chameleon":
        from transformers import ChameleonVQVAE, ChameleonVQVAEConfig

        model = ChameleonVQVAE(ChameleonVQVAEConfig())
        return model.eval(), lambda pixels: model.encode(pixels).image_tokens
    from diffusers import VQModel

    model = VQModel(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                    up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                    num_vq_embeddings=16384, sample_size=256)
    with torch.no_grad():  # codes spread like trained ones: diffusers' start, uniform in +-1/K, makes every code a near-tie
        model.quantize.embedding.weight.normal_()
    return model.eval(), lambda pixels: model.quantize(model.encode(pixels).latents)[2][2]


def seconds(function, pixels: torch.Tensor) -> float:
    synchronize = torch.cuda.synchronize if pixels.is_cuda else (lambda: None)
    synchronize()
    started = time.perf_counter()
    with torch.no_grad():
        function(pixels)
    synchronize()
    return time.perf_counter() - started


def measure(source: str, args: argparse.Namespace) -> dict:
    reference, reference_ids = reference_model(source)
    with tempfile.TemporaryDirectory() as folder:
        reference.save_pretrained(folder)
        tokenizer = convert_checkpoint(source, folder)
    reference.to(args.device)
    tokenizer.to(args.device)
    pixels = (torch.rand(args.batch_size, 3, args.image_size, args.image_size) * 2 - 1).to(args.device)
    with torch.no_grad():
        differ = (reference_ids(pixels).reshape(-1).cpu() != tokenizer.encode(pixels).reshape(-1).cpu()).sum().item()
    timings = {"reference": [], "vqtok": []}
    functions = {"reference": reference_ids, "vqtok": tokenizer.encode}
    for name, function in functions.items():  # warm-up
        seconds(function, pixels)
    for _ in range(args.repeats):
        for name, function in functions.items():
            timings[name].append(seconds(function, pixels))
    rates = {name: args.batch_size / statistics.median(values) for name, values in timings.items()}
    return {"source": source, "differing_ids": differ, **rates, "ratio": rates["vqtok"] / rates["reference"]}


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"encode throughput, batch {args.batch_size} x {args.image_size}x{args.image_size}, median of {args.repeats} "
          f"({device}, torch {torch.__version__})")
    print(f"{'source':<10} {'reference img/s':>16} {'vqtok img/s':>12} {'vqtok / reference':>18}  ids differing")
    results = []
    for source in args.sources:
        result = measure(source, args)
        results.append(result)
        print(f"{source:<10} {result['reference']:>16.2f} {result['vqtok']:>12.2f} {result['ratio']:>18.2f}  {result['differing_ids']}")
    return results


if __name__ == "__main__":
    main()
