"""The shared tokenizer configuration: image shape, latent dimension, codebook size, the backbone
(a nested sub-config) and the regularisers.

Every tokenizer type subclasses `VQTokenizerConfig` in its own module under `vqtok/models/`, naming
its quantizer: `class VQConfig(VQTokenizerConfig, quantizer=VectorQuantizer)`. The config then has
one field per option the quantizer declares, with the quantizer's default, plus the fields of the
type's own `options` (what the model class reads). Every config is a `transformers.PreTrainedConfig`,
so it saves to and loads from `config.json` and is registered with `AutoConfig`. Values are checked
when the config is built, each against the one declaration of its option (`vqtok.options`): a wrong
type raises `TypeError`, an out-of-range or non-finite value or an unknown key raises `ValueError`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Mapping
from typing import Any, ClassVar

from transformers import PreTrainedConfig

from .backbones import BACKBONES, DEFAULT_BACKBONE, BackboneConfig, build_backbone_config
from .hub import earlier_versions, remote_code
from .hub.references import QuantizerReference
from .options import FLAG, NON_NEGATIVE, POSITIVE_INT, Option, add_option_fields, check_options, document_options
from .quantizers import CodeSpace, Quantizer
from .quantizers.base import SIZE_ARGUMENTS
from .regularizers import check_regularizer_settings
from .validation import token_shape


_TRANSFORMERS_FIELDS = frozenset(field.name for field in dataclasses.fields(PreTrainedConfig))


@functools.cache
def _transformers_attributes() -> frozenset[str]:
    return frozenset(PreTrainedConfig().__dict__)


def keys_transformers_does_not_read(kwargs: Mapping[str, Any]) -> list[str]:
    """The keys of `kwargs` (keywords a config received beyond its fields) that transformers' own
    config does not read. `PreTrainedConfig` keeps every keyword it does not know as an attribute of
    that name, so a bare one given them shows which: no list of transformers' keys is kept here."""
    if not kwargs:
        return []
    probe = PreTrainedConfig(**kwargs)
    return sorted(key for key in kwargs if key in probe.__dict__ and key not in _transformers_attributes())


class OptionsConfig(PreTrainedConfig):
    """A `transformers.PreTrainedConfig` whose fields are declared options: each class's `options`
    become its fields, with their declared defaults. transformers makes every config class a
    dataclass of its annotated fields when the class is created (`PreTrainedConfig.__init_subclass__`),
    so the fields are added just before that."""

    options: ClassVar[dict[str, Option]] = {}
    option_owner: ClassVar[str] = "config"
    """How errors name the config ("prior config", ...)."""

    def __init_subclass__(cls, **kwargs):
        add_option_fields(cls, cls.__dict__.get("options", {}))
        super().__init_subclass__(**kwargs)

    def __post_init__(self, **kwargs):
        self.reject_unknown_keys(kwargs)
        super().__post_init__(**kwargs)

    def reject_unknown_keys(self, kwargs: Mapping[str, Any]) -> None:
        """ValueError naming the keywords beyond the fields (`kwargs`) that neither this config nor
        transformers reads (`model_type` is the class's, `auto_map` the one vqtok writes)."""
        unknown = keys_transformers_does_not_read({k: v for k, v in kwargs.items() if k not in ("model_type", "auto_map")})
        if unknown:
            known = {field.name for field in dataclasses.fields(self)} - _TRANSFORMERS_FIELDS
            raise ValueError(f"unknown {self.option_owner} key(s) {unknown} for {type(self).__name__}; "
                             f"known keys: {sorted(known)}")

    def to_dict(self) -> dict[str, Any]:
        """Also the `auto_map` that loads the config and its model without vqtok imported
        (`vqtok.hub.remote_code`)."""
        output = super().to_dict()
        output.pop("auto_map", None)
        return {**output, **({"auto_map": mapping} if (mapping := remote_code.auto_map(self)) else {})}

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs):
        """transformers' `save_pretrained`, with the module that `auto_map` names beside `config.json`."""
        result = super().save_pretrained(save_directory, **kwargs)
        remote_code.write_loader(self, save_directory)
        return result

    @classmethod
    def register_for_auto_class(cls, auto_class: str = "AutoConfig") -> None:
        """Nothing: vqtok writes its own loader (`vqtok.hub.remote_code`). transformers calls this after
        loading a config through remote code, and would then copy the class's source file, vqtok's own
        module, into every folder the config is saved to."""

    @classmethod
    def declared_options(cls) -> dict[str, Option]:
        """The declaration of every option field, from the base class down."""
        declared = {}
        for klass in reversed(cls.__mro__):
            declared.update(klass.__dict__.get("options", {}))
        return declared


