"""The small residual convolutional backbone (`backbone_type="conv"`), the quickstart's.

Encoder: `conv_in` -> per level `down[i]` (residual `blocks`, a stride-2 `downsample` conv) ->
`mid` residual block -> `norm_out`, SiLU, `conv_out` to D.
Decoder: `conv_in` from D -> `mid` -> per level `up[i]` (residual `blocks`, nearest x2 `upsample`
and a conv) -> `norm_out`, SiLU, `conv_out`. Level `i` has width `base_channels *
channel_multipliers[i]`; there are `log2(downsampling_factor)` levels.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from ..options import POSITIVE_INT, Option
from .base import BackboneConfig

SUPPORTED_DOWNSAMPLING_FACTORS = (2, 4, 8, 16)


@dataclasses.dataclass
class ConvBackboneConfig(BackboneConfig):
    """Settings of the residual convolutional backbone."""

    backbone_type = "conv"
    options = {
        "base_channels": Option(int, low=1, doc="Width of the first convolution; level `i` has "
                                "`base_channels * channel_multipliers[i]` channels."),
        "channel_multipliers": Option(list, optional=True, doc="One width multiplier per downsampling level "
                                      "(`log2(downsampling_factor)` of them); default `[1, 2, 4, 4]` cut to that length."),
        "num_res_blocks": Option(int, low=1, doc="Residual blocks per level, in the encoder and the decoder."),
        "downsampling_factor": Option(int, choices=SUPPORTED_DOWNSAMPLING_FACTORS, doc="f: an H x W image gives "
                                      "an (H/f) x (W/f) token grid; image sides must be multiples of f."),
        "norm_groups": Option(int, low=1, doc="GroupNorm groups (reduced to a divisor of each layer's width "
                              "where needed)."),
    }

    base_channels: int = 64
    channel_multipliers: list[int] | None = None
    num_res_blocks: int = 1
    downsampling_factor: int = 4
    norm_groups: int = 8

    def __post_init__(self):
        if isinstance(self.channel_multipliers, tuple):
            self.channel_multipliers = list(self.channel_multipliers)
        if self.channel_multipliers is None and isinstance(self.downsampling_factor, int):
            self.channel_multipliers = [min(2**i, 4) for i in range(self.num_levels)]
        super().__post_init__()

    def check(self) -> None:
        super().check()
        for multiplier in self.channel_multipliers:
            POSITIVE_INT.check("channel_multipliers[i]", multiplier, "backbone_config field")
        if len(self.channel_multipliers) != self.num_levels:
            raise ValueError(
                f"backbone_config field `channel_multipliers` needs one entry per downsampling level: "
                f"log2({self.downsampling_factor}) = {self.num_levels}, got {len(self.channel_multipliers)} "
                f"({self.channel_multipliers})"
            )

    @property
    def num_levels(self) -> int:
        """Number of stride-2 stages in the encoder (and upsampling stages in the decoder)."""
        return max(self.downsampling_factor.bit_length() - 1, 0)

    @property
    def level_widths(self) -> list[int]:
        return [self.base_channels * m for m in self.channel_multipliers]

    def build_encoder(self, in_channels: int, latent_dim: int) -> ConvEncoder:
        return ConvEncoder(self, in_channels, latent_dim)

    def build_decoder(self, latent_dim: int, out_channels: int) -> ConvDecoder:
        return ConvDecoder(self, latent_dim, out_channels)

    def legacy_state_names(self, prefix: str) -> dict[str, str]:
        """vqtok 0.1 kept each half in one `nn.Sequential` (`layers.<i>`) and each residual block's
        body in another (`body.<i>`); today's names, in the same build order."""
        down = prefix == "encoder."
        names = ["conv_in"] + ([] if down else ["mid"])
        for level in range(self.num_levels):
            part = f"down.{level}" if down else f"up.{level}"
            names += [f"{part}.blocks.{block}" for block in range(self.num_res_blocks)]
            names.append(f"{part}.downsample" if down else f"{part}.upsample")
        names += (["mid"] if down else []) + ["norm_out", None, "conv_out"]  # None: the parameterless SiLU
        renames = {f"{prefix}layers.{i}.": f"{prefix}{name}." for i, name in enumerate(names) if name}
        renames.update({f".body.{i}.": f".{name}." for i, name in ((0, "norm1"), (2, "conv1"), (3, "norm2"), (5, "conv2"))})
        return renames


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= `groups` that divides `channels`."""
    return nn.GroupNorm(math.gcd(channels, groups), channels, eps=1e-6)


class ResidualBlock(nn.Module):
    """`skip(x) + conv2(SiLU(norm2(conv1(SiLU(norm1(x))))))`, 3x3 convs; `skip` is a 1x1 projection
    when the widths differ."""

    def __init__(self, in_channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels, groups)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.conv1(self.act(self.norm1(x)))
        return self.skip(x) + self.conv2(self.act(self.norm2(hidden)))


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


def residual_blocks(width: int, level_width: int, config: ConvBackboneConfig) -> nn.ModuleList:
    """`num_res_blocks` residual blocks taking `width` channels to `level_width`."""
    widths = [width] + [level_width] * config.num_res_blocks
    return nn.ModuleList(ResidualBlock(a, b, config.norm_groups) for a, b in zip(widths, widths[1:]))


class ConvEncoder(nn.Module):
    """Images `[B, C, H, W]` -> latents `[B, D, H/f, W/f]`."""

    def __init__(self, config: ConvBackboneConfig, in_channels: int, latent_dim: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, config.base_channels, 3, padding=1)
        width = config.base_channels
        self.down = nn.ModuleList()
        for level_width in config.level_widths:
            level = nn.Module()
            level.blocks = residual_blocks(width, level_width, config)
            level.downsample = nn.Conv2d(level_width, level_width, 3, stride=2, padding=1)
            self.down.append(level)
            width = level_width
        self.mid = ResidualBlock(width, width, config.norm_groups)
        self.norm_out = group_norm(width, config.norm_groups)
        self.act = nn.SiLU()
        self.conv_out = nn.Conv2d(width, latent_dim, 3, padding=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.conv_in(pixel_values)
        for level in self.down:
            for block in level.blocks:
                hidden = block(hidden)
            hidden = level.downsample(hidden)
        return self.conv_out(self.act(self.norm_out(self.mid(hidden))))


class ConvDecoder(nn.Module):
    """Latents `[B, D, h, w]` -> `[B, out_channels, h*f, w*f]` (unbounded; `decode` clamps images to
    [-1, 1]). A likelihood over categories asks for one output channel per category."""

    def __init__(self, config: ConvBackboneConfig, latent_dim: int, out_channels: int):
        super().__init__()
        widths = config.level_widths
        width = widths[-1]
        self.conv_in = nn.Conv2d(latent_dim, width, 3, padding=1)
        self.mid = ResidualBlock(width, width, config.norm_groups)
        self.up = nn.ModuleList()
        for level_width in reversed(widths):
            level = nn.Module()
            level.blocks = residual_blocks(width, level_width, config)
            level.upsample = Upsample(level_width)
            self.up.append(level)
            width = level_width
        self.norm_out = group_norm(width, config.norm_groups)
        self.act = nn.SiLU()
        self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        hidden = self.mid(self.conv_in(latents))
        for level in self.up:
            for block in level.blocks:
                hidden = block(hidden)
            hidden = level.upsample(hidden)
        return self.conv_out(self.act(self.norm_out(hidden)))
