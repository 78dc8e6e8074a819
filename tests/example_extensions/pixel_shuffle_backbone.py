"""A test-only backbone, written as a new backbone is: its options declared once, its encoder and its
decoder (which names its last layer)."""

from __future__ import annotations

import torch
from torch import nn

from vqtok.backbones import BackboneConfig, Decoder
from vqtok.options import Option, options_dataclass


@options_dataclass
class PixelShuffleBackboneConfig(BackboneConfig):
    """Test-only backbone: a pixel unshuffle and a 1x1 conv in, a 1x1 conv and a pixel shuffle out."""

    backbone_type = "test-pixel-shuffle"
    options = {"downsampling_factor": Option(int, choices=(1, 2, 4))(2, "f, the pixel (un)shuffle factor.")}

    def build_encoder(self, in_channels, latent_dim):
        return PixelShuffleEncoder(in_channels, latent_dim, self.downsampling_factor)

    def build_decoder(self, latent_dim, out_channels):
        return PixelShuffleDecoder(latent_dim, out_channels, self.downsampling_factor)


class PixelShuffleEncoder(nn.Module):
    def __init__(self, in_channels: int, latent_dim: int, factor: int):
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(factor)
        self.conv_out = nn.Conv2d(in_channels * factor**2, latent_dim, 1)

    def forward(self, pixel_values):
        return self.conv_out(self.unshuffle(pixel_values))


class PixelShuffleDecoder(Decoder):
    def __init__(self, latent_dim: int, out_channels: int, factor: int):
        super().__init__()
        self.conv_out = nn.Conv2d(latent_dim, out_channels * factor**2, 1)
        self.shuffle = nn.PixelShuffle(factor)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.conv_out.weight

    def forward(self, latents):
        return self.shuffle(self.conv_out(latents))
