"""The 1-D token backbone (`backbone_type="titok"`), after TiTok (Yu et al. 2024, "An Image is Worth
32 Tokens for Reconstruction and Generation"): an image becomes a sequence of L latent tokens, not a
grid, so the model that reads the tokens gets L positions however large the image.

Encoder: the image's patches (as in the ViT backbone) and L learnt `latent_tokens` go through one
transformer together; the latent tokens' outputs, mapped to D, are the latents `[B, D, L]`.
Decoder: the L quantized latents (mapped to the width, plus their own learnt positions) and one learnt
`mask_token` at every patch position (plus the patches' 2-D sine-cosine positions) go through a
transformer; the mask tokens' outputs become the patches' pixels. The decoder makes images of the
tokenizer's `image_size`, so this backbone needs it (`needs_image_size`).
"""

from __future__ import annotations

import torch
from torch import nn

from ..options import POSITIVE_INT, options_dataclass
from .base import BackboneConfig
from .vit import ViTBackboneConfig, ViTDecoder, ViTEncoder, check_widths, sincos_positions, unpatchify


@options_dataclass
class TiTokBackboneConfig(BackboneConfig):
    """Settings of the 1-D token backbone: the ViT backbone's, and the number of latent tokens."""

    backbone_type = "titok"
    needs_image_size = True
    options = {
        **ViTBackboneConfig.options,
        "num_latent_tokens": POSITIVE_INT(32, (
            "L: an image becomes L tokens, ids `[B, L]` (`[B, L, R]` with R codes per position), whatever its size."
        )),
    }
    option_rules = (check_widths,)

    @property
    def downsampling_factor(self) -> int:
        return self.patch_size

    def token_grid(self, image_size: int) -> tuple[int, ...]:
        return (self.num_latent_tokens,)

    def build_encoder(self, in_channels: int, latent_dim: int, image_size: int | None = None) -> TiTokEncoder:
        return TiTokEncoder(self, in_channels, latent_dim)

    def build_decoder(self, latent_dim: int, out_channels: int, image_size: int | None = None) -> TiTokDecoder:
        if image_size is None:
            raise ValueError("the titok backbone's decoder needs the tokenizer's image_size")
        return TiTokDecoder(self, latent_dim, out_channels, image_size)


def learnt_tokens(count: int, width: int) -> nn.Parameter:
    """`count` learnt tokens of `width`, drawn with std width^-1/2 (TiTok's reference). Much smaller
    ones leave the L latents of an image alike (each a mean of the patches), which then collapse to
    the image's colour."""
    return nn.Parameter(torch.randn(count, width) * width**-0.5)


class TiTokEncoder(ViTEncoder):
    """Images `[B, C, H, W]` -> latents `[B, D, L]`: the ViT encoder, its L latent tokens kept."""

    def __init__(self, config: TiTokBackboneConfig, in_channels: int, latent_dim: int):
        super().__init__(config, in_channels, latent_dim)
        self.latent_tokens = learnt_tokens(config.num_latent_tokens, config.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        tokens, _, _ = self.patch_tokens(pixel_values)
        latents = self.latent_tokens.expand(tokens.shape[0], -1, -1)
        hidden = self.transformer(torch.cat([tokens, latents], dim=1))[:, tokens.shape[1]:]
        return self.to_latent(hidden).transpose(1, 2)


class TiTokDecoder(ViTDecoder):
    """Latents `[B, D, L]` -> images `[B, out_channels, image_size, image_size]` (unbounded): the ViT
    decoder over the latents and a mask token at every patch position."""

    def __init__(self, config: TiTokBackboneConfig, latent_dim: int, out_channels: int, image_size: int):
        super().__init__(config, latent_dim, out_channels)
        self.side = image_size // config.patch_size
        self.latent_positions = learnt_tokens(config.num_latent_tokens, config.hidden_size)
        self.mask_token = learnt_tokens(1, config.hidden_size)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        batch, side = latents.shape[0], self.side
        latent_tokens = self.from_latent(latents.transpose(1, 2)) + self.latent_positions
        masks = self.mask_token + sincos_positions(side, side, self.mask_token.shape[-1], latents.device)
        hidden = self.transformer(torch.cat([latent_tokens, masks.expand(batch, -1, -1)], dim=1))
        return unpatchify(self.to_pixels(hidden[:, latent_tokens.shape[1]:]), side, side, self.out_channels,
                          self.patch_size)
