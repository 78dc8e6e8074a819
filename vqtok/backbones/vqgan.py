"""The VQGAN backbone (`backbone_type="vqgan"`): the encoder and decoder of taming-transformers'
VQGAN, which LlamaGen, Janus, Chameleon and the LDM/diffusers VQ models all share (Esser et al. 2021).

Level `i` (of `L = len(channel_multipliers)`) works at 1/2^i of the image side with
`base_channels * channel_multipliers[i]` channels, so f = 2^(L-1).

Encoder: `conv_in` -> per level `down[i]`: `num_res_blocks` residual `blocks`, each followed by a
self-attention block where `i` is in `attention_levels`, then (except at the last level) a stride-2
`downsample` conv with the reference's asymmetric zero padding (right and bottom only) -> `mid`
(residual block, self-attention, residual block) -> `norm_out`, SiLU, `conv_out` to `z_channels` ->
the 1x1 `quant_conv` to the latent dimension D.

Decoder: the 1x1 `post_quant_conv` from D to `z_channels` -> `conv_in` -> `mid` -> levels from the
last to the first, `up[i]`: `num_res_blocks + 1` residual `blocks` (each followed by attention where
`i` is in `attention_levels`), then (except at level 0) nearest x2 upsampling and a conv -> `norm_out`,
SiLU, `conv_out`. `up[i]` is level i's stage, as in taming's checkpoints.

Every GroupNorm has `norm_groups` groups (32 in every reference) and eps 1e-6; the attention is one
head over all positions, softmax(q^T k / sqrt(C)) v, with 1x1 convolutions for q, k, v and the output.
"""

from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

from ..options import FLAG, POSITIVE_INT, Option, options_dataclass
from .base import GRADIENT_CHECKPOINTING, BackboneConfig, Decoder, run_block
from .conv import ResidualBlock, Upsample, group_norm

MAX_LEVELS = 6  # f = 32, the largest factor a reference ships


def check_levels(options: dict, where: str) -> None:
    """The option rules of the levels: between 2 and `MAX_LEVELS` of them, and attention only at levels
    that exist."""
    multipliers = options["channel_multipliers"]
    if not 2 <= len(multipliers) <= MAX_LEVELS:
        raise ValueError(
            f"{where} `channel_multipliers` needs between 2 and {MAX_LEVELS} entries (f = 2 to "
            f"{2 ** (MAX_LEVELS - 1)}), got {len(multipliers)} ({multipliers})"
        )
    for level in options["attention_levels"] or ():
        Option(int, low=0, high=len(multipliers) - 1).check("attention_levels[i]", level, where)


@options_dataclass
class VQGANBackboneConfig(BackboneConfig):
    """Settings of the VQGAN encoder and decoder (taming / LlamaGen / Janus / Chameleon / LDM)."""

    backbone_type = "vqgan"
    options = {
        "base_channels": POSITIVE_INT(128, "Width of `conv_in` (`ch` in taming, 128 in every reference)."),
        "channel_multipliers": Option(list, items=POSITIVE_INT)([1, 1, 2, 2, 4], (
            "Width multiplier of each resolution level, from the full image side down (`ch_mult`); L of them "
            "give f = 2^(L-1): [1, 1, 2, 2, 4] is f = 16 (LlamaGen-16, Janus, Chameleon, taming f16), "
            "[1, 2, 2, 4] f = 8, [1, 1, 2, 2, 4, 4] f = 32. Between 2 and 6 entries."
        )),
        "num_res_blocks": POSITIVE_INT(2, (
            "Residual blocks per level in the encoder; the decoder has one more per level, as in every reference."
        )),
        "attention_levels": Option(list, optional=True)(None, (
            "Levels (0 = full image side) whose residual blocks are each followed by self-attention, in the "
            "encoder and the decoder; None: the last level only (LlamaGen, Janus, taming f16 at 256 px). "
            "taming's `attn_resolutions` r at image side S are the levels log2(S / r); [] puts attention only "
            "in the middle block."
        )),
        "mid_attention": FLAG(True, "Self-attention between the two residual blocks of the middle block."),
        "z_channels": POSITIVE_INT(256, (
            "Channels of the encoder's output and the decoder's input, around the 1x1 `quant_conv` / "
            "`post_quant_conv` that map them to and from the latent dimension D."
        )),
        "norm_groups": POSITIVE_INT(32, (
            "GroupNorm groups (reduced to a divisor of each layer's width where needed; 32 in every reference)."
        )),
        **GRADIENT_CHECKPOINTING,
    }
    option_rules = (check_levels,)

    def __post_init__(self):
        for name in ("channel_multipliers", "attention_levels"):
            if isinstance(getattr(self, name), tuple):
                setattr(self, name, list(getattr(self, name)))
        if self.attention_levels is None and isinstance(self.channel_multipliers, list):
            self.attention_levels = [len(self.channel_multipliers) - 1]
        super().__post_init__()

    @property
    def num_levels(self) -> int:
        """L, the resolution levels (one more than the stride-2 stages)."""
        return len(self.channel_multipliers)

    @property
    def downsampling_factor(self) -> int:
        return 2 ** (self.num_levels - 1)

    @property
    def level_widths(self) -> list[int]:
        return [self.base_channels * multiplier for multiplier in self.channel_multipliers]

    def build_encoder(self, in_channels: int, latent_dim: int) -> VQGANEncoder:
        return VQGANEncoder(self, in_channels, latent_dim)

    def build_decoder(self, latent_dim: int, out_channels: int) -> VQGANDecoder:
        return VQGANDecoder(self, latent_dim, out_channels)


