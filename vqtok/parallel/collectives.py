"""Collective operations that are no-ops outside `torch.distributed`.

Quantizers call these so that codebook statistics and random re-initialisations agree on every
process, whether training runs on one CPU or on many GPUs.
"""

from __future__ import annotations

import json

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    """True on rank 0, and always outside distributed training."""
    return not is_distributed() or dist.get_rank() == 0


def all_reduce_sum_(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` in place over all processes and return it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite `tensor` in place with rank `src`'s value and return it."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def all_reduce_mean_(tensor: torch.Tensor) -> torch.Tensor:
    """Average `tensor` in place over all processes and return it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(dist.get_world_size())
    return tensor


def true_on_every_process(mask: torch.Tensor) -> bool:
    """True when the boolean `mask` holds only True on every process (a collective: every process
    must call it, and all get the same answer)."""
    failures = (~mask.detach()).any().to(torch.float32).reshape(1)
    return float(all_reduce_sum_(failures)) == 0.0


def gather_json(value) -> list:
    """Every process's `value` (anything JSON can hold), in rank order (a collective). Sent as JSON
    bytes in tensors, so that nothing is unpickled."""
    if not is_distributed():
        return [value]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    data = torch.tensor(list(json.dumps(value).encode("utf-8")), dtype=torch.uint8, device=device)
    length = torch.tensor([data.numel()], device=device)
    lengths = [torch.zeros_like(length) for _ in range(dist.get_world_size())]
    dist.all_gather(lengths, length)
    padded = torch.zeros(int(max(lengths)), dtype=torch.uint8, device=device)
    padded[: data.numel()] = data
    gathered = [torch.zeros_like(padded) for _ in lengths]
    dist.all_gather(gathered, padded)
    return [json.loads(bytes(part[: int(size)].tolist()).decode("utf-8")) for part, size in zip(gathered, lengths)]
