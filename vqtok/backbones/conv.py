"""The small residual convolutional backbone (`backbone_type="conv"`), the quickstart's.

Encoder: `conv_in` -> per level `down[i]` (residual `blocks`, a stride-2 `downsample` conv) ->
`mid` residual block -> `norm_out`, SiLU, `conv_out` to D.
Decoder: `conv_in` from D -> `mid` -> per level `up[i]` (residual `blocks`, nearest x2 `upsample`
and a conv) -> `norm_out`, SiLU, `conv_out`. Level `i` has width `base_channels *
channel_multipliers[i]`; there are `log2(downsampling_factor)` levels.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..options import POSITIVE_INT, Option, options_dataclass
from .base import GRADIENT_CHECKPOINTING, BackboneConfig, Decoder, run_block

SUPPORTED_DOWNSAMPLING_FACTORS = (2, 4, 8, 16)


def check_one_multiplier_per_level(options: dict, where: str) -> None:
    """The option rule of `channel_multipliers`: one per downsampling level, log2(f) of them."""
    levels, multipliers = num_levels(options["downsampling_factor"]), options["channel_multipliers"]
    if len(multipliers) != levels:
        raise ValueError(
            f"{where} `channel_multipliers` needs one entry per downsampling level: log2({options['downsampling_factor']})"
            f" = {levels}, got {len(multipliers)} ({multipliers})"
        )


def num_levels(downsampling_factor: int) -> int:
    """Stride-2 stages for a downsampling factor f (a power of 2): log2(f)."""
    return max(downsampling_factor.bit_length() - 1, 0)


@options_dataclass
class ConvBackboneConfig(BackboneConfig):
    """Settings of the residual convolutional backbone."""

    backbone_type = "conv"
    options = {
        "base_channels": POSITIVE_INT(64, (
            "Width of the first convolution; level `i` has `base_channels * channel_multipliers[i]` channels."
        )),
        "channel_multipliers": Option(list, optional=True, items=POSITIVE_INT)(None, (
            "One width multiplier per downsampling level (`log2(downsampling_factor)` of them); None: `[1, 2, 4, 4]` "
            "cut to that length."
        )),
        "num_res_blocks": POSITIVE_INT(1, "Residual blocks per level, in the encoder and the decoder."),
        "downsampling_factor": Option(int, choices=SUPPORTED_DOWNSAMPLING_FACTORS)(4, (
            "f: an H x W image gives an (H/f) x (W/f) token grid; image sides must be multiples of f."
        )),
        "norm_groups": POSITIVE_INT(8, "GroupNorm groups (reduced to a divisor of each layer's width where needed)."),
        **GRADIENT_CHECKPOINTING,
    }
    option_rules = (check_one_multiplier_per_level,)

    def __post_init__(self):
        if isinstance(self.channel_multipliers, tuple):
            self.channel_multipliers = list(self.channel_multipliers)
        if self.channel_multipliers is None and self.downsampling_factor in SUPPORTED_DOWNSAMPLING_FACTORS:
            self.channel_multipliers = [min(2**i, 4) for i in range(self.num_levels)]
        super().__post_init__()

    @property
    def num_levels(self) -> int:
        """Number of stride-2 stages in the encoder (and upsampling stages in the decoder)."""
        return num_levels(self.downsampling_factor)

    @property
    def level_widths(self) -> list[int]:
        return [self.base_channels * m for m in self.channel_multipliers]

    def build_encoder(self, in_channels: int, latent_dim: int) -> ConvEncoder:
        return ConvEncoder(self, in_channels, latent_dim)

    def build_decoder(self, latent_dim: int, out_channels: int) -> ConvDecoder:
        return ConvDecoder(self, latent_dim, out_channels)


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
        self.gradient_checkpointing = config.gradient_checkpointing

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.conv_in(pixel_values)
        for level in self.down:
            for block in level.blocks:
                hidden = run_block(self, block, hidden)
            hidden = level.downsample(hidden)
        return self.conv_out(self.act(self.norm_out(run_block(self, self.mid, hidden))))


class ConvDecoder(Decoder):
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
        self.gradient_checkpointing = config.gradient_checkpointing

    @property
    def last_layer(self) -> torch.Tensor:
        return self.conv_out.weight

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        hidden = run_block(self, self.mid, self.conv_in(latents))
        for level in self.up:
            for block in level.blocks:
                hidden = run_block(self, block, hidden)
            hidden = level.upsample(hidden)
        return self.conv_out(self.act(self.norm_out(hidden)))
