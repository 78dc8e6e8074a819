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
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from vqtok.training.trainer import THROUGHPUT_SKIP_STEPS

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "training" / "configs" / "quickstart.yaml"
SCRIPT = REPO / "training" / "train_tokenizer.py"


def run(processes: int, threads: int, steps: int, batch_size: int, output_dir: Path) -> float:
    """Train for `THROUGHPUT_SKIP_STEPS + steps` steps on `processes` processes of `threads` threads;
    return the images/s the trainer measured. Exits when the run did not train on `processes` processes."""
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
