"""Evaluation of a tokenizer on held-out images (reconstruction quality, sharpness, perceptual
distances and codebook use; the measures themselves are in `vqtok.metrics`) and the topology of its
codebook (persistent homology)."""

from __future__ import annotations

import math

from collections.abc import Mapping

import torch
from datasets import Dataset
from torch import nn
from tqdm.auto import tqdm

from ..data import collate_pixel_values
from ..metrics.frechet import FeatureStatistics, frechet_distance_of
from ..metrics.pixels import SSIM_WINDOW, per_image_mse, per_image_ssim, psnr_from_mse
from ..metrics.spectrum import high_frequency_energy
from ..quantizers import code_histogram, entropy_from_counts, perplexity_from_counts, sampled_code_vectors
from ..regularizers.persistence import persistence_bars, persistence_signature
from ..validation import check_positive_int


@torch.no_grad()
def evaluate_tokenizer(model, dataset: Dataset, batch_size: int = 128, progress: bool = True,
                       lpips: nn.Module | None = None, feature_distances: Mapping[str, nn.Module] | None = None,
                       ) -> dict[str, float]:
    """Deterministic round trip `decode(encode(x))` over a dataset with `pixel_values` rows.

    Args:
        lpips: an LPIPS network (`vqtok.metrics.LPIPS.pretrained()`): adds `lpips`, the mean distance.
        feature_distances: name -> feature network (`[B, C, H, W]` in [-1, 1] -> `[B, D]`): adds the
            Fréchet distance between the held-out images' and the reconstructions' features under
            each name (`{"rfid": InceptionFeatures.pretrained()}` gives rFID). Features are
            accumulated as running statistics, so memory stays bounded on large sets.

    Returns:
        `mse` (mean over pixels, [0, 1] scale), `psnr` (mean of per-image PSNR, dB), `ssim` (mean
        per-image SSIM; images of at least 11 x 11 pixels), `high_frequency_energy_ratio` (the
        reconstructions' energy above half the Nyquist frequency over the originals'; 1.0 is as
        sharp as the originals), `perplexity` (of the code histogram over all held-out tokens),
        `code_entropy` (its entropy, bits), `codes_used` (fraction of the K codes that appear),
        `bits_per_image` (tokens x log2 K), and the optional `lpips` and feature distances.
    """
    check_positive_int("batch_size", batch_size)
    was_training = model.training
    model.eval()
    device = model.device
    codebook_size = model.config.codebook_size
    counts = torch.zeros(codebook_size, device=device)
    sums: dict[str, float] = {"mse": 0.0, "psnr": 0.0, "ssim": 0.0, "lpips": 0.0}
    high_frequency = {"original": 0.0, "reconstruction": 0.0}
    judges = {name: network.to(device).eval() for name, network in (feature_distances or {}).items()}
    statistics: dict[str, tuple[FeatureStatistics, FeatureStatistics]] = {}
    images, tokens_per_image = 0, 0
    for start in tqdm(range(0, len(dataset), batch_size), desc="evaluating", disable=not progress, leave=False):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        pixel_values = collate_pixel_values(rows).to(device)
        ids = model.encode(pixel_values)
        reconstruction = model.decode(ids)
        counts += code_histogram(ids, codebook_size)
        mse = per_image_mse(pixel_values, reconstruction)
        sums["mse"] += float(mse.sum())
        sums["psnr"] += float(psnr_from_mse(mse).sum())
        if min(pixel_values.shape[-2:]) >= SSIM_WINDOW:
            sums["ssim"] += float(per_image_ssim(pixel_values, reconstruction).sum())
        if lpips is not None:
            sums["lpips"] += float(lpips.to(device)(pixel_values, reconstruction).sum())
        high_frequency["original"] += float(high_frequency_energy(pixel_values).sum())
        high_frequency["reconstruction"] += float(high_frequency_energy(reconstruction).sum())
        for name, network in judges.items():
            originals, reconstructions = network(pixel_values), network(reconstruction)
            if name not in statistics:
                statistics[name] = (FeatureStatistics(originals.shape[1]), FeatureStatistics(originals.shape[1]))
            statistics[name][0].update(originals)
            statistics[name][1].update(reconstructions)
        images += len(rows)
        tokens_per_image = ids[0].numel()
    model.train(was_training)
    if images == 0:
        raise ValueError("the evaluation set is empty")
    results = {
        "mse": sums["mse"] / images,
        "psnr": sums["psnr"] / images,
        **({"ssim": sums["ssim"] / images} if min(pixel_values.shape[-2:]) >= SSIM_WINDOW else {}),
        **({"lpips": sums["lpips"] / images} if lpips is not None else {}),
        **{name: frechet_distance_of(*pair) for name, pair in statistics.items()},
        "high_frequency_energy_ratio": high_frequency["reconstruction"] / max(high_frequency["original"], 1e-30),
        "perplexity": float(perplexity_from_counts(counts)),
        "code_entropy": float(entropy_from_counts(counts)) / math.log(2),
        "codes_used": float((counts > 0).float().mean()),
        "bits_per_image": tokens_per_image * math.log2(codebook_size),
    }
    return results


@torch.no_grad()
def codebook_topology(model, max_points: int | None = 512, width: float = 1e-3) -> dict[str, float]:
    """The persistent-homology signature of a tokenizer's codes (`sampled_code_vectors`: all
    of them, or a seeded sample of `max_points` codes): `epsilon0` (mean H0 death: how far
    apart the codes' clusters lie), `betti1` (soft count of H1 bars: loops), and the persistent
    entropies of the H0 and H1 bars. Works for every tokenizer type; see `vqtok.regularizers.persistence`."""
    cloud = sampled_code_vectors(model.quantizer, max_points, seed=0)
    return persistence_signature(persistence_bars(cloud), width).as_floats()
