"""The shared tokenizer configuration: image shape, latent dimension, codebook size, the backbone
(a nested sub-config) and the regularisers.

Every tokenizer type subclasses `VQTokenizerConfig` in its own module under `vqtok/models/`, adding
its quantizer's options as typed fields. Every config is a `transformers.PreTrainedConfig`, so it
saves to and loads from `config.json` and is registered with `AutoConfig`. Values are checked when
the config is built, each against the one declaration of its option (`vqtok.options`): a wrong
type raises `TypeError`, an out-of-range or non-finite value or an unknown key raises `ValueError`.
The `Args` section of every config's docstring is written from those declarations.
"""

from __future__ import annotations

import dataclasses
import textwrap
from typing import Any, ClassVar

from transformers import PreTrainedConfig

from .backbones import BackboneConfig, build_backbone_config
from .hub.legacy import FLAT_BACKBONE_KEYS, upgrade_config_dict
from .hub.references import Paper, QuantizerReference
from .options import CODEBOOK_SIZE, FLAG, NON_NEGATIVE, POSITIVE_INT, Option, check_options, document_options
from .quantizers import Quantizer
from .regularizers import check_regularizer_settings
from .validation import token_shape

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

# The options every tokenizer type shares (the fields of `VQTokenizerConfig`).
SHARED_OPTIONS = {
    "in_channels": Option(int, choices=(1, 3), doc="Image channels: 1 (grey) or 3 (RGB)."),
    "image_size": POSITIVE_INT.documented(
        "Side of the square training images. Used to recover the token grid when `decode` receives "
        "flattened ids; `encode` accepts any size divisible by the backbone's downsampling factor."
    ),
    "latent_dim": POSITIVE_INT.documented("Dimension D of the latent vectors the quantizer receives."),
    "codebook_size": CODEBOOK_SIZE.documented(
        "Number of codes K; token ids lie in [0, K). A quantizer whose K follows from its other options "
        "(`Quantizer.derived_codebook_size`) fills it in, and a given value must agree."
    ),
    "backbone_config": Option(dict, optional=True, doc=(
        "The encoder and decoder: a mapping with `backbone_type` (default `conv`, the small residual net) "
        "and that backbone's fields (see `vqtok.backbones`), kept as its `BackboneConfig`. Configs written "
        "by vqtok 0.1 held the conv fields at the top level; they load into `backbone_config`."
    )),
    "has_decoder": FLAG.documented(
        "Whether the tokenizer has a decoder. False only for a tokenizer imported from an encoder-only "
        "checkpoint (transformers' `ChameleonVQVAE`): it encodes, and `decode` and training raise."
    ),
    "reconstruction_loss_weight": NON_NEGATIVE.documented(
        "Weight of the reconstruction objective (pixel MSE unless the type replaces it)."
    ),
    "regularizers": Option(dict, optional=True, doc=(
        "Regularisers switched on for training, name -> options (see `vqtok.regularizers`); each adds its "
        "named loss terms to the training loss, whatever the tokenizer type. HC-VQ's topology term: "
        '`{"topology": {}}` (its defaults) or with options, e.g. `{"topology": {"weight": 0.5}}`.'
    )),
    "training_metadata": Option(dict, optional=True, doc=(
        "Written by `training/train_tokenizer.py` at the final `save_pretrained`; None for an untrained "
        "config. What a user needs to feed the tokenizer and judge it: `image_size`, `in_channels`, "
        "`pixel_range`, `pixel_normalization`, `resize`, `dataset`, the run's settings, `final_metrics` on "
        "the held-out split and `vqtok_version`. Informational only: nothing reads it to build the model."
    )),
}


