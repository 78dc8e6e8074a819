#!/usr/bin/env python
"""Nearest-code lookup speed and peak memory, eval mode, on this machine's CPU (or a GPU: `--device cuda`).

Times, in one run, at N = 16384 vectors of D = 64 and K in {1024, 8192} codes:
  - matmul:      a bare fp32 matmul [N, D] x [D, K] (the floor any exact search pays),
  - cdist+argmin: torch.cdist followed by argmin,
  - vqtok:       vqtok.quantizers.VectorQuantizer.select on a [B, D, h, w] map,
  - vq-pytorch:  vector_quantize_pytorch.VectorQuantize in eval mode,
and prints each one's median time, its ratio to the matmul and vqtok's speed-up over
vector-quantize-pytorch. Peak memory is the growth of the resident set (Linux VmHWM) during one
call, measured in a fresh process per method so one method's allocations cannot hide another's.

    python benchmarks/quantizer_speed.py [--repeats 15]

With `--device cuda`, the issue's GPU table instead: N = 65,536 latent vectors (262,144 at K = 65,536),
fp32, eval, at (D, K) in GPU_SHAPES, timing (after a warm-up, with CUDA synchronised) a bare matmul, the
unchunked addmm + argmin, vqtok's `VectorQuantizer.select` and vector-quantize-pytorch, each with its
peak allocation during one call (`torch.cuda.max_memory_allocated`); printed with vqtok's time and
memory as ratios to the unchunked search (targets: time <= 1, memory <= 1/8) and its speed-up over
vector-quantize-pytorch (target >= 2). `--device cpu --gpu_table --scale 64` runs the same table at
1/64 of N on the CPU (a check of the script, not a figure for the README).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

import torch

N, D = 16384, 64
CODEBOOK_SIZES = (1024, 8192)
METHODS = ("matmul", "cdist+argmin", "vqtok", "vq-pytorch")


def make_method(name: str, codebook_size: int):
    """Return (function, input) for one method; the codebook is the same random table for all."""
    generator = torch.Generator().manual_seed(0)
    codebook = torch.randn(codebook_size, D, generator=generator)
    rows = torch.randn(N, D, generator=generator)
    if name == "matmul":
        codebook_t = codebook.t().contiguous()
        return (lambda x: x @ codebook_t), rows
    if name == "cdist+argmin":
        return (lambda x: torch.cdist(x, codebook).argmin(dim=1)), rows
    if name == "vqtok":
        from vqtok.quantizers import VectorQuantizer

        quantizer = VectorQuantizer(codebook_size, D).eval()
        quantizer.codebook.weight.data.copy_(codebook)
        feature_map = rows.reshape(16, 32, 32, D).permute(0, 3, 1, 2).contiguous()  # [B, D, h, w]
        return quantizer.select, feature_map
    if name == "vq-pytorch":
        from vector_quantize_pytorch import VectorQuantize

        quantizer = VectorQuantize(dim=D, codebook_size=codebook_size).eval()
        quantizer._codebook.embed.data.copy_(codebook[None])
        quantizer._codebook.initted.data.fill_(True)

        def lookup(x):
            return quantizer(x)[1]

        return lookup, rows[None]
    raise ValueError(f"unknown method {name!r}")


@torch.no_grad()
def median_seconds(function, argument, repeats: int) -> float:
    function(argument)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(argument)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _resident_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status")


@torch.no_grad()
def _peak_memory_worker(name: str, codebook_size: int, queue) -> None:
    function, argument = make_method(name, codebook_size)
    function(argument[:1])  # load lazy code paths first
    # Writing 5 to clear_refs resets the peak resident set (VmHWM) to the current one (Linux).
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
        clear_refs.write("5")
    before = _resident_kib("VmRSS")
    function(argument)
    queue.put((_resident_kib("VmHWM") - before) / 1024.0)


def peak_memory_mib(name: str, codebook_size: int) -> float:
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_peak_memory_worker, args=(name, codebook_size, queue))
    process.start()
    value = queue.get(timeout=600)
    process.join()
    return value


GPU_SHAPES = ((64, 1024, 65536), (64, 16384, 65536), (8, 16384, 65536), (256, 8192, 65536), (64, 65536, 262144))
GPU_METHODS = ("matmul", "addmm+argmin", "vqtok", "vq-pytorch")


def device_method(name: str, rows: torch.Tensor, codebook: torch.Tensor):
    """(function, input) of one method of the GPU table, on the tensors' device."""
    if name == "matmul":
        codebook_t = codebook.t().contiguous()
        return (lambda x: x @ codebook_t), rows
    if name == "addmm+argmin":
        codebook_t, code_norms = codebook.t().contiguous(), codebook.pow(2).sum(dim=1)
        return (lambda x: torch.addmm(code_norms, x, codebook_t, alpha=-2.0).argmin(dim=1)), rows
    if name == "vqtok":
        from vqtok.quantizers import VectorQuantizer

        quantizer = VectorQuantizer(codebook.shape[0], codebook.shape[1]).eval().to(codebook.device)
        quantizer.codebook.weight.data.copy_(codebook)
        return quantizer.select, rows.t().reshape(1, codebook.shape[1], rows.shape[0], 1).contiguous()
    if name == "vq-pytorch":
        from vector_quantize_pytorch import VectorQuantize

        quantizer = VectorQuantize(dim=codebook.shape[1], codebook_size=codebook.shape[0]).eval().to(codebook.device)
        quantizer._codebook.embed.data.copy_(codebook[None])
        quantizer._codebook.initted.data.fill_(True)
        return (lambda x: quantizer(x)[1]), rows[None]
    raise ValueError(f"unknown method {name!r}")


