#!/usr/bin/env python
"""Memory and time of the quantizers built for large K, against the dense forms they avoid.

One training step of the quantizer alone (forward, the loss, backward) on N latent rows, each case
in a fresh Python process, which reports the growth of its peak resident set size over what it held
once its inputs were built (`ru_maxrss`), and the median seconds of a few steps:

  lfq-18 / bsq-18   LFQ / BSQ at D = 18 bits (K = 262,144): the entropy loss with the batch entropy
                    computed exactly over chunks of codes (`vqtok.quantizers.lfq.code_entropies`),
  lfq-18-dense      the same loss from the explicit `[N, K]` softmax over all codes (written here),
  ibq-65536         IBQ at K = 65,536, D = 64: `IndexBackpropagation`, chunked over rows,
  ibq-65536-dense   the paper's (onehot - sg(softmax) + softmax) E with autograd over `[N, K]`,
  simvq-65536       SimVQ at K = 65,536, D = 64 (chunked nearest-code search over C W),
  simvq-65536-dense the same with an unchunked `[N, K]` distance matrix.

Then one table with each chunked case's memory and time against its dense twin, in one run.

    python benchmarks/large_codebook_memory.py [--rows 4096] [--repeats 3] [--cases lfq-18 ...]

N = 4096 rows is one quickstart batch of 64 images at 8 x 8 tokens. Run with `python` on an idle
machine (timings); each case sets torch to 2 threads.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

CASES = ["lfq-18", "lfq-18-dense", "bsq-18", "ibq-65536", "ibq-65536-dense", "simvq-65536", "simvq-65536-dense"]
DENSE_TWIN = {"lfq-18": "lfq-18-dense", "ibq-65536": "ibq-65536-dense", "simvq-65536": "simvq-65536-dense"}


def dense_lfq_loss(latents: torch.Tensor, temperature: float = 0.01) -> torch.Tensor:
    """LFQ's entropy loss (weight 1, gamma 1) from the explicit `[N, K]` softmax over every code."""
    bits = latents.shape[1]
    codes = ((torch.arange(2**bits)[:, None] >> torch.arange(bits)) & 1).float() * 2 - 1
    logits = 2 * latents @ codes.t() / temperature  # -||z - c||^2 / tau up to a per-row constant
    probabilities = torch.softmax(logits, dim=1)
    per_sample = -(probabilities * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
    mean = probabilities.mean(dim=0)
    return per_sample + (mean * mean.clamp_min(1e-30).log()).sum()


def dense_ibq(latents: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    soft = torch.softmax(latents @ table.t(), dim=1)
    hard = F.one_hot(soft.argmax(dim=1), table.shape[0]).float()
    return (hard - soft.detach() + soft) @ table


def dense_simvq(latents: torch.Tensor, quantizer) -> torch.Tensor:
    codes = quantizer.code_vectors()
    ids = torch.cdist(latents, codes.detach()).argmin(dim=1)  # the full [N, K] distance matrix
    chosen = codes[ids]
    return latents + (chosen - latents).detach() + F.mse_loss(chosen, latents.detach())


def case_step(name: str, rows: int):
    """(inputs, one step as a function of them) of case `name` on `rows` latent rows."""
    from vqtok.quantizers import BSQuantizer, IBQuantizer, LFQuantizer, SimVQuantizer

    generator = torch.Generator().manual_seed(0)
    if name.startswith(("lfq", "bsq")):
        latents = torch.randn(rows, 18, generator=generator).requires_grad_()
        if name == "lfq-18-dense":
            return lambda: dense_lfq_loss(latents).backward()
        quantizer = (LFQuantizer if name.startswith("lfq") else BSQuantizer)(dim=18).train()
        as_map = latents.t().reshape(1, 18, rows, 1)
        return lambda: quantizer(as_map).loss.backward()
    latents = torch.randn(rows, 64, generator=generator).requires_grad_()
    as_map = latents.t().reshape(1, 64, rows, 1)
    if name.startswith("ibq"):
        quantizer = IBQuantizer(65536, 64, kmeans_init=False).train()
        if name.endswith("dense"):
            return lambda: dense_ibq(latents, quantizer.codebook.weight).sum().backward()
        return lambda: quantizer(as_map).loss.backward()
    quantizer = SimVQuantizer(65536, 64).train()
    if name.endswith("dense"):
        return lambda: dense_simvq(latents, quantizer).sum().backward()
    return lambda: quantizer(as_map).loss.backward()


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def run_case(name: str, rows: int, repeats: int) -> dict:
    """In this process: the peak memory growth and median time of `repeats` steps of case `name`."""
    torch.set_num_threads(2)
    step = case_step(name, rows)
    before = rss_mib()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"case": name, "peak_growth_mib": peak - before, "seconds": statistics.median(seconds)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", choices=CASES, default=CASES)
    parser.add_argument("--one-case", choices=CASES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one_case:
        print(json.dumps(run_case(args.one_case, args.rows, args.repeats)))
        return 0
    results = {}
    for name in args.cases:
        command = [sys.executable, __file__, "--one-case", name, "--rows", str(args.rows), "--repeats", str(args.repeats)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            results[name] = {"error": (done.stderr.strip().splitlines() or ["exit %d" % done.returncode])[-1]}
        else:
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(name, results[name], flush=True)
    print(f"\nN = {args.rows} rows, one training step of the quantizer (median of {args.repeats}), CPU, 2 threads\n")
    print("| case | peak memory growth MiB | step s | vs dense: memory | vs dense: time |")
    print("|---|---:|---:|---:|---:|")
    for name, result in results.items():
        if "error" in result:
            print(f"| {name} | failed: {result['error'][:70]} | | | |")
            continue
        twin = results.get(DENSE_TWIN.get(name, ""), {})
        memory = f"{result['peak_growth_mib'] / twin['peak_growth_mib']:.3f}x" if "peak_growth_mib" in twin else ""
        speed = f"{result['seconds'] / twin['seconds']:.2f}x" if "seconds" in twin else ""
        print(f"| {name} | {result['peak_growth_mib']:.0f} | {result['seconds']:.3f} | {memory} | {speed} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