class VQTokenizerConfig(PreTrainedConfig):
    r"""Shared configuration of every vqtok image tokenizer: the image shape, the latent dimension,
    the codebook size, the backbone (`backbone_config`) and the regularisers. Each tokenizer type
    subclasses it in its module under `vqtok/models/` (`VQConfig`, ...), with its own `model_type`,
    its `quantizer_class`, its paper `reference` and one field per quantizer option.
    """

    model_type = "vqtok"
    quantizer_class: ClassVar[type[Quantizer] | None] = None
    """The quantizer a type builds; it receives every type field that it declares in its `options`."""
    model_options: ClassVar[dict[str, Option]] = {}
    """Declarations of the type fields read by the model class rather than by the quantizer."""
    option_notes: ClassVar[dict[str, str]] = {}
    """What a type says about an option beyond its declaration (why its default differs from the
    paper's, ...): appended to the option's entry in the type's docstring."""
    reference: ClassVar[QuantizerReference | None] = None
    """The method's display name, Hub tag, papers and summary, for model cards."""
    option_papers: ClassVar[dict[str, Paper]] = {}
    """Papers of options the type shares with others (the rotation trick, ...), cited on the model
    card where the option is switched on."""
    paper_settings: ClassVar[dict[str, Any]] = {}
    """The field values of the method's reference implementation, where they differ from the class
    defaults (which are tuned for short runs on small images); see `paper_preset`."""

    in_channels: int = 3
    image_size: int = 32
    latent_dim: int = 64
    codebook_size: int | None = 512
    backbone_config: dict | BackboneConfig | None = None
    has_decoder: bool = True
    reconstruction_loss_weight: float | int = 1.0
    regularizers: dict | None = None
    training_metadata: dict | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__doc__ = (cls.__doc__ or "").rstrip() + "\n\n" + textwrap.indent(cls._options_doc(), "    ")

    def __post_init__(self, **kwargs):
        unknown = sorted(k for k in kwargs if k not in _TRANSFORMERS_KEYS)
        moved = [k for k in unknown if k in FLAT_BACKBONE_KEYS]
        if moved:
            raise ValueError(
                f"config key(s) {moved} belong to the backbone since vqtok 0.2: pass them in `backbone_config`, "
                f"e.g. backbone_config={{{', '.join(f'{k!r}: {kwargs[k]!r}' for k in moved)}}}"
            )
        if unknown:
            raise ValueError(
                f"unknown config key(s) {unknown} for {type(self).__name__}; known keys: {sorted(self.declared_options())}"
            )
        self.backbone_config = build_backbone_config(self.backbone_config)
        self.fill_derived_fields()
        super().__post_init__(**kwargs)
        self.check()

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs) -> VQTokenizerConfig:
        """The config of a `config.json` (or any dict of fields), written by this vqtok or by vqtok 0.1
        (whose backbone fields stood at the top level)."""
        return super().from_dict(upgrade_config_dict(config_dict), **kwargs)

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["backbone_config"] = self.backbone_config.to_dict()
        return output

    @classmethod
    def paper_preset(cls, **overrides: Any) -> VQTokenizerConfig:
        """The config with the settings of the method's paper and reference code (`paper_settings`),
        then `overrides`, instead of the class defaults."""
        return cls(**{**cls.paper_settings, **overrides})

    @classmethod
    def type_fields(cls) -> list[str]:
        """The fields a tokenizer type adds to the shared ones (its quantizer's and model's options)."""
        shared = {f.name for f in dataclasses.fields(VQTokenizerConfig)}
        return [f.name for f in dataclasses.fields(cls) if f.name not in shared]

    @classmethod
    def declared_options(cls) -> dict[str, Option]:
        """The declaration of every field: the shared ones, the quantizer's and the model's."""
        return {**SHARED_OPTIONS, **cls._quantizer_options(), **cls.model_options}

    @classmethod
    def _quantizer_options(cls) -> dict[str, Option]:
        return cls.quantizer_class.options if cls.quantizer_class is not None else {}

    @classmethod
    def _options_doc(cls) -> str:
        """The `Args` section: the shared fields for the base class; otherwise the fields a type adds
        and the shared fields whose default it changes, with the quantizer's and the type's notes."""
        defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
        names = list(SHARED_OPTIONS)
        if cls is not VQTokenizerConfig:
            base = {f.name: f.default for f in dataclasses.fields(VQTokenizerConfig)}
            names = cls.type_fields() + [n for n in names if defaults.get(n, base[n]) != base[n]]
        quantizer_notes = getattr(cls.quantizer_class, "option_notes", {})
        notes = {name: " ".join(filter(None, (quantizer_notes.get(name), cls.option_notes.get(name))))
                 for name in {*quantizer_notes, *cls.option_notes}}
        declared = cls.declared_options()
        return document_options({n: declared[n] for n in names if n in declared}, defaults, notes)

    def fill_derived_fields(self) -> None:
        """Fill in the fields left None that follow from the others (`codebook_size` from the
        quantizer's options, where it derives K); a type with more such fields extends this."""
        if self.codebook_size is None:
            self.codebook_size = self._derived_codebook_size()

    def _derived_codebook_size(self) -> int | None:
        if self.quantizer_class is None or not POSITIVE_INT.accepts(self.latent_dim):
            return None  # a bad latent_dim is reported by `check`
        return self.quantizer_class.derived_codebook_size(self.latent_dim, self.quantizer_kwargs())

    def quantizer_kwargs(self) -> dict[str, Any]:
        """The quantizer's keyword arguments: every type field that `quantizer_class` declares."""
        declared = self._quantizer_options()
        return {name: getattr(self, name) for name in self.type_fields() if name in declared}

    def check(self) -> None:
        """Raise `TypeError`/`ValueError` naming the first invalid field (the type's own fields first:
        a derived `codebook_size` is only as good as the options it follows from)."""
        self._check_type_fields()
        shared = {name: getattr(self, name) for name in SHARED_OPTIONS if name != "backbone_config"}
        check_options(SHARED_OPTIONS, shared, "config field")
        if self.image_size % self.downsampling_factor:
            raise ValueError(
                f"config field `image_size` ({self.image_size}) must be a multiple of the backbone's "
                f"`downsampling_factor` ({self.downsampling_factor})"
            )
        check_regularizer_settings(self.regularizers)
        if self.quantizer_class is not None:
            self.quantizer_class.check_codebook_size(self.codebook_size, self.latent_dim, self.quantizer_kwargs(), "config field")

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
    def downsampling_factor(self) -> int:
        """f, as the backbone reports it: an H x W image gives an (H/f) x (W/f) token grid."""
        return self.backbone_config.downsampling_factor

    @property
    def token_grid(self) -> tuple[int, int]:
        """(h, w) of the token grid for a square `image_size` image."""
        side = self.image_size // self.downsampling_factor
        return side, side

    @property
    def codes_per_position(self) -> int:
        """R, the codes the quantizer picks per grid position (1 for most; a residual quantizer's depth)."""
        return self.quantizer_class.derived_codes_per_position(self.quantizer_kwargs()) if self.quantizer_class else 1

    @property
    def token_shape(self) -> tuple[int, ...]:
        """The shape of one image's ids: `(h, w)`, or `(h, w, R)` for R > 1 codes per position."""
        return token_shape(self.token_grid, self.codes_per_position)


VQTokenizerConfig.__doc__ = VQTokenizerConfig.__doc__.rstrip() + "\n\n" + textwrap.indent(VQTokenizerConfig._options_doc(), "    ")
