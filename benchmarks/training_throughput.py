#!/usr/bin/env python
"""Training throughput (images/s) of the quickstart config with 1 and with 2 CPU processes.

Runs the real command line, `training/train_tokenizer.py --config training/configs/quickstart.yaml`,
once with `python` (one process using every core) and once with
`accelerate launch --cpu --num_processes 2` (the cores split between them; and, for reference, one
process on one core), with the same per-process batch, no evaluation and no logging. The trainer times every optimizer step after its first
`THROUGHPUT_SKIP_STEPS` (k-means initialisation, lazy allocations) and reports images/s over all
processes in `metrics.json`; this script prints them side by side with the ratio to one process.

    python benchmarks/training_throughput.py [--steps 20] [--batch_size 64]

Two processes only pay off when each has cores of its own: the ratio says how close data
parallelism on this machine comes to sharing the same cores better than one process's threads.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from vqtok.training.trainer import THROUGHPUT_SKIP_STEPS

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "quickstart.yaml"
SCRIPT = REPO / "training" / "train_tokenizer.py"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(processes: int, threads: int, steps: int, batch_size: int, output_dir: Path) -> float:
    """Train for `THROUGHPUT_SKIP_STEPS + steps` steps; return the images/s the trainer measured."""
    overrides = [
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
        command = [
            sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_machines", "1",
            "--num_processes", str(processes), "--num_cpu_threads_per_process", str(threads),
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
            str(SCRIPT),
        ]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MASTER_ADDR": "127.0.0.1"}
    done = subprocess.run([*command, "--config", str(CONFIG), *overrides], env=env, cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    return json.loads((output_dir / "metrics.json").read_text())["images_per_second"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps (after the skipped warm-up ones)")
    parser.add_argument("--batch_size", type=int, default=64, help="images per process per step (quickstart: 64)")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    # One process on every core, one process on one core, and the cores split over two processes.
    setups = [(1, cores), (1, 1), (2, max(cores // 2, 1))]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for processes, threads in setups:
            speed = run(processes, threads, args.steps, args.batch_size, Path(scratch) / f"p{processes}t{threads}")
            rows.append((processes, threads, speed))
    print(f"\nquickstart config, batch {args.batch_size} per process, {args.steps} timed steps, {cores} CPU cores\n")
    print("| processes | threads each | global batch | images/s | vs row 1 |")
    print("|---:|---:|---:|---:|---:|")
    for processes, threads, speed in rows:
        print(f"| {processes} | {threads} | {processes * args.batch_size} | {speed:.1f} | {speed / rows[0][2]:.2f}x |")


if __name__ == "__main__":
    main()
