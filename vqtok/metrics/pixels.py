"""Pixel-level reconstruction measures of images in [-1, 1], each per image and on the [0, 1] scale:
mean squared error, PSNR and SSIM."""

from __future__ import annotations

import torch
import torch.nn.functional as F

# SSIM as Wang et al. (2004) define it and scikit-image computes it with `gaussian_weights=True`:
# an 11-tap Gaussian window of standard deviation 1.5, K1 = 0.01, K2 = 0.03, on the [0, 1] scale,
# averaged over the positions where the window fits inside the image.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_SSIM_C1 = 0.01**2
_SSIM_C2 = 0.03**2


def per_image_mse(original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image, measured on the [0, 1] pixel scale, for two batches `[B, ...]`
    of one shape (images in [-1, 1])."""
    if original.shape != reconstruction.shape or original.ndim < 2:
        raise ValueError(f"per_image_mse compares two batches of images [B, ...] of one shape, got "
                         f"{tuple(original.shape)} and {tuple(reconstruction.shape)}")
    diff = (reconstruction.float() - original.float()) / 2.0
    return diff.pow(2).flatten(1).mean(dim=1)


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB for MSE on the [0, 1] scale (peak 1); capped at 100 dB for a perfect match. An
    MSE below 0 or NaN (no mean of squares) is refused."""
    mse = torch.as_tensor(mse)
    if torch.isnan(mse).any() or (mse < 0).any():
        raise ValueError(f"psnr_from_mse takes mean squared errors (>= 0), got values down to {mse.min().item()!r}")
    return (10.0 * torch.log10(1.0 / mse.clamp_min(1e-10))).clamp_max(100.0)


def _gaussian_window(device: torch.device) -> torch.Tensor:
    offsets = torch.arange(SSIM_WINDOW, dtype=torch.float64, device=device) - (SSIM_WINDOW - 1) / 2
    weights = torch.exp(-offsets.pow(2) / (2 * SSIM_SIGMA**2))
    return weights / weights.sum()


def per_image_ssim(original: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image (mean over channels and window positions), on the [0, 1]
    scale, for images `[B, C, H, W]` in [-1, 1] at least 11 x 11 pixels. 1.0 for identical images."""
    if original.shape != reconstruction.shape or original.ndim != 4:
        raise ValueError(f"SSIM compares images [B, C, H, W] of one shape, got {tuple(original.shape)} "
                         f"and {tuple(reconstruction.shape)}")
    if min(original.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {tuple(original.shape[-2:])}")
    channels = original.shape[1]
    x = (original.double() + 1) / 2
    y = (reconstruction.double() + 1) / 2
    window = _gaussian_window(x.device)
    rows = window.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    columns = window.view(1, 1, 1, -1).expand(channels, 1, 1, -1)

    def blur(values: torch.Tensor) -> torch.Tensor:  # the separable Gaussian mean over each valid window
        return F.conv2d(F.conv2d(values, rows, groups=channels), columns, groups=channels)

    mean_x, mean_y = blur(x), blur(y)
    var_x = blur(x * x) - mean_x**2
    var_y = blur(y * y) - mean_y**2
    covariance = blur(x * y) - mean_x * mean_y
    ssim_map = ((2 * mean_x * mean_y + _SSIM_C1) * (2 * covariance + _SSIM_C2)) / (
        (mean_x**2 + mean_y**2 + _SSIM_C1) * (var_x + var_y + _SSIM_C2)
    )
    return ssim_map.flatten(1).mean(dim=1).float()
