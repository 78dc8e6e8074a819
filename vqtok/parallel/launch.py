"""How many processes a launcher started, and whether Accelerate joined them into one job.

A multi-process launcher (`torchrun`, `accelerate launch --multi_gpu`, which runs torchrun, or
mpirun) starts N copies of a script and tells each its rank through the environment (`WORLD_SIZE`,
`RANK`, `LOCAL_RANK`, or MPI's equivalents). Accelerate's `PartialState` joins them into one process
group only on a device it distributes over (CUDA, XPU, NPU, ...) or when told to use the CPU
(`Accelerator(cpu=True)` / `ACCELERATE_USE_CPU`, which then picks gloo). On a machine without such a
device each copy otherwise builds a lone one-process state: N independent runs, each the "main
process", all writing the same output folder.

`use_cpu()` says when to tell Accelerate to use the CPU (a multi-process launch with no device to
distribute over, or `ACCELERATE_USE_CPU`), and `check_launch` raises when a state still sees fewer
processes than were launched. `accelerate launch --cpu --num_processes N` (without `--mpirun_hostfile`)
starts ONE process: `check_launch` warns when it recognises that launch.
"""

from __future__ import annotations

import os
import warnings

import torch
from accelerate import utils as accelerate_utils

# Where a launcher puts the number of processes it started, in the order Accelerate reads them
# (`accelerate.utils.environment.get_cpu_distributed_information`).
WORLD_SIZE_VARIABLES = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")

# The launches that do start N CPU processes, for error messages.
CPU_LAUNCH_HINT = (
    "start N CPU processes with `torchrun --nproc_per_node N SCRIPT ...` (or `accelerate launch --multi_gpu "
    "--num_processes N SCRIPT ...`, which runs torchrun); `accelerate launch --cpu --num_processes N` starts "
    "only one process"
)


def launched_processes() -> int:
    """The number of processes the launcher says it started (`WORLD_SIZE` or MPI's equivalents);
    1 without a launcher."""
    return accelerate_utils.get_int_from_env(list(WORLD_SIZE_VARIABLES), 1)


def use_cpu() -> bool:
    """Whether Accelerate must be told to run on the CPU: when `ACCELERATE_USE_CPU` says so, or when a
    launcher started several processes and there is no device Accelerate would distribute them over
    (then, told nothing, it would leave every process alone). With such a device this stays False,
    so GPU launches keep their device and backend (nccl, ...)."""
    if accelerate_utils.parse_flag_from_env("ACCELERATE_USE_CPU"):
        return True
    return launched_processes() > 1 and not _distributed_device_available()


def accelerator_options() -> dict:
    """Keyword arguments for `Accelerator(...)` / `PartialState(...)` that make a multi-process
    launch on CPUs one job: `{"cpu": use_cpu()}`."""
    return {"cpu": use_cpu()}


def check_launch(state, output_dir: str | os.PathLike | None = None) -> None:
    """Raise `RuntimeError` when the launcher started more processes than `state` (an `Accelerator`,
    `AcceleratorState` or `PartialState`) sees: those processes would each run alone, as the main
    process, and overwrite each other's outputs (`output_dir`, named in the message). Warn when the
    environment looks like `accelerate launch --cpu --num_processes N`, which starts one process."""
    launched = launched_processes()
    where = f" and write {output_dir} as the main process" if output_dir is not None else ""
    if launched > 1 and state.num_processes != launched:
        raise RuntimeError(
            f"the launcher started {launched} processes (WORLD_SIZE={launched}) but Accelerate sees "
            f"{state.num_processes} ({state.distributed_type}): each process would train alone{where}. "
            "Without a GPU, Accelerate joins the processes only when told to use the CPU: make its first "
            "state with `vqtok.parallel.launch.accelerator_options()` (e.g. `PartialState(**accelerator_options())`; "
            "a `PartialState()` made earlier in the process fixes it for good) or set ACCELERATE_USE_CPU=1; "
            f"{CPU_LAUNCH_HINT}"
        )
    if launched == 1 and _looks_like_single_cpu_launch():
        warnings.warn(
            "`accelerate launch --cpu` started this as its only process (its simple launcher ignores "
            f"--num_processes without --mpirun_hostfile); {CPU_LAUNCH_HINT}",
            stacklevel=2,
        )


def _looks_like_single_cpu_launch() -> bool:
    """`accelerate launch --cpu --num_processes N>1` (simple launcher): the child gets
    `ACCELERATE_USE_CPU=True` and `MASTER_PORT`, but no rank, since it is the only process."""
    return (
        accelerate_utils.parse_flag_from_env("ACCELERATE_USE_CPU")
        and "MASTER_PORT" in os.environ
        and "LOCAL_RANK" not in os.environ
    )


def _distributed_device_available() -> bool:
    """Whether Accelerate would distribute launched processes over a device: the devices
    `PartialState._prepare_backend` checks before it falls back to no distribution (unless told to use
    the CPU). XLA is left out: Accelerate uses it whatever `cpu` says."""
    checks = (
        torch.cuda.is_available,
        accelerate_utils.is_xpu_available,
        accelerate_utils.is_npu_available,
        accelerate_utils.is_mlu_available,
        accelerate_utils.is_musa_available,
        accelerate_utils.is_sdaa_available,
        accelerate_utils.is_hpu_available,
        accelerate_utils.is_neuron_available,
    )
    return any(check() for check in checks)
