"""Backbones: the encoder and decoder around the quantizer, chosen by a tokenizer config's
`backbone_config` (`backbone_type` picks one; `conv`, the small residual net, is the default; `vqgan`, the taming / LlamaGen / Janus / Chameleon / LDM
encoder and decoder, is the field's standard; `vit`, a vision transformer, is ViT-VQGAN's and BSQ-ViT's; `titok` makes 1-D token
sequences).

Every backbone is registered below, in one visible place.
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import BackboneConfig, Decoder
from .conv import ConvBackboneConfig
from .titok import TiTokBackboneConfig
from .vit import ViTBackboneConfig
from .vqgan import VQGANBackboneConfig

BACKBONES: dict[str, type[BackboneConfig]] = {}
"""backbone_type -> its config class, for every backbone a tokenizer config can name."""

DEFAULT_BACKBONE = "conv"


def register_backbone(config_class: type[BackboneConfig]) -> type[BackboneConfig]:
    """Make the backbone of `config_class` available as `backbone_config={"backbone_type": ...}`."""
    if not config_class.backbone_type:
        raise ValueError(f"{config_class.__name__} must set a `backbone_type`")
    BACKBONES[config_class.backbone_type] = config_class
    return config_class


def backbone_class(backbone_type: str) -> type[BackboneConfig]:
    """The config class registered as `backbone_type` (ValueError naming the registered ones otherwise)."""
    if backbone_type not in BACKBONES:
        raise ValueError(
            f"config field `backbone_config` names an unknown backbone_type {backbone_type!r}; "
            f"registered: {sorted(BACKBONES)}"
        )
    return BACKBONES[backbone_type]


def build_backbone_config(value: BackboneConfig | Mapping | None) -> BackboneConfig:
    """A backbone config from what a tokenizer config holds: one already built, a mapping with an
    optional `backbone_type` (default `conv`) and the backbone's fields, or None (the defaults).
    Unknown fields raise `ValueError` listing the backbone's fields."""
    if isinstance(value, BackboneConfig):
        return value
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise TypeError(
            f"config field `backbone_config` must be a mapping of backbone fields (with `backbone_type`), "
            f"got {type(value).__name__} ({value!r})"
        )
    fields = dict(value)
    config_class = backbone_class(fields.pop("backbone_type", DEFAULT_BACKBONE))
    unknown = sorted(set(fields) - set(config_class.options))
    if unknown:
        raise ValueError(
            f"unknown backbone_config field(s) {unknown} for backbone_type {config_class.backbone_type!r}; "
            f"known: {sorted(config_class.options)}"
        )
    return config_class(**fields)


# Every backbone is registered here.
register_backbone(ConvBackboneConfig)  # the small residual conv net: backbone_type="conv"
register_backbone(VQGANBackboneConfig)  # taming's VQGAN encoder and decoder: backbone_type="vqgan"
register_backbone(ViTBackboneConfig)  # a vision transformer's encoder and decoder: backbone_type="vit"
register_backbone(TiTokBackboneConfig)  # 1-D token sequences (TiTok): backbone_type="titok"

__all__ = [
    "BACKBONES",
    "BackboneConfig",
    "ConvBackboneConfig",
    "Decoder",
    "DEFAULT_BACKBONE",
    "TiTokBackboneConfig",
    "VQGANBackboneConfig",
    "ViTBackboneConfig",
    "backbone_class",
    "build_backbone_config",
    "register_backbone",
]
