"""Regularisers that any tokenizer type can switch on through its config.

`VQTokenizerConfig.regularizers` maps a regulariser's name to its options, e.g.
`{"topology": {"weight": 1e4}}`; the model builds each one listed and adds its named loss terms
to the training loss. Every regulariser is registered below, in one visible place.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from ..options import Registry
from .base import Regularizer, RegularizerInputs, RegularizerOutput
from .topology import TopologyRegularizer

REGULARIZERS = Registry("regulariser", "config field", "regularizers")
"""Every regulariser a config can switch on, by name."""


def register_regularizer(regularizer_class: type[Regularizer]) -> type[Regularizer]:
    """Make `regularizer_class` available under its `name` in `config.regularizers`."""
    return REGULARIZERS.register(regularizer_class)


def check_regularizer_settings(settings: Mapping | None) -> None:
    """Raise `ValueError`/`TypeError` unless `settings` maps registered names to valid option dicts."""
    REGULARIZERS.check_settings(settings)


def build_regularizers(settings: Mapping | None) -> nn.ModuleDict:
    """One module per regulariser switched on in `settings` (name -> options), in their order."""
    return nn.ModuleDict(REGULARIZERS.build(settings))


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