@document_options
class VQTokenizerConfig(OptionsConfig):
    r"""Shared configuration of every vqtok image tokenizer: the image shape, the latent dimension,
    the codebook size, the backbone (`backbone_config`) and the regularisers. Each tokenizer type
    subclasses it in its module under `vqtok/models/` with its quantizer, its own `model_type`, its
    paper `reference` and the options its model class reads.
    """

    model_type = "vqtok"
    quantizer_class: ClassVar[type[Quantizer] | None] = None
    """The quantizer a type builds: its options are fields of the type's config, which hands them to it."""
    reference: ClassVar[QuantizerReference | None] = None
    """The method's display name, Hub tag, papers and summary, for model cards."""
    paper_settings: ClassVar[dict[str, Any]] = {}
    """The field values of the method's reference implementation, where they differ from the class
    defaults (which are tuned for short runs on small images); see `paper_preset`."""
    options = {
        "in_channels": Option(int, choices=(1, 3))(3, "Image channels: 1 (grey) or 3 (RGB)."),
        "image_size": POSITIVE_INT(32, (
            "Side of the square training images. Used to recover the token grid when `decode` receives "
            "flattened ids; `encode` accepts any size divisible by the backbone's downsampling factor."
        ), training_only=True),
        "latent_dim": SIZE_ARGUMENTS["dim"],
        "codebook_size": SIZE_ARGUMENTS["codebook_size"],
        "backbone_config": Option(dict, optional=True)(None, (
            "The encoder and decoder: a mapping with `backbone_type` (default `conv`, the small residual net) "
            "and that backbone's fields (see `vqtok.backbones`), kept as its `BackboneConfig`."
        )),
        "has_decoder": FLAG(True, (
            "Whether the tokenizer has a decoder. False only for a tokenizer imported from an encoder-only "
            "checkpoint (transformers' `ChameleonVQVAE`): it encodes, and `decode` and training raise."
        )),
        "reconstruction_loss_weight": NON_NEGATIVE(1.0, (
            "Weight of the reconstruction objective (pixel MSE unless the type replaces it)."
        ), training_only=True),
        "regularizers": Option(dict, optional=True)(None, (
            "Regularisers switched on for training, name -> options (see `vqtok.regularizers`); each adds its "
            "named loss terms to the training loss, whatever the tokenizer type. HC-VQ's topology term: "
            '`{"topology": {}}` (its defaults) or with options, e.g. `{"topology": {"weight": 0.5}}`.'
        ), training_only=True),
        "training_metadata": Option(dict, optional=True)(None, (
            "Written by `vqtok train` at the final `save_pretrained`; None for an untrained "
            "config. What a user needs to feed the tokenizer and judge it: `image_size`, `in_channels`, "
            "`pixel_range`, `pixel_normalization`, `resize`, `dataset`, the run's settings, `final_metrics` on "
            "the held-out split and `vqtok_version`. Informational only: nothing reads it to build the model."
        )),
    }

    def __init_subclass__(cls, quantizer: type[Quantizer] | None = None, **kwargs):
        """A tokenizer type names its quantizer (`quantizer=`): every option the quantizer declares
        becomes a field of the type's config, then the type's own `options`."""
        if quantizer is not None:
            restated = sorted(name for name in quantizer.options if name in cls.__dict__)
            if restated:
                raise TypeError(
                    f"{cls.__name__} restates option(s) {restated} of {quantizer.__name__}: a type's config takes its "
                    "quantizer's declarations as they are; change a default in the quantizer's `options`"
                )
            cls.quantizer_class = quantizer
            add_option_fields(cls, quantizer.options)
        super().__init_subclass__(**kwargs)

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.backbone_config = build_backbone_config(self.backbone_config)
        self.check()

    def reject_unknown_keys(self, kwargs: Mapping[str, Any]) -> None:
        """Also says where backbone fields given at the top level belong."""
        backbone_fields = _backbone_options(self.backbone_config)
        moved = [key for key in kwargs if key in backbone_fields]
        if moved:
            raise ValueError(
                f"config key(s) {moved} belong to the backbone: pass them in `backbone_config`, "
                f"e.g. backbone_config={{{', '.join(f'{k!r}: {kwargs[k]!r}' for k in moved)}}}"
            )
        super().reject_unknown_keys(kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs) -> VQTokenizerConfig:
        """The config of a `config.json` (or any dict of fields), written by this vqtok or an earlier one
        (`vqtok.hub.earlier_versions`)."""
        return super().from_dict(earlier_versions.upgrade_config_dict(config_dict), **kwargs)

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
    def declared_options(cls) -> dict[str, Option]:
        """The declaration of every field: the shared ones, the quantizer's and the type's own."""
        declared = {}
        for klass in reversed(cls.__mro__):
            quantizer = klass.__dict__.get("quantizer_class")
            declared.update(quantizer.options if quantizer is not None else {})
            declared.update(klass.__dict__.get("options", {}))
        return declared

    @classmethod
    def type_fields(cls) -> list[str]:
        """The fields a tokenizer type adds to the shared ones (its quantizer's and its own options)."""
        return [name for name in cls.declared_options() if name not in VQTokenizerConfig.options]

    @classmethod
    def documented_options(cls) -> dict[str, Option]:
        """The fields a type's docstring documents: all for the base class (no quantizer); otherwise the
        fields the type adds and the shared fields whose default it changes."""
        declared = cls.declared_options()
        if cls.quantizer_class is None:
            return declared
        shared = VQTokenizerConfig.options
        return {name: option for name, option in declared.items()
                if name not in shared or option.default != shared[name].default}

    def with_training_changes(self, changes: Mapping[str, Any], where: str = "config field") -> VQTokenizerConfig:
        """A copy of this config with `changes` (field -> value; `backbone_config` a mapping of some of its
        fields) applied: what a run that fine-tunes a tokenizer of this config trains with. Only what
        shapes training may change (the options declared `training_only`: loss weights, schedules,
        restarts, regularisers, the image size, gradient checkpointing); a change to what the trained
        weights depend on (K, D, the channels, the backbone, a quantizer's code space, ...) raises
        `ValueError` naming `where`.<field>, the tokenizer's value and the one asked for."""
        declared = self.declared_options()
        fields = self.to_dict()
        for name, value in changes.items():
            if name not in declared:
                raise ValueError(f"unknown {where} `{name}` for {type(self).__name__}; known: {sorted(declared)}")
            if name == "backbone_config":
                fields[name] = self._backbone_with_training_changes(value, where)
            elif value != getattr(self, name):
                self._check_training_only(declared[name], name, getattr(self, name), value, where)
                fields[name] = value
        return type(self).from_dict(fields)

    def _backbone_with_training_changes(self, changes: Mapping[str, Any], where: str) -> dict[str, Any]:
        current = self.backbone_config.to_dict()
        if not isinstance(changes, Mapping):
            raise TypeError(f"{where} `backbone_config` must be a mapping of backbone fields, got {changes!r}")
        options = type(self.backbone_config).options
        for name, value in changes.items():
            if name != "backbone_type" and name not in options:
                raise ValueError(f"unknown {where} `backbone_config.{name}` for the {current['backbone_type']!r} "
                                 f"backbone; known: {sorted(options)}")
            if value != current[name]:
                option = options.get(name) or Option(str)("", "the backbone")
                self._check_training_only(option, f"backbone_config.{name}", current[name], value, where)
        return {**current, **changes}

    def _check_training_only(self, option: Option, name: str, current: Any, asked: Any, where: str) -> None:
        if not option.training_only:
            may_change = [field for field, declared in self.declared_options().items() if declared.training_only]
            may_change += [f"backbone_config.{field}" for field, declared in type(self.backbone_config).options.items()
                           if declared.training_only]
            raise ValueError(
                f"{where} `{name}` cannot change when fine-tuning: the tokenizer has {name}={current!r}, which its "
                f"weights depend on, and the run asks for {asked!r}. A fine-tuning run may change only what shapes "
                f"training: {', '.join(may_change)}; leave `{name}` out"
            )

    def quantizer_kwargs(self) -> dict[str, Any]:
        """The quantizer's keyword arguments: every option it declares, from this config's fields."""
        return {name: getattr(self, name) for name in self.quantizer_class.options} if self.quantizer_class else {}

    def code_space(self) -> CodeSpace:
        """K, D and R of this config's quantizer."""
        quantizer = self.quantizer_class or Quantizer
        return quantizer.resolve_code_space(self.quantizer_kwargs(), self.codebook_size, self.latent_dim, "config field")

    def check(self) -> None:
        """Raise `TypeError`/`ValueError` naming the first invalid field (the quantizer's first: K and D
        may follow from them), and fill in K and D where they were left out."""
        declared = self.declared_options()
        undeclared = sorted(f.name for f in dataclasses.fields(self) if f.name not in declared and f.name not in _TRANSFORMERS_FIELDS)
        if undeclared:
            raise TypeError(
                f"{type(self).__name__} field(s) {undeclared} are not declared: a type's fields are its quantizer's "
                "options and the options in its own `options`"
            )
        (self.quantizer_class or Quantizer).check_options(self.quantizer_kwargs(), "config field")
        check_options(declared, {name: getattr(self, name) for name in declared if name != "backbone_config"},
                      "config field")
        space = self.code_space()
        self.codebook_size, self.latent_dim = space.codebook_size, space.dim
        if self.image_size % self.downsampling_factor:
            raise ValueError(
                f"config field `image_size` ({self.image_size}) must be a multiple of the backbone's "
                f"`downsampling_factor` ({self.downsampling_factor})"
            )
        check_regularizer_settings(self.regularizers)

    @property
    def downsampling_factor(self) -> int:
        """f, as the backbone reports it: an H x W image gives an (H/f) x (W/f) token grid."""
        return self.backbone_config.downsampling_factor

    @property
    def token_grid(self) -> tuple[int, ...]:
        """The token positions of a square `image_size` image, as the backbone lays them out: the grid
        `(h, w)`, or `(L,)` for a 1-D backbone."""
        return self.backbone_config.token_grid(self.image_size)

    @property
    def is_sequence(self) -> bool:
        """Whether the tokens are a 1-D sequence `[B, L]` rather than a grid `[B, h, w]`."""
        return len(self.token_grid) == 1

    @property
    def codes_per_position(self) -> int:
        """R, the codes the quantizer picks per grid position (1 for most; a residual quantizer's depth)."""
        return self.code_space().codes_per_position

    @property
    def token_shape(self) -> tuple[int, ...]:
        """The shape of one image's ids: `(h, w)` (or `(L,)`), then R for R > 1 codes per position."""
        return token_shape(self.token_grid, self.codes_per_position)


def _backbone_options(backbone_config) -> dict[str, Option]:
    """The options of the backbone a `backbone_config` value names (the default backbone's when it
    names none or none that is registered)."""
    if isinstance(backbone_config, BackboneConfig):
        return backbone_config.options
    name = backbone_config.get("backbone_type", DEFAULT_BACKBONE) if isinstance(backbone_config, Mapping) else None
    return BACKBONES.get(name, BACKBONES[DEFAULT_BACKBONE]).options
