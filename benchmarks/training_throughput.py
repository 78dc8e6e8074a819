#!/usr/bin/env python
"""Training throughput (images/s) of the quickstart config with 1 and with 2 CPU processes.

Runs the real command line, `training/train_tokenizer.py --config training/configs/quickstart.yaml`,
once with `python` (one process using every core) and once with
`torchrun --standalone --nproc_per_node 2` (the cores split between them, joined over gloo; and, for
reference, one process on one core), with the same per-process batch, no evaluation and no logging.
The trainer times every optimizer step after its first `THROUGHPUT_SKIP_STEPS` (k-means
initialisation, lazy allocations) and reports images/s over all processes in `metrics.json`; this
script prints them side by side with the ratio to one process. Each run's saved
`training_metadata.num_processes` must be the number of processes asked for, or the script exits:
`accelerate launch --cpu --num_processes 2`, used here before, starts ONE process (Accelerate's
simple launcher ignores `--num_processes` on the CPU).

    python benchmarks/training_throughput.py [--steps 20] [--batch_size 64]

Two processes only pay off when each has cores of its own: the ratio says how close data
parallelism on this machine comes to sharing the same cores better than one process's threads.

With `--variants compile channels_last` it compares, in one run, one process training eagerly with
the same command under `training.compile=true` (the encoder and decoder compiled by torch.compile's
default backend) and under `training.channels_last=true`: images/s over the timed steps and the
seconds of the first `THROUGHPUT_SKIP_STEPS` steps (where compilation happens: compile time is their
excess over the eager run's; torch keeps compiled code in a cache on disk, so a second run compiles
faster). Then one training step of the quickstart tokenizer on the same batch, eager and as each
variant: the difference of the losses and of the gradients (the norm of their difference over the
norm of the eager gradients). Whole runs are not compared: a latent that moves by rounding can pick
another code, and from there the runs part ways.

    python benchmarks/training_throughput.py --variants compile channels_last [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from vqtok.training.trainer import COMPILE_BACKEND, THROUGHPUT_SKIP_STEPS

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "quickstart.yaml"
SCRIPT = REPO / "training" / "train_tokenizer.py"


def run(processes: int, threads: int, steps: int, batch_size: int, output_dir: Path, extra: tuple[str, ...] = ()) -> dict:
    """Train for `THROUGHPUT_SKIP_STEPS + steps` steps on `processes` processes of `threads` threads
    (with the `extra` overrides); return the trainer's `metrics.json` (`images_per_second`,
    `train_seconds`). Exits when the run did not train on `processes` processes."""
    overrides = [
        *extra,
        f"training.output_dir={output_dir}",
        f"training.max_steps={THROUGHPUT_SKIP_STEPS + steps}",
        f"training.batch_size={batch_size}",
        "training.report_to=none",
        "training.log_every=1000",
        "data.eval_split=null",
    ]
    if processes == 1:
        command = [sys.executable, str(SCRIPT)]
    else:
        # torchrun (`python -m torch.distributed.run`): vqtok joins its CPU processes over gloo.
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
                   str(SCRIPT)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([*command, "--config", str(CONFIG), *overrides], env=env, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    metadata = json.loads((output_dir / "tokenizer" / "config.json").read_text())["training_metadata"]
    if metadata["num_processes"] != processes:
        sys.exit(f"{' '.join(command)} trained on {metadata['num_processes']} process(es), not {processes}: "
                 "the launcher did not start one data-parallel job")
    return json.loads((output_dir / "metrics.json").read_text())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps (after the skipped warm-up ones)")
    parser.add_argument("--batch_size", type=int, default=64, help="images per process per step (quickstart: 64)")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=None,
                        help="compare these ways of training with the eager run instead of process counts")
    args = parser.parse_args(argv)
    if args.variants:
        return compare_variants(args.variants, args.steps, args.batch_size)
    cores = os.cpu_count() or 1
    # One process on every core, one process on one core, and the cores split over two processes.
    setups = [(1, cores), (1, 1), (2, max(cores // 2, 1))]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for processes, threads in setups:
            speed = run(processes, threads, args.steps, args.batch_size, Path(scratch) / f"p{processes}t{threads}")[
                "images_per_second"]
            rows.append((processes, threads, speed))
    print(f"\nquickstart config, batch {args.batch_size} per process, {args.steps} timed steps, {cores} CPU cores\n")
    print("| processes | threads each | global batch | images/s | vs row 1 |")
    print("|---:|---:|---:|---:|---:|")
    for processes, threads, speed in rows:
        print(f"| {processes} | {threads} | {processes * args.batch_size} | {speed:.1f} | {speed / rows[0][2]:.2f}x |")


VARIANTS = {"compile": ("training.compile=true",), "channels_last": ("training.channels_last=true",)}


def compare_variants(variants: list[str], steps: int, batch_size: int) -> None:
    """One process on every core: the eager run, then each variant, in one table; then one step of each."""
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in ["eager", *variants]:
            metrics = run(1, cores, steps, batch_size, Path(scratch) / name, VARIANTS.get(name, ()))
            timed = steps * batch_size / metrics["images_per_second"]
            rows.append((name, metrics["images_per_second"], metrics["train_seconds"] - timed))
    eager_speed, eager_warmup = rows[0][1], rows[0][2]
    print(f"\nquickstart config, batch {batch_size}, {steps} timed steps, 1 process, {cores} CPU cores\n")
    print(f"| run | images/s | vs eager | first {THROUGHPUT_SKIP_STEPS} steps (s) |")
    print("|---|---:|---:|---:|")
    for name, speed, warmup in rows:
        print(f"| {name} | {speed:.1f} | {speed / eager_speed:.2f}x | {warmup:.1f} |")
    print(f"\ncompile time (the first steps' excess over the eager run's): "
          + ", ".join(f"{name} {warmup - eager_warmup:.1f} s" for name, _, warmup in rows[1:]))
    print(f"\none training step on one batch of {batch_size}, against the eager step:\n")
    print("| run | loss difference | gradient difference (relative) |")
    print("|---|---:|---:|")
    loss, grads = one_step(None, batch_size)
    for name in variants:
        other_loss, other_grads = one_step(name, batch_size)
        difference = torch.sqrt(sum(((other_grads[k] - g) ** 2).sum() for k, g in grads.items()))
        norm = torch.sqrt(sum((g**2).sum() for g in grads.values()))
        print(f"| {name} | {abs(other_loss - loss):.2e} | {(difference / norm).item():.2e} |")


def one_step(variant: str | None, batch_size: int) -> tuple[float, dict]:
    """The loss and gradients of the quickstart tokenizer's first training step on the bundled
    images, eager (`variant` None), compiled (COMPILE_BACKEND) or channels-last."""
    from vqtok.data import load_sample_dataset, pixel_dataset, stack_pixel_values
    from vqtok.training import load_run_config

    torch.manual_seed(0)
    model = load_run_config(str(CONFIG)).build_model().train()
    pixels = stack_pixel_values(pixel_dataset(load_sample_dataset()["train"].select(range(batch_size)), 32))
    if variant == "compile":
        model.encoder.compile(backend=COMPILE_BACKEND), model.decoder.compile(backend=COMPILE_BACKEND)
    elif variant == "channels_last":
        model.to(memory_format=torch.channels_last)
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    torch.manual_seed(1)
    output = model(pixels)
    output.loss.backward()
    return output.loss.item(), {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


if __name__ == "__main__":
    main()
