"""Evaluation of a tokenizer on held-out images (reconstruction quality and codebook use) and the
topology of its codebook (persistent homology)."""

from __future__ import annotations

import math

import torch
from datasets import Dataset
from tqdm.auto import tqdm

from ..data import collate_pixel_values
from ..quantizers import code_histogram, perplexity_from_counts
from ..regularizers.persistence import persistence_bars, persistence_signature


def per_image_mse(original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image, measured on the [0, 1] pixel scale (inputs are in [-1, 1])."""
    diff = (reconstruction.float() - original.float()) / 2.0
    return diff.pow(2).flatten(1).mean(dim=1)


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for MSE on the [0, 1] scale (peak 1); capped at 100 dB for a perfect match."""
    return (10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))).clamp_max(100.0)


@torch.no_grad()
def evaluate_tokenizer(model, dataset: Dataset, batch_size: int = 128, progress: bool = True) -> dict[str, float]:
    """Deterministic round trip `decode(encode(x))` over a dataset with `pixel_values` rows.

    Returns:
        `mse` (mean over pixels, [0, 1] scale), `psnr` (mean of per-image PSNR, dB),
        `perplexity` (of the code histogram over all held-out tokens), `codes_used`
        (fraction of the K codes that appear), `bits_per_image` (tokens x log2 K).
    """
    was_training = model.training
    model.eval()
    device = model.device
    codebook_size = model.config.codebook_size
    counts = torch.zeros(codebook_size, device=device)
    squared_errors, psnrs, tokens_per_image = [], [], 0
    batches = range(0, len(dataset), batch_size)
    for start in tqdm(batches, desc="evaluating", disable=not progress, leave=False):
        pixel_values = collate_pixel_values([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        pixel_values = pixel_values.to(device)
        ids = model.encode(pixel_values)
        reconstruction = model.decode(ids)
        counts += code_histogram(ids, codebook_size)
        mse = per_image_mse(pixel_values, reconstruction)
        squared_errors.append(mse.cpu())
        psnrs.append(psnr_from_mse(mse).cpu())
        tokens_per_image = ids[0].numel()
    model.train(was_training)
    mse = torch.cat(squared_errors)
    return {
        "mse": float(mse.mean()),
        "psnr": float(torch.cat(psnrs).mean()),
        "perplexity": float(perplexity_from_counts(counts)),
        "codes_used": float((counts > 0).float().mean()),
        "bits_per_image": tokens_per_image * math.log2(codebook_size),
    }


@torch.no_grad()
def codebook_topology(model, max_points: int | None = 512, width: float = 1e-3) -> dict[str, float]:
    """The persistent-homology signature of a tokenizer's codes (`model.quantizer.code_sample`: all
    of them, or a seeded sample of `max_points` codes): `epsilon0` (mean H0 death: how far
    apart the codes' clusters lie), `betti1` (soft count of H1 bars: loops), and the persistent
    entropies of the H0 and H1 bars. Works for every tokenizer type; see `vqtok.regularizers.persistence`."""
    cloud = model.quantizer.code_sample(max_points, seed=0)
    return persistence_signature(persistence_bars(cloud), width).as_floats()
