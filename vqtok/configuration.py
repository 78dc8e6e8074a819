"""The shared tokenizer configuration: backbone, token grid, codebook size and regularisers.

Every tokenizer type subclasses `VQTokenizerConfig` in its own module under `vqtok/models/`, adding
its quantizer's options as typed fields. Every config is a `transformers.PreTrainedConfig`, so it
saves to and loads from `config.json` and is registered with `AutoConfig`. Values are checked when
the config is built, each against the one declaration of its option (`vqtok.options`): a wrong
type raises `TypeError`, an out-of-range or non-finite value or an unknown key raises `ValueError`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from transformers import PreTrainedConfig

from .options import CODEBOOK_SIZE, NON_NEGATIVE, POSITIVE_INT, Option, check_options
from .quantizers import Quantizer
from .hub.references import QuantizerReference
from .regularizers import check_regularizer_settings

# Keys that transformers itself passes through `__post_init__` when it builds or loads a config.
_TRANSFORMERS_KEYS = frozenset(
    {
        "model_type",
        "name_or_path",
        "_name_or_path",
        "torch_dtype",
        "_commit_hash",
        "output_attentions",
        "attn_implementation",
        "experts_implementation",
        "per_layer_config",
        "num_labels",
        "_attn_implementation_autoset",
    }
)

SUPPORTED_DOWNSAMPLING_FACTORS = (2, 4, 8, 16)

# The options every tokenizer type shares (the fields of `VQTokenizerConfig`), checked in this order:
# `downsampling_factor` before `channel_multipliers`, whose default is derived from it.
SHARED_OPTIONS = {
    "in_channels": Option(int, choices=(1, 3)),
    "image_size": POSITIVE_INT,
    "base_channels": POSITIVE_INT,
    "downsampling_factor": Option(int, choices=SUPPORTED_DOWNSAMPLING_FACTORS),
    "channel_multipliers": Option(list),
    "num_res_blocks": POSITIVE_INT,
    "norm_groups": POSITIVE_INT,
    "latent_dim": POSITIVE_INT,
    "codebook_size": CODEBOOK_SIZE,
    "reconstruction_loss_weight": NON_NEGATIVE,
    "regularizers": Option(dict, optional=True),
    "training_metadata": Option(dict, optional=True),
}


class VQTokenizerConfig(PreTrainedConfig):
    r"""Shared configuration of every vqtok image tokenizer: the convolutional backbone, the latent
    grid, the codebook size and the regularisers. Each tokenizer type subclasses it in its module
    under `vqtok/models/` (`VQConfig`, ...), with its own `model_type`, its `quantizer_class`, its
    paper `reference` and one field per quantizer option.

    Args:
        in_channels (`int`, defaults to 3):
            Image channels: 1 (grey) or 3 (RGB).
        image_size (`int`, defaults to 32):
            Side of the square training images. Used to recover the token grid when `decode`
            receives flattened ids `[B, h*w]`; `encode` accepts any size divisible by
            `downsampling_factor`.
        base_channels (`int`, defaults to 64):
            Width of the first convolution; level `i` has `base_channels * channel_multipliers[i]`.
        channel_multipliers (`list[int]`, *optional*):
            One width multiplier per downsampling level; its length must be
            `log2(downsampling_factor)`. Defaults to `[1, 2, 4, 4][:log2(downsampling_factor)]`.
        num_res_blocks (`int`, defaults to 1):
            Residual blocks per level, in the encoder and the decoder.
        downsampling_factor (`int`, defaults to 4):
            Spatial reduction f in {2, 4, 8, 16}: an H x W image gives an (H/f) x (W/f) token grid.
            Images whose sides are not multiples of f are rejected (resize or crop them first).
        norm_groups (`int`, defaults to 8):
            GroupNorm groups (reduced to a divisor of each layer's width where needed).
        latent_dim (`int`, defaults to 64):
            Dimension D of the latent vectors and codebook entries.
        codebook_size (`int`, defaults to 512):
            Number of codes K; token ids lie in [0, K).
        reconstruction_loss_weight (`float`, defaults to 1.0):
            Weight of the reconstruction objective (pixel MSE unless the type replaces it).
        regularizers (`dict`, *optional*):
            Regularisers switched on for training, name -> options (see `vqtok.regularizers`); each
            adds its named loss terms to the training loss, whatever the tokenizer type. HC-VQ's
            topology term: `{"topology": {}}` (its defaults) or with options, e.g.
            `{"topology": {"weight": 0.5, "compute_every": 8}}` (see `TopologyRegularizer`).
        training_metadata (`dict`, *optional*):
            Written by `training/train_tokenizer.py` at the final `save_pretrained`; None for an
            untrained config. What a user of the tokenizer needs to feed it and judge it:
            `image_size`, `in_channels`, `pixel_range` ([-1, 1]) and `pixel_normalization`
            (`x / 127.5 - 1` on uint8 pixels), `resize`, `dataset` (source, splits, image count,
            augmentation), the run (`steps`, `seed`, batch sizes, processes, learning rate,
            precision), `final_metrics` on the held-out split (mse, psnr, perplexity, codes_used,
            bits_per_image) and `vqtok_version`. Informational only: nothing reads it to build the model.
    """

    model_type = "vqtok"
    quantizer_class: ClassVar[type[Quantizer] | None] = None
    """The quantizer a type builds; it receives every type field that it declares in its `options`."""
    model_options: ClassVar[dict[str, Option]] = {}
    """Declarations of the type fields read by the model class rather than by the quantizer."""
    reference: ClassVar[QuantizerReference | None] = None
    """The method's display name, Hub tag, papers and summary, for model cards."""
    paper_settings: ClassVar[dict[str, Any]] = {}
    """The field values of the method's reference implementation, where they differ from the class
    defaults (which are tuned for short runs on small images); see `paper_preset`."""

    in_channels: int = 3
    image_size: int = 32
    base_channels: int = 64
    channel_multipliers: list[int] | tuple[int, ...] | None = None
    num_res_blocks: int = 1
    downsampling_factor: int = 4
    norm_groups: int = 8
    latent_dim: int = 64
    codebook_size: int = 512
    reconstruction_loss_weight: float | int = 1.0
    regularizers: dict | None = None
    training_metadata: dict | None = None

    def __post_init__(self, **kwargs):
        unknown = sorted(k for k in kwargs if k not in _TRANSFORMERS_KEYS)
        if unknown:
            known = sorted(set(self.__dataclass_fields__) - set(PreTrainedConfig.__dataclass_fields__))
            raise ValueError(
                f"unknown config key(s) {unknown} for {type(self).__name__}; known keys: {known}"
            )
        if self.channel_multipliers is None and isinstance(self.downsampling_factor, int):
            levels = max(self.downsampling_factor.bit_length() - 1, 0)
            self.channel_multipliers = [min(2**i, 4) for i in range(levels)]
        if isinstance(self.channel_multipliers, tuple):
            self.channel_multipliers = list(self.channel_multipliers)
        super().__post_init__(**kwargs)
        self.check()

    @classmethod
    def paper_preset(cls, **overrides: Any) -> "VQTokenizerConfig":
        """The config with the settings of the method's paper and reference code (`paper_settings`),
        then `overrides`, instead of the class defaults."""
        return cls(**{**cls.paper_settings, **overrides})

    @classmethod
    def type_fields(cls) -> list[str]:
        """The fields a tokenizer type adds to the shared ones (its quantizer's and model's options)."""
        shared = {f.name for f in dataclasses.fields(VQTokenizerConfig)}
        return [f.name for f in dataclasses.fields(cls) if f.name not in shared]

    def quantizer_kwargs(self) -> dict[str, Any]:
        """The quantizer's keyword arguments: every type field that `quantizer_class` declares."""
        declared = self._quantizer_options()
        return {name: getattr(self, name) for name in self.type_fields() if name in declared}

    def _quantizer_options(self) -> dict[str, Option]:
        return self.quantizer_class.options if self.quantizer_class is not None else {}

    def check(self) -> None:
        """Raise `TypeError`/`ValueError` naming the first invalid field."""
        check_options(SHARED_OPTIONS, {name: getattr(self, name) for name in SHARED_OPTIONS}, "config field")
        for multiplier in self.channel_multipliers:
            POSITIVE_INT.check("channel_multipliers[i]", multiplier, "config field")
        if len(self.channel_multipliers) != self.num_levels:
            raise ValueError(
                f"config field `channel_multipliers` needs one entry per downsampling level: "
                f"log2({self.downsampling_factor}) = {self.num_levels}, got {len(self.channel_multipliers)} "
                f"({self.channel_multipliers})"
            )
        if self.image_size % self.downsampling_factor:
            raise ValueError(
                f"config field `image_size` ({self.image_size}) must be a multiple of "
                f"`downsampling_factor` ({self.downsampling_factor})"
            )
        check_regularizer_settings(self.regularizers)
        self._check_type_fields()

    def _check_type_fields(self) -> None:
        declared = set(self._quantizer_options()) | set(self.model_options)
        undeclared = [name for name in self.type_fields() if name not in declared]
        if undeclared:
            raise TypeError(
                f"{type(self).__name__} fields {undeclared} are declared neither in the options of "
                f"{getattr(self.quantizer_class, '__name__', 'its quantizer')} nor in `model_options`"
            )
        if self.quantizer_class is not None:
            self.quantizer_class.check_options(self.quantizer_kwargs(), "config field")
        model_values = {name: getattr(self, name) for name in self.type_fields() if name in self.model_options}
        check_options(self.model_options, model_values, "config field")

    @property
    def num_levels(self) -> int:
        """Number of stride-2 stages in the encoder (and upsampling stages in the decoder)."""
        return int(math.log2(self.downsampling_factor))

    @property
    def token_grid(self) -> tuple[int, int]:
        """(h, w) of the token grid for a square `image_size` image."""
        side = self.image_size // self.downsampling_factor
        return side, side
