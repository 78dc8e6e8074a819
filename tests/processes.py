"""Run a test function on several CPU processes (gloo on 127.0.0.1), for tests of what happens under
Accelerate with more than one process."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import torch.multiprocessing as mp

TIMEOUT_S = 240  # a hang (a collective entered by one rank only) fails the test instead of blocking CI


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_processes(target, args: tuple, out_dir: Path, preload: list[str], world_size: int = 2) -> None:
    """Call `target(rank, port, *args)` on `world_size` processes forked from a fresh server that has
    imported the `preload` modules (imports only: safe to fork, and half the import time of spawned
    interpreters). A rank that fails should write its traceback to `out_dir/error_rank<r>.txt`; this
    raises AssertionError with those tracebacks when a rank fails or hangs."""
    tests_dir = str(Path(__file__).parent)
    if tests_dir not in sys.path:  # the children import the test modules by name
        sys.path.insert(0, tests_dir)
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(preload)
    port = free_port()
    processes = [context.Process(target=target, args=(rank, port, *args)) for rank in range(world_size)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(TIMEOUT_S)
    hung = [process for process in processes if process.is_alive()]
    for process in hung:
        process.kill()
        process.join()
    errors = "\n".join(path.read_text() for path in sorted(Path(out_dir).glob("error_rank*.txt")))
    assert not hung, f"ranks still running after {TIMEOUT_S} s (deadlock?)\n{errors}"
    assert all(process.exitcode == 0 for process in processes), f"a rank failed:\n{errors}"
