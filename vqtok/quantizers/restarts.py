"""Dead-code restarts: codes that fall out of use are moved onto latent vectors of the current batch.

A code's use is a moving average of its per-batch assignment count, summed over all processes, so
every process finds the same dead codes; the replacement vectors are rank 0's draw, broadcast.
"""

from __future__ import annotations

import torch

from ..parallel.collectives import broadcast_
from ..options import NON_NEGATIVE
from .kmeans import sample_rows

# Code usage is tracked as a moving average over roughly the last 10 batches: short enough that
# codes stranded early in training (when the encoder's output still moves fast) are restarted
# within a few dozen steps, long enough that a rarely used but live code is not.
USAGE_DECAY = 0.9

DEAD_CODE_OPTIONS = {"dead_code_threshold": NON_NEGATIVE}


@torch.no_grad()
def update_usage_and_find_dead(
    code_usage: torch.Tensor, global_counts: torch.Tensor, threshold: float
) -> tuple[torch.Tensor, float] | None:
    """Fold this batch's global counts `[K]` into the moving average `code_usage` (in place) and
    return `(dead mask, fresh count)` for the codes below `threshold`, or None when there are none
    (or `threshold` is 0). The dead codes' usage is reset to the fresh count (the batch's average
    per code, at least `threshold`), so a restarted code gets time to be chosen."""
    code_usage.mul_(USAGE_DECAY).add_(global_counts, alpha=1 - USAGE_DECAY)
    if threshold <= 0:
        return None
    dead = code_usage < threshold
    if not bool(dead.any()):
        return None
    fresh_count = max(float(global_counts.sum()) / code_usage.numel(), threshold)
    code_usage[dead] = fresh_count
    return dead, fresh_count


@torch.no_grad()
def replacement_vectors(rows: torch.Tensor, count: int) -> torch.Tensor:
    """`count` rows of this batch, drawn on rank 0 and broadcast to every process."""
    return broadcast_(sample_rows(rows, count).contiguous())
