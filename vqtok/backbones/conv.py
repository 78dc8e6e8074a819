"""Residual convolutional encoder and decoder shared by every tokenizer.

Encoder: conv -> per level [residual blocks, stride-2 conv] -> residual block -> norm, SiLU, conv to D.
Decoder: mirror image with nearest-neighbour upsampling. Level `i` has width
`base_channels * channel_multipliers[i]`; there are `log2(downsampling_factor)` levels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..configuration import VQTokenizerConfig


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= `groups` that divides `channels`."""
    return nn.GroupNorm(math.gcd(channels, groups), channels, eps=1e-6)


class ResidualBlock(nn.Module):
    """(GroupNorm, SiLU, 3x3 conv) twice, plus a 1x1 projection on the skip when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.body = nn.Sequential(
            group_norm(in_channels, groups),
            nn.SiLU(),
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            group_norm(out_channels, groups),
            nn.SiLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


def _level_widths(config: VQTokenizerConfig) -> list[int]:
    return [config.base_channels * m for m in config.channel_multipliers]


class Encoder(nn.Module):
    """Images `[B, C, H, W]` -> latents `[B, D, H/f, W/f]`."""

    def __init__(self, config: VQTokenizerConfig):
        super().__init__()
        groups = config.norm_groups
        layers: list[nn.Module] = [nn.Conv2d(config.in_channels, config.base_channels, 3, padding=1)]
        width = config.base_channels
        for level_width in _level_widths(config):
            for _ in range(config.num_res_blocks):
                layers.append(ResidualBlock(width, level_width, groups))
                width = level_width
            layers.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
        layers += [
            ResidualBlock(width, width, groups),
            group_norm(width, groups),
            nn.SiLU(),
            nn.Conv2d(width, config.latent_dim, 3, padding=1),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.layers(pixel_values)


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    """Latents `[B, D, h, w]` -> images `[B, C, h*f, w*f]` (unbounded; `decode` clamps to [-1, 1]).

    `out_channels` defaults to the images' channels; a likelihood over categories asks for one
    channel per category.
    """

    def __init__(self, config: VQTokenizerConfig, out_channels: int | None = None):
        super().__init__()
        groups = config.norm_groups
        widths = _level_widths(config)
        width = widths[-1]
        layers: list[nn.Module] = [
            nn.Conv2d(config.latent_dim, width, 3, padding=1),
            ResidualBlock(width, width, groups),
        ]
        for level_width in reversed(widths):
            for _ in range(config.num_res_blocks):
                layers.append(ResidualBlock(width, level_width, groups))
                width = level_width
            layers.append(Upsample(width))
        out_channels = out_channels or config.in_channels
        layers += [group_norm(width, groups), nn.SiLU(), nn.Conv2d(width, out_channels, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.layers(latents)