class SelfAttention(nn.Module):
    """`x + proj_out(attention(q, k, v))` over all positions of a feature map: one head, q = q(norm(x))
    etc. (1x1 convs), weights softmax(q^T k / sqrt(C))."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        hidden = self.norm(x)

        def positions(projection: nn.Conv2d) -> torch.Tensor:  # [B, 1, HW, C]
            return projection(hidden).reshape(batch, 1, channels, height * width).transpose(2, 3)

        attended = F.scaled_dot_product_attention(positions(self.q), positions(self.k), positions(self.v))
        return x + self.proj_out(attended.transpose(2, 3).reshape(batch, channels, height, width))


class AsymmetricDownsample(nn.Module):
    """Stride-2 3x3 conv after zero padding on the right and bottom only (the references' padding,
    which a symmetric `padding=1` would not reproduce)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class MiddleBlock(nn.Module):
    """Residual block, self-attention (or nothing), residual block, at the lowest resolution."""

    def __init__(self, channels: int, config: VQGANBackboneConfig):
        super().__init__()
        self.block_1 = ResidualBlock(channels, channels, config.norm_groups)
        self.attention = SelfAttention(channels, config.norm_groups) if config.mid_attention else nn.Identity()
        self.block_2 = ResidualBlock(channels, channels, config.norm_groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attention(self.block_1(x)))


class Level(nn.Module):
    """One resolution level: residual `blocks`, each followed by its self-attention where the level
    has it (`attentions` holds one per block, or none), then the `resample` stage (downsampling in
    the encoder, upsampling in the decoder; absent at the level that has none)."""

    def __init__(self, widths: list[int], attention: bool, resample: nn.Module | None, groups: int):
        super().__init__()
        self.blocks = nn.ModuleList(ResidualBlock(a, b, groups) for a, b in zip(widths, widths[1:]))
        self.attentions = nn.ModuleList(SelfAttention(b, groups) for b in widths[1:]) if attention else nn.ModuleList()
        if resample is not None:
            self.resample = resample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index, block in enumerate(self.blocks):
            x = block(x)
            if len(self.attentions):
                x = self.attentions[index](x)
        return self.resample(x) if hasattr(self, "resample") else x


class VQGANEncoder(nn.Module):
    """Images `[B, C, H, W]` -> latents `[B, D, H/f, W/f]`."""

    def __init__(self, config: VQGANBackboneConfig, in_channels: int, latent_dim: int):
        super().__init__()
        groups, widths = config.norm_groups, config.level_widths
        self.conv_in = nn.Conv2d(in_channels, config.base_channels, 3, padding=1)
        self.down = nn.ModuleList()
        width = config.base_channels
        for level, level_width in enumerate(widths):
            last = level == config.num_levels - 1
            self.down.append(Level(
                [width] + [level_width] * config.num_res_blocks, level in config.attention_levels,
                None if last else AsymmetricDownsample(level_width), groups,
            ))
            width = level_width
        self.mid = MiddleBlock(width, config)
        self.norm_out = group_norm(width, groups)
        self.conv_out = nn.Conv2d(width, config.z_channels, 3, padding=1)
        self.quant_conv = nn.Conv2d(config.z_channels, latent_dim, 1)
        self.gradient_checkpointing = config.gradient_checkpointing

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.conv_in(pixel_values)
        for level in self.down:
            hidden = run_block(self, level, hidden)
        hidden = F.silu(self.norm_out(run_block(self, self.mid, hidden)))
        return self.quant_conv(self.conv_out(hidden))


class VQGANDecoder(Decoder):
    """Latents `[B, D, h, w]` -> `[B, out_channels, h*f, w*f]` (unbounded; `decode` clamps images to [-1, 1])."""

    def __init__(self, config: VQGANBackboneConfig, latent_dim: int, out_channels: int):
        super().__init__()
        groups, widths = config.norm_groups, config.level_widths
        self.post_quant_conv = nn.Conv2d(latent_dim, config.z_channels, 1)
        width = widths[-1]
        self.conv_in = nn.Conv2d(config.z_channels, width, 3, padding=1)
        self.mid = MiddleBlock(width, config)
        levels = {}
        for level in reversed(range(config.num_levels)):
            levels[level] = Level(
                [width] + [widths[level]] * (config.num_res_blocks + 1), level in config.attention_levels,
                Upsample(widths[level]) if level else None, groups,
            )
            width = widths[level]
        self.up = nn.ModuleList(levels[level] for level in range(config.num_levels))
        self.norm_out = group_norm(width, groups)
        self.conv_out = nn.Conv2d(width, out_channels, 3, padding=1)
        self.gradient_checkpointing = config.gradient_checkpointing

    @property
    def last_layer(self) -> torch.Tensor:
        return self.conv_out.weight

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        hidden = run_block(self, self.mid, self.conv_in(self.post_quant_conv(latents)))
        for level in reversed(self.up):
            hidden = run_block(self, level, hidden)
        return self.conv_out(F.silu(self.norm_out(hidden)))
