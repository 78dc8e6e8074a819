"""The maths every quantizer shares: distances to the codes (chunked, fp32), sampling from the
posterior over codes, code histograms and perplexity.

Nothing here forms an `[N, K, D]` tensor, and the distance functions hold at most one chunk of
`[rows, K]` distances at a time, sized for the device (`default_chunk_rows`: about a million floats
on a CPU; up to 256 MiB, and at most an eighth of the whole, on a GPU).
"""

from __future__ import annotations

import torch

from ..options import FLAG, NON_NEGATIVE, POSITIVE, Option

# The option of every quantizer that chunks its distance computations.
CHUNK_OPTIONS = {
    "chunk_rows": Option(int, low=1, optional=True)(None, (
        "Rows per chunk of the distance computations (None: sized for the device: about one million distances on a "
        "CPU, up to 256 MiB and at most an eighth of the whole on a GPU). Memory only: the results do not depend on it."
    ), training_only=True),
}


# The weight of the commitment loss, which most quantizers have (`.documented` where theirs differs).
COMMITMENT_COST = NON_NEGATIVE(0.25, "beta, the weight of the commitment loss `mean((z_e - sg z_q)^2)`.", training_only=True)

# The options of an entropy penalty on the soft code assignment p(.|z) (LFQ, BSQ, IBQ: each says which p).
ENTROPY_OPTIONS = {
    "entropy_weight": NON_NEGATIVE(0.05, (
        "Weight of the entropy loss `mean_n H(p(.|z_n)) - diversity_gamma * H(mean_n p(.|z_n))` (0 switches it off)."
    ), training_only=True),
    "diversity_gamma": NON_NEGATIVE(1.0, "gamma, the weight of the batch entropy (code diversity) inside the entropy loss.", training_only=True),
    "entropy_temperature": POSITIVE(0.01, "tau, the temperature of the soft code assignment p(.|z) the entropy loss scores.", training_only=True),
}

# The option of the nearest-code quantizers that can pass gradients by the rotation trick.
ROTATION_OPTIONS = {
    "rotation_trick": FLAG(False, (
        "Pass the gradient from the code to the latent by the rotation trick (Fifty et al. 2025) instead of "
        "copying it straight through: the decoder receives `sg[lambda R] z`, with R the rotation that takes z's "
        "direction to its code's and lambda = ||q|| / ||z||; its value is the code, its gradient with respect to "
        "z is lambda R^T times the gradient at the code. Its paper pairs it with a codebook learnt by gradient; "
        "on an EMA codebook without dead-code restarts it left 9 of 512 codes in use on digits (22 without it; "
        "see the benchmarks page), so keep the restarts on there."
    ), training_only=True),
}


def fp32_no_autocast(device: torch.device):
    """Context manager that disables autocast on `device`'s type, so maths stays in fp32."""
    return torch.autocast(device_type=device.type, enabled=False)


def fp32_backward(backward):
    """Decorator for a custom autograd Function's `backward`: run it with autocast off. Autograd runs a
    backward inside the caller's autocast context (a `loss.backward()` under bf16 autocast), where its
    matmuls would otherwise drop to bf16."""

    def run(ctx, *grads):
        with fp32_no_autocast(ctx.saved_tensors[0].device):
            return backward(ctx, *grads)

    return run


# The `[rows, K]` fp32 block a chunk of a distance computation holds, by device. On a CPU about a
# million floats (4 MiB): the block stays in cache, which is what makes chunking fast there. On a GPU
# up to 256 MiB and at most an eighth of the whole `[N, K]` block (one chunk when the whole is at most
# 32 MiB): few, large launches, and at most 1/8 of the memory of an unchunked search.
CPU_CHUNK_ELEMENTS = 1 << 20
GPU_CHUNK_BYTES = 256 << 20
GPU_UNCHUNKED_BYTES = 32 << 20
GPU_CHUNKS_AT_LEAST = 8
MIN_CHUNK_ROWS = 64


