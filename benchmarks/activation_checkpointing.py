#!/usr/bin/env python
"""Peak memory and time of a 256 x 256 VQGAN training step, with and without activation
checkpointing (`backbone_config.gradient_checkpointing`), and the gradients of both compared.

The tokenizer is `training/configs/vqgan.yaml`'s (taming's VQGAN at f = 16, LlamaGen-16's settings,
about 70 M parameters with its 16,384 codes); one step is its training forward, the loss and the
backward on a batch of random images. Each case runs in a fresh Python process, which reports the
growth of its peak memory over what it held once the model and the batch were built (on a CPU the
resident set size, `ru_maxrss`; on a GPU `torch.cuda.max_memory_allocated`), the median seconds of
its steps, and writes its first step's gradients for the comparison.

    python benchmarks/activation_checkpointing.py [--batch_size 2] [--repeats 2] [--device cpu]

Run it on an idle machine; each case sets torch to 2 threads on a CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "vqgan.yaml"


def rss_mib() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def run_case(checkpointing: bool, batch_size: int, repeats: int, device: str, gradients_file: str) -> dict:
    """In this process: `repeats` training steps; the peak memory growth, the median step time."""
    from vqtok.training import load_run_config

    torch.set_num_threads(2)
    torch.manual_seed(0)
    run = load_run_config(str(CONFIG), [f"model.backbone_config.gradient_checkpointing={str(checkpointing).lower()}"])
    model = run.build_model().to(device).train()
    pixels = torch.rand(batch_size, 3, 256, 256, generator=torch.Generator().manual_seed(1)).to(device) * 2 - 1
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        before = rss_mib()
    seconds = []
    for step in range(repeats):
        started = time.perf_counter()
        model.zero_grad(set_to_none=True)
        torch.manual_seed(2)  # the same draws in every case and step
        model(pixels).loss.backward()
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
        if step == 0:
            save_file({name: p.grad.detach().cpu().contiguous() for name, p in model.named_parameters() if p.grad is not None},
                      gradients_file)
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_growth_mib": peak - before, "seconds": statistics.median(seconds),
            "parameters": sum(p.numel() for p in model.parameters())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--one-case", choices=["on", "off"], help=argparse.SUPPRESS)
    parser.add_argument("--gradients", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one_case:
        print(json.dumps(run_case(args.one_case == "on", args.batch_size, args.repeats, args.device, args.gradients)))
        return 0
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for case in ("off", "on"):
            gradients = str(Path(scratch) / f"{case}.safetensors")
            command = [sys.executable, __file__, "--one-case", case, "--batch_size", str(args.batch_size),
                       "--repeats", str(args.repeats), "--device", args.device, "--gradients", gradients]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                sys.exit(f"case {case} failed:\n{done.stderr[-4000:]}")
            results[case] = json.loads(done.stdout.strip().splitlines()[-1])
            print(case, results[case], flush=True)
        off, on = (load_file(str(Path(scratch) / f"{case}.safetensors")) for case in ("off", "on"))
        difference = max((on[name] - off[name]).abs().max().item() for name in off)
        largest = max(off[name].abs().max().item() for name in off)
    print(f"\n256 x 256 VQGAN (training/configs/vqgan.yaml, {results['off']['parameters'] / 1e6:.1f} M parameters), "
          f"batch {args.batch_size}, one training step (median of {args.repeats}), {args.device}\n")
    print("| activation checkpointing | peak memory growth MiB | step s |")
    print("|---|---:|---:|")
    for case in ("off", "on"):
        print(f"| {case} | {results[case]['peak_growth_mib']:.0f} | {results[case]['seconds']:.2f} |")
    print(f"\nmemory on / off: {results['on']['peak_growth_mib'] / results['off']['peak_growth_mib']:.3f}x, "
          f"time on / off: {results['on']['seconds'] / results['off']['seconds']:.2f}x; largest gradient difference "
          f"{difference:.2e} (largest gradient {largest:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
