"""Decoder likelihoods of SQ-VAE's reconstruction objective (Takida et al. 2022), in fp32, with the
von Mises-Fisher log-normaliser they need.

Every objective is a negative log-likelihood summed over a sample's pixels and averaged over the
batch (nats per image, up to constants), the units of the SQ-VAE loss:

- `arelbo_loss`: (D_x / 2) log(SSE / B), the Gaussian likelihood with its variance set to its
  maximum-likelihood value (the reference's default, after Lin et al. 2019, "AR-ELBO");
- `gaussian_nll`: SSE / (2 B sigma_x^2) + (D_x / 2) log sigma_x^2 with a learned sigma_x^2;
- `vmf_categorical_nll`: the von Mises-Fisher likelihood of categorical pixels: the decoder's
  output at each pixel, normalised, against the one-hot of the pixel's category.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# log I_v(x) switches from its power series to the uniform asymptotic expansion at this x.
_SERIES_LIMIT = 30.0
_SERIES_TERMS = 150
# Smallest SSE per image fed to the logarithm (guards log 0 on a perfect reconstruction).
_MIN_SSE = 1e-12


def arelbo_loss(reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(D_x / 2) * log(SSE / B), D_x the values per image, in fp32; log 0 is guarded."""
    batch = target.shape[0]
    sse = (reconstruction.float() - target.float()).pow(2).sum() / batch
    return 0.5 * (target[0].numel()) * torch.log(sse.clamp_min(_MIN_SSE))


def gaussian_nll(reconstruction: torch.Tensor, target: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """SSE / (2 B sigma^2) + (D_x / 2) log sigma^2 with sigma^2 = exp(`log_variance`), in fp32."""
    batch = target.shape[0]
    sse = (reconstruction.float() - target.float()).pow(2).sum() / batch
    log_variance = log_variance.float()
    return 0.5 * sse * torch.exp(-log_variance) + 0.5 * target[0].numel() * log_variance


def log_bessel_iv(order: float, x: torch.Tensor) -> torch.Tensor:
    """log I_order(x), the modified Bessel function of the first kind, for x > 0 and order >= 0.

    Differentiable in `x`, computed in float64 and returned in `x`'s dtype: the power series
    sum_m (x/2)^(2m+v) / (m! Gamma(m+v+1)) summed in log space for x <= 30, the uniform
    asymptotic (Debye) expansion with four correction terms above (relative error < 1e-9 there).
    """
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
    value = x.double()
    small = value.clamp(1e-300, _SERIES_LIMIT)
    large = value.clamp_min(_SERIES_LIMIT)

    m = torch.arange(_SERIES_TERMS, dtype=torch.float64, device=x.device)
    log_terms = (
        (2 * m + order) * torch.log(small / 2).unsqueeze(-1)
        - torch.lgamma(m + 1)
        - torch.lgamma(m + order + 1)
    )
    series = torch.logsumexp(log_terms, dim=-1)

    s = torch.sqrt(large.pow(2) + order**2)
    t2 = (order / s).pow(2)
    corrections = (
        1
        + (3 - 5 * t2) / (24 * s)
        + (81 - 462 * t2 + 385 * t2**2) / (1152 * s**2)
        + (30375 - 369603 * t2 + 765765 * t2**2 - 425425 * t2**3) / (414720 * s**3)
        + (4465125 - 94121676 * t2 + 349922430 * t2**2 - 446185740 * t2**3 + 185910725 * t2**4)
        / (39813120 * s**4)
    )
    debye = s + order * torch.log(large / (order + s)) - 0.5 * torch.log(2 * math.pi * s) + torch.log(corrections)

    return torch.where(value <= _SERIES_LIMIT, series, debye).to(x.dtype)


def vmf_log_normalizer(kappa: torch.Tensor, dim: int) -> torch.Tensor:
    """log C_d(kappa) of the von Mises-Fisher density C_d(kappa) exp(kappa mu.x) on the unit sphere
    of R^d: (d/2 - 1) log kappa - (d/2) log(2 pi) - log I_{d/2-1}(kappa)."""
    if dim < 2:
        raise ValueError(f"the von Mises-Fisher distribution needs dimension >= 2, got {dim}")
    order = dim / 2 - 1
    return order * torch.log(kappa) - (dim / 2) * math.log(2 * math.pi) - log_bessel_iv(order, kappa)


def vmf_categorical_nll(decoder_output: torch.Tensor, labels: torch.Tensor, log_kappa: torch.Tensor) -> torch.Tensor:
    """-(1/B) sum_pixels [kappa x^.onehot(label) + log C_C(kappa)], in fp32.

    Args:
        decoder_output: `[B, C, H, W]`, one channel per category; normalised over the channels.
        labels: `[B, H, W]` category ids in [0, C).
        log_kappa: log of the likelihood's concentration (a scalar tensor, typically learned).
    """
    directions = F.normalize(decoder_output.float(), dim=1)
    agreement = directions.gather(1, labels.long().unsqueeze(1)).sum()
    kappa = log_kappa.float().exp()
    pixels = labels.numel()
    batch = labels.shape[0]
    return -(kappa * agreement + pixels * vmf_log_normalizer(kappa, decoder_output.shape[1])) / batch