def default_chunk_rows(codebook_size: int, device: torch.device | str | None = None, num_rows: int | None = None) -> int:
    """Rows per chunk of a distance computation over `codebook_size` codes on `device` (default: the
    CPU) for `num_rows` rows (when known): see the budgets above. The memory a search holds is one
    chunk, `rows x K` fp32 values."""
    on_cpu = device is None or torch.device(device).type == "cpu"
    if on_cpu:
        return max(MIN_CHUNK_ROWS, CPU_CHUNK_ELEMENTS // codebook_size)
    rows = max(MIN_CHUNK_ROWS, GPU_CHUNK_BYTES // (4 * codebook_size))
    if num_rows is not None:
        if 4 * num_rows * codebook_size <= GPU_UNCHUNKED_BYTES:
            return max(1, num_rows)
        rows = min(rows, max(MIN_CHUNK_ROWS, -(-num_rows // GPU_CHUNKS_AT_LEAST)))
    return rows


def squared_distances(rows: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """All squared Euclidean distances `[N, K]` between rows `[N, D]` and codes `[K, D]`, in fp32.

    Uses the expanded form ||z||^2 - 2 z.e + ||e||^2 (one matmul; no `[N, K, D]` tensor), clamped at 0
    against rounding. Callers with large N go through `nearest_code` or `sample_codes`, which chunk.
    """
    rows, codebook = rows.float(), codebook.float()
    norms = rows.pow(2).sum(dim=1, keepdim=True) + codebook.pow(2).sum(dim=1)
    return torch.addmm(norms, rows, codebook.t(), alpha=-2.0).clamp_min_(0.0)


def nearest_code(
    rows: torch.Tensor,
    codebook: torch.Tensor,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Index of the nearest codebook vector (squared Euclidean distance) for each row.

    Computes `argmin_k ||e_k||^2 - 2 z.e_k` (the `||z||^2` term does not change the argmin) in
    fp32, one chunk of rows at a time, so memory is bounded by `chunk_rows x K` floats.

    Args:
        rows: `[N, D]` float tensor.
        codebook: `[K, D]` float tensor.
        chunk_rows: rows per chunk; default: `default_chunk_rows` for the rows' device.
    """
    with fp32_no_autocast(rows.device):
        rows = rows.float()
        codebook = codebook.float()
        codes_t = codebook.t().contiguous()
        code_sq_norms = codebook.pow(2).sum(dim=1)
        chunk_rows = chunk_rows or default_chunk_rows(codebook.shape[0], rows.device, rows.shape[0])
        indices = torch.empty(rows.shape[0], dtype=torch.long, device=rows.device)
        for start in range(0, rows.shape[0], chunk_rows):
            block = rows[start : start + chunk_rows]
            # One expression: the block's distances are freed before the next chunk's are made.
            indices[start : start + chunk_rows] = torch.addmm(code_sq_norms, block, codes_t, alpha=-2.0).argmin(dim=1)
    return indices


def sample_codes(
    rows: torch.Tensor,
    codebook: torch.Tensor,
    num_samples: int,
    temperature: float = 1.0,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """`num_samples` code ids per row, drawn with replacement from p(k|z) = softmax_k(-||z - e_k||^2 / T).

    Works one chunk of rows at a time (fp32), so memory is bounded by two `chunk_rows x K` blocks
    (the logits and their softmax). Returns `[N, num_samples]` `torch.long`.
    """
    with fp32_no_autocast(rows.device):
        chunk_rows = chunk_rows or default_chunk_rows(codebook.shape[0], rows.device, rows.shape[0])
        samples = torch.empty(rows.shape[0], num_samples, dtype=torch.long, device=rows.device)
        for start in range(0, rows.shape[0], chunk_rows):
            logits = squared_distances(rows[start : start + chunk_rows], codebook).div_(-temperature)
            probs = torch.softmax(logits, dim=1)
            samples[start : start + chunk_rows] = torch.multinomial(probs, num_samples, replacement=True)
    return samples


def rotate_to_codes(rows: torch.Tensor, codes: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """The rotation trick (Fifty et al. 2024, eq. 4): `sg[lambda R] z` for each row z `[N, D]` and its
    code q `[N, D]`, with lambda = ||q|| / ||z|| and R = I - 2 r r^T + 2 q^ z^T the rotation taking
    z^ = z / ||z|| to q^ = q / ||q|| (r = (z^ + q^) / ||z^ + q^||), applied without forming R:
    R z = z - 2 r (r.z) + 2 q^ (z^.z). The value is q (up to one rounding, as with the straight-through
    estimator); the gradient reaching z is lambda R^T times the gradient at the output. A zero latent,
    or one exactly opposite its code (R undefined), gets the straight-through gradient instead."""
    with torch.no_grad():
        row_norms = rows.norm(dim=1, keepdim=True)
        code_norms = codes.norm(dim=1, keepdim=True)
        row_dirs = rows / row_norms.clamp_min(eps)
        code_dirs = codes / code_norms.clamp_min(eps)
        halfway = row_dirs + code_dirs
        halfway_norms = halfway.norm(dim=1, keepdim=True)
        rotatable = (row_norms > eps) & (halfway_norms > eps)
        halfway = halfway / halfway_norms.clamp_min(eps)
        scale = code_norms / row_norms.clamp_min(eps)
    rotated = rows - 2 * halfway * (halfway * rows).sum(1, keepdim=True) + 2 * code_dirs * (row_dirs * rows).sum(1, keepdim=True)
    rotated = scale * rotated
    exact = rotated + (codes - rotated).detach()  # the value is exactly the code, the gradient the rotation's
    return torch.where(rotatable, exact, straight_through(rows, codes))


def straight_through(latents: torch.Tensor, codes: torch.Tensor, rotation_trick: bool = False) -> torch.Tensor:
    """What the decoder receives for latents `[N, D]` quantized to `codes` `[N, D]` (any one shape for
    both without the rotation trick): the codes' values, with the gradient at them passed to the
    latents unchanged (the straight-through estimator) or, with `rotation_trick`, rotated and rescaled
    (`rotate_to_codes`). No gradient reaches `codes`."""
    if rotation_trick:
        return rotate_to_codes(latents, codes.detach())
    return latents + (codes - latents).detach()


# The most codes a quantizer whose codes need no table (FSQ, LFQ, BSQ) supports: every training step
# counts code use in a `[K]` histogram (and LFQ keeps `[K]` mean code probabilities), 64 MiB at 2^24.
MAX_COUNTED_CODES = 2**24


def code_histogram(indices: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Float count of each code among `indices` (any shape)."""
    return torch.bincount(indices.reshape(-1), minlength=codebook_size).float()


def entropy_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of the distribution proportional to the non-negative `counts`
    (0 when they are all zero or there are none)."""
    probs = counts / counts.sum().clamp_min(1e-12)
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum()


def perplexity_from_counts(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy) of the code distribution given by `counts` (1 = one code, K = uniform)."""
    return entropy_from_counts(counts).exp()


def usage_stats(counts: torch.Tensor) -> dict[str, torch.Tensor]:
    """Perplexity and fraction of codes used, from a code histogram `counts` `[K]`."""
    return {
        "perplexity": perplexity_from_counts(counts),
        "usage": (counts > 0).float().mean(),
    }


def seeded_subset_ids(total: int, max_points: int | None, seed: int = 0) -> torch.Tensor:
    """Ids of at most `max_points` of `total` items, in increasing order: all of them when they are
    few enough (or `max_points` is None), else a choice seeded by `seed`, the same on every process."""
    if max_points is None or total <= max_points:
        return torch.arange(total)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=generator)[:max_points].sort().values