@torch.no_grad()
def timed_on_device(function, argument, repeats: int, device: torch.device) -> tuple[float, float | None]:
    """(median seconds, peak MiB allocated during one call; None off CUDA) of `function(argument)`."""
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    function(argument)  # warm-up
    synchronize()
    peak = None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        function(argument)
        synchronize()
        peak = (torch.cuda.max_memory_allocated(device) - baseline) / 2**20
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(argument)
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak


def gpu_table(device: torch.device, repeats: int, scale: int) -> None:
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
          f"eval mode, fp32, N divided by {scale}\n")
    header = f"{'D':>4} {'K':>6} {'N':>7}  {'method':<13} {'median ms':>10} {'peak MiB':>9}"
    print(header)
    print("-" * len(header))
    summary = []
    for dim, codebook_size, count in GPU_SHAPES:
        generator = torch.Generator().manual_seed(0)
        codebook = torch.randn(codebook_size, dim, generator=generator).to(device)
        rows = torch.randn(count // scale, dim, generator=generator).to(device)
        results = {}
        for name in GPU_METHODS:
            try:
                results[name] = timed_on_device(*device_method(name, rows, codebook), repeats, device)
            except torch.OutOfMemoryError:
                results[name] = (float("nan"), float("nan"))
                torch.cuda.empty_cache()
            seconds, peak = results[name]
            print(f"{dim:>4} {codebook_size:>6} {rows.shape[0]:>7}  {name:<13} {seconds * 1e3:>10.2f} "
                  f"{'n/a' if peak is None else f'{peak:.0f}':>9}")
        summary.append((dim, codebook_size, results))
        print()
    for dim, codebook_size, results in summary:
        (vqtok_s, vqtok_mib), (unchunked_s, unchunked_mib) = results["vqtok"], results["addmm+argmin"]
        memory = "" if vqtok_mib is None else f", memory {vqtok_mib / unchunked_mib:.3f}x (target <= 0.125)"
        print(f"D={dim}, K={codebook_size}: vqtok time {vqtok_s / unchunked_s:.2f}x the unchunked addmm + argmin "
              f"(target <= 1){memory}; {results['vq-pytorch'][0] / vqtok_s:.1f}x faster than vector-quantize-pytorch "
              "(target >= 2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu", help="cpu (the CPU table) or cuda (the GPU table)")
    parser.add_argument("--gpu_table", action="store_true", help="the GPU table on --device (implied by cuda)")
    parser.add_argument("--scale", type=int, default=1, help="divide the GPU table's N by this (script checks)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" or args.gpu_table:
        gpu_table(device, args.repeats, args.scale)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, N={N}, D={D}, eval mode, fp32\n")
    header = f"{'K':>5}  {'method':<13} {'median ms':>10} {'x matmul':>9} {'peak MiB':>9}"
    print(header)
    print("-" * len(header))
    summary = []
    for codebook_size in CODEBOOK_SIZES:
        times = {}
        for name in METHODS:
            function, argument = make_method(name, codebook_size)
            times[name] = median_seconds(function, argument, args.repeats)
            memory = peak_memory_mib(name, codebook_size)
            print(
                f"{codebook_size:>5}  {name:<13} {times[name] * 1e3:>10.1f} "
                f"{times[name] / times['matmul']:>9.2f} {memory:>9.1f}"
            )
        summary.append(
            (codebook_size, times["vqtok"] / times["matmul"], times["vq-pytorch"] / times["vqtok"])
        )
        print()
    for codebook_size, vs_matmul, speedup in summary:
        print(
            f"K={codebook_size}: vqtok = {vs_matmul:.2f}x the bare matmul (target <= 1.5), "
            f"{speedup:.1f}x faster than vector-quantize-pytorch (target >= 3)"
        )


if __name__ == "__main__":
    main()
