"""How much fine detail a reconstruction keeps: its energy at high spatial frequencies against the
original's. Blurry reconstructions lose it (ratio below 1); a perfectly sharp one keeps it (1.0);
one that invents noise or ringing exceeds it. Needs no downloaded network."""

from __future__ import annotations

import torch

# "High" frequencies: above this fraction of the Nyquist frequency (0.5 cycles per pixel), radially.
DEFAULT_CUTOFF = 0.5


def high_frequency_energy(images: torch.Tensor, cutoff: float = DEFAULT_CUTOFF) -> torch.Tensor:
    """Per image `[B, C, H, W]` (values in [-1, 1]): the summed power |FFT|^2 of every channel at
    radial frequencies above `cutoff` x Nyquist, per pixel."""
    if images.ndim != 4:
        raise ValueError(f"images must be [B, C, H, W], got shape {tuple(images.shape)}")
    if not 0 < cutoff < 1:
        raise ValueError(f"cutoff must be in (0, 1) (a fraction of the Nyquist frequency), got {cutoff}")
    height, width = images.shape[-2:]
    spectrum = torch.fft.fft2(images.double()).abs().pow(2)
    fy = torch.fft.fftfreq(height, device=images.device, dtype=torch.float64).view(-1, 1)
    fx = torch.fft.fftfreq(width, device=images.device, dtype=torch.float64).view(1, -1)
    high = torch.sqrt(fy**2 + fx**2) > cutoff * 0.5
    return (spectrum * high).sum(dim=(1, 2, 3)) / (height * width)
