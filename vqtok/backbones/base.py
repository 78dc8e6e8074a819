"""The interface of a backbone: its settings (a `BackboneConfig`, nested in every tokenizer config as
`backbone_config`) and the encoder and decoder built from them.

A backbone maps images `[B, C, H, W]` to latents `[B, D, H/f, W/f]` (the encoder) and latents back
to images (the decoder); f is the backbone's `downsampling_factor`, which the tokenizer config's
token grid and the pixel checks read. The quantizer sits between the two and never sees the
backbone.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..options import FLAG, Settings

GRADIENT_CHECKPOINTING = {
    "gradient_checkpointing": FLAG(False, (
        "Activation checkpointing: in training, each block's activations are recomputed in the backward pass "
        "instead of kept, for less memory at the cost of a second forward of the blocks; the gradients are the "
        "same. `model.gradient_checkpointing_enable()` switches it on too."
    ), training_only=True),
}
"""The option of a backbone whose encoder and decoder can recompute their blocks (`run_block`)."""


@dataclasses.dataclass
class BackboneConfig(Settings):
    """Settings of one backbone, checked when built: each option declared once in `options`, and a
    field of the dataclass that `vqtok.options.options_dataclass` makes of the subclass.

    A backbone subclasses it with its `backbone_type` (its name in `backbone_config`) and `options`,
    a `downsampling_factor` (an option or a property) and the two builders below, and is registered
    in `vqtok/backbones/__init__.py`.
    """

    backbone_type: ClassVar[str] = ""
    option_owner: ClassVar[str] = "backbone_config field"
    needs_image_size: ClassVar[bool] = False
    """Whether the builders take the tokenizer's `image_size` (a decoder that makes images of one size)."""

    def to_dict(self) -> dict[str, Any]:
        """What `config.json` stores: `backbone_type` and every field."""
        return {"backbone_type": self.backbone_type, **dataclasses.asdict(self)}

    # --- to implement -------------------------------------------------------------------------
    downsampling_factor: ClassVar[int]
    """f: an H x W image gives an (H/f) x (W/f) latent grid (for a 1-D backbone, its patch size)."""

    def token_grid(self, image_size: int) -> tuple[int, ...]:
        """The token positions of a square `image_size` image: the grid `(h, w)`, or `(L,)` for a backbone
        whose latents are a 1-D sequence `[B, D, L]`."""
        side = image_size // self.downsampling_factor
        return side, side

    def build_encoder(self, in_channels: int, latent_dim: int) -> nn.Module:
        """Images `[B, in_channels, H, W]` -> latents `[B, latent_dim, *token_grid]`. With
        `needs_image_size`, it is also given `image_size=`."""
        raise NotImplementedError

    def build_decoder(self, latent_dim: int, out_channels: int) -> Decoder:
        """Latents `[B, latent_dim, *token_grid]` -> `[B, out_channels, H, W]` (unbounded). With
        `needs_image_size`, it is also given `image_size=`."""
        raise NotImplementedError


class Decoder(nn.Module):
    """What every backbone's decoder is: an `nn.Module` that names its last layer."""

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight of the layer that makes the output (the adversarial objective balances its
        gradients there: VQGAN's adaptive weight)."""
        raise NotImplementedError


def run_block(owner: nn.Module, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """`block(hidden)`, its activations recomputed in the backward pass when `owner` (an encoder or a
    decoder with a `gradient_checkpointing` attribute, which `gradient_checkpointing_enable` sets)
    trains with gradient checkpointing on."""
    if owner.gradient_checkpointing and owner.training and torch.is_grad_enabled():
        return checkpoint(block, hidden, use_reentrant=False)
    return block(hidden)
