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

from torch import nn

from ..options import Option, append_options_doc, check_options


@dataclasses.dataclass
class BackboneConfig:
    """Settings of one backbone, checked when built: a dataclass whose fields are the backbone's
    options, each declared once in `options` (type, range and doc).

    A backbone subclasses it with its `backbone_type` (its name in `backbone_config`), its fields
    and `options`, a `downsampling_factor` (a field or a property) and the two builders below, and is
    registered in `vqtok/backbones/__init__.py`. Rules that tie several fields together go in an
    override of `check`.
    """

    backbone_type: ClassVar[str] = ""
    options: ClassVar[dict[str, Option]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        append_options_doc(cls, cls.options)

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Raise `TypeError`/`ValueError` naming the first field that its option rejects."""
        check_options(self.options, self.field_values(), "backbone_config field")

    def field_values(self) -> dict[str, Any]:
        """The fields by name (no `backbone_type`)."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    def to_dict(self) -> dict[str, Any]:
        """What `config.json` stores: `backbone_type` and every field."""
        return {"backbone_type": self.backbone_type, **dataclasses.asdict(self)}

    # --- to implement -------------------------------------------------------------------------
    downsampling_factor: ClassVar[int]
    """f: an H x W image gives an (H/f) x (W/f) latent grid."""

    def build_encoder(self, in_channels: int, latent_dim: int) -> nn.Module:
        """Images `[B, in_channels, H, W]` -> latents `[B, latent_dim, H/f, W/f]`."""
        raise NotImplementedError

    def build_decoder(self, latent_dim: int, out_channels: int) -> nn.Module:
        """Latents `[B, latent_dim, h, w]` -> `[B, out_channels, h*f, w*f]` (unbounded), with its last
        layer named `conv_out`."""
        raise NotImplementedError

    def legacy_state_names(self, prefix: str) -> dict[str, str]:
        """Names of the encoder's (`prefix="encoder."`) or decoder's (`"decoder."`) tensors in
        checkpoints of vqtok 0.1, mapped to today's (both as name prefixes); none by default."""
        return {}
