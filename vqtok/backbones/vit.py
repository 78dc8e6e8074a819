"""The vision-transformer backbone (`backbone_type="vit"`), as ViT-VQGAN and BSQ-ViT quantize it: the
patch grid of a transformer encoder, decoded by a transformer decoder.

Encoder: `patch_embed` (a `patch_size` x `patch_size` convolution of stride `patch_size`) -> tokens
plus a fixed 2-D sine-cosine positional embedding -> `num_layers` pre-norm `blocks` -> `norm_out` ->
`to_latent`, a linear map to D, laid out as the latent grid `[B, D, H/p, W/p]`.
Decoder: `from_latent` (linear, D -> width) plus the same positional embedding -> `num_layers` blocks
-> `norm_out` -> `to_pixels`, a linear map of each token to its p x p patch of pixels.
A block is `x + attention(LayerNorm(x))`, then `x + MLP(LayerNorm(x))` (GELU, `mlp_ratio` x width).
The positional embedding is computed from the grid's size, so the backbone has no parameter tied to
the image size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..options import POSITIVE_INT, Option, options_dataclass
from .base import GRADIENT_CHECKPOINTING, BackboneConfig, Decoder, run_block

PATCH_SIZES = (2, 4, 8, 16, 32)


def check_widths(options: dict, where: str) -> None:
    """The option rule of the width: a multiple of the heads (each head's width) and of 4 (the 2-D
    sine-cosine embedding's four parts)."""
    width, heads = options["hidden_size"], options["num_heads"]
    if width % heads or width % 4:
        raise ValueError(f"{where} `hidden_size` ({width}) must be a multiple of `num_heads` ({heads}) and of 4")


@options_dataclass
class ViTBackboneConfig(BackboneConfig):
    """Settings of the vision-transformer encoder and decoder."""

    backbone_type = "vit"
    options = {
        "patch_size": Option(int, choices=PATCH_SIZES)(8, (
            "p: each p x p patch is one token, so an H x W image gives an (H/p) x (W/p) token grid (the "
            "downsampling factor)."
        )),
        "hidden_size": POSITIVE_INT(256, "The transformer's width (a multiple of `num_heads` and of 4)."),
        "num_layers": POSITIVE_INT(4, "Transformer blocks in the encoder, and as many in the decoder."),
        "num_heads": POSITIVE_INT(4, "Attention heads."),
        "mlp_ratio": Option(float, low=0, low_open=True)(4.0, "The MLP's hidden width, as a multiple of `hidden_size`."),
        **GRADIENT_CHECKPOINTING,
    }
    option_rules = (check_widths,)

    @property
    def downsampling_factor(self) -> int:
        return self.patch_size

    def build_encoder(self, in_channels: int, latent_dim: int) -> ViTEncoder:
        return ViTEncoder(self, in_channels, latent_dim)

    def build_decoder(self, latent_dim: int, out_channels: int) -> ViTDecoder:
        return ViTDecoder(self, latent_dim, out_channels)


def sincos_positions(height: int, width: int, dim: int, device=None) -> torch.Tensor:
    """The fixed 2-D sine-cosine positional embedding `[height * width, dim]` (row-major): a quarter
    of the dimensions for each of sin/cos of the row and of the column, at geometric frequencies."""
    quarter = dim // 4
    frequencies = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32, device=device) / quarter)
    rows, columns = torch.meshgrid(torch.arange(height, dtype=torch.float32, device=device),
                                   torch.arange(width, dtype=torch.float32, device=device), indexing="ij")
    angles = [position.reshape(-1, 1) * frequencies for position in (rows, columns)]
    return torch.cat([part for angle in angles for part in (angle.sin(), angle.cos())], dim=1)


class Attention(nn.Module):
    """Multi-head self-attention over all tokens (torch's scaled dot-product attention)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, count, width = tokens.shape
        q, k, v = self.qkv(tokens).reshape(batch, count, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v)
        return self.proj(attended.transpose(1, 2).reshape(batch, count, width))


class Block(nn.Module):
    """A pre-norm transformer block."""

    def __init__(self, width: int, heads: int, mlp_ratio: float):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attention = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.attention(self.norm1(tokens))
        return tokens + self.mlp(self.norm2(tokens))


class Transformer(nn.Module):
    """`num_layers` blocks then a final LayerNorm; the blocks recompute their activations in the
    backward pass under gradient checkpointing."""

    def __init__(self, config: ViTBackboneConfig):
        super().__init__()
        self.blocks = nn.ModuleList(Block(config.hidden_size, config.num_heads, config.mlp_ratio)
                                    for _ in range(config.num_layers))
        self.norm_out = nn.LayerNorm(config.hidden_size, eps=1e-6)
        self.gradient_checkpointing = config.gradient_checkpointing

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            tokens = run_block(self, block, tokens)
        return self.norm_out(tokens)


class ViTEncoder(nn.Module):
    """Images `[B, C, H, W]` -> latents `[B, D, H/p, W/p]`."""

    def __init__(self, config: ViTBackboneConfig, in_channels: int, latent_dim: int):
        super().__init__()
        self.patch_embed = nn.Conv2d(in_channels, config.hidden_size, config.patch_size, stride=config.patch_size)
        self.transformer = Transformer(config)
        self.to_latent = nn.Linear(config.hidden_size, latent_dim)

    def patch_tokens(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """The patches as tokens `[B, h*w, width]` with their positions, and the patch grid (h, w)."""
        patches = self.patch_embed(pixel_values)
        _, width, height, grid_width = patches.shape
        tokens = patches.flatten(2).transpose(1, 2) + sincos_positions(height, grid_width, width, patches.device)
        return tokens, height, grid_width

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens, height, width = self.patch_tokens(pixel_values)
        latents = self.to_latent(self.transformer(tokens))
        return latents.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)


class ViTDecoder(Decoder):
    """Latents `[B, D, h, w]` -> `[B, out_channels, h*p, w*p]` (unbounded)."""

    def __init__(self, config: ViTBackboneConfig, latent_dim: int, out_channels: int):
        super().__init__()
        self.patch_size, self.out_channels = config.patch_size, out_channels
        self.from_latent = nn.Linear(latent_dim, config.hidden_size)
        self.transformer = Transformer(config)
        self.to_pixels = nn.Linear(config.hidden_size, out_channels * config.patch_size**2)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.to_pixels.weight

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = latents.shape
        tokens = self.from_latent(latents.flatten(2).transpose(1, 2))
        tokens = tokens + sincos_positions(height, width, tokens.shape[-1], latents.device)
        return unpatchify(self.to_pixels(self.transformer(tokens)), height, width, self.out_channels, self.patch_size)


def unpatchify(patches: torch.Tensor, height: int, width: int, channels: int, patch_size: int) -> torch.Tensor:
    """Row-major patch tokens `[B, height*width, channels*p*p]` -> images `[B, channels, height*p, width*p]`."""
    p = patch_size
    patches = patches.reshape(patches.shape[0], height, width, channels, p, p)
    return patches.permute(0, 3, 1, 4, 2, 5).reshape(patches.shape[0], channels, height * p, width * p)
