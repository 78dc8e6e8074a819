"""Regularisers that any tokenizer type can switch on through its config.

`VQTokenizerConfig.regularizers` maps a regulariser's name to its options, e.g.
`{"topology": {"weight": 1e4}}`; the model builds each one listed and adds its named loss terms
to the training loss. Every regulariser is registered below, in one visible place.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from .base import Regularizer, RegularizerInputs, RegularizerOutput
from .topology import TopologyRegularizer

REGULARIZERS: dict[str, type[Regularizer]] = {}
"""name -> regulariser class, for every regulariser a config can switch on."""


def register_regularizer(regularizer_class: type[Regularizer]) -> type[Regularizer]:
    """Make `regularizer_class` available under its `name` in `config.regularizers`."""
    if not regularizer_class.name:
        raise ValueError(f"{regularizer_class.__name__} must set a `name`")
    REGULARIZERS[regularizer_class.name] = regularizer_class
    return regularizer_class


def check_regularizer_settings(settings: Mapping | None) -> None:
    """Raise `ValueError`/`TypeError` unless `settings` maps registered names to valid option dicts."""
    for name, options in (settings or {}).items():
        if name not in REGULARIZERS:
            raise ValueError(
                f"config field `regularizers` names an unknown regulariser {name!r}; registered: {sorted(REGULARIZERS)}"
            )
        if not isinstance(options, Mapping):
            raise TypeError(
                f"config field `regularizers.{name}` must map option names to values, got {type(options).__name__}"
            )
        REGULARIZERS[name].check_options(options, f"config field `regularizers.{name}` option")


def build_regularizers(settings: Mapping | None) -> nn.ModuleDict:
    """One module per regulariser switched on in `settings` (name -> options), in their order."""
    check_regularizer_settings(settings)
    return nn.ModuleDict({name: REGULARIZERS[name](**options) for name, options in (settings or {}).items()})


# Every regulariser is registered here.
register_regularizer(TopologyRegularizer)  # HC-VQ: `regularizers={"topology": {...}}`

__all__ = [
    "REGULARIZERS",
    "Regularizer",
    "RegularizerInputs",
    "RegularizerOutput",
    "TopologyRegularizer",
    "build_regularizers",
    "check_regularizer_settings",
    "register_regularizer",
]
