"""Tokenizers saved by vqtok 0.1, read as today's.

vqtok 0.1 wrote the conv backbone's fields at the top level of `config.json` (today they sit in
`backbone_config`), kept each backbone half in one `nn.Sequential` (today its layers are named:
`conv_in`, `down.0.blocks.0`, ..., `conv_out`) and let each quantizer own its code table and its
statistics (today a `Codebook` module holds them). `upgrade_config_dict` moves the fields, and
`legacy_key_mapping` gives `from_pretrained` the renaming of every tensor; both leave today's files
untouched, so they are applied to every load. `complete_legacy_state` then accepts, for a checkpoint
that needed renaming, the tensors a quantizer no longer keeps and sets those it keeps since (from the
loaded state). A re-saved tokenizer is written in today's format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# The conv backbone's fields, which vqtok 0.1 kept at the top level of a tokenizer config.
FLAT_BACKBONE_KEYS = ("base_channels", "channel_multipliers", "num_res_blocks", "downsampling_factor", "norm_groups")


def upgrade_config_dict(config_dict: Mapping[str, Any]) -> dict[str, Any]:
    """`config_dict` with vqtok 0.1's top-level backbone fields moved into `backbone_config` (a conv
    backbone); a dict without them is returned as it is. ValueError when a file has both."""
    flat = {key: config_dict[key] for key in FLAT_BACKBONE_KEYS if key in config_dict}
    if not flat:
        return dict(config_dict)
    if config_dict.get("backbone_config") is not None:
        raise ValueError(
            f"the config holds both `backbone_config` and the top-level backbone field(s) {sorted(flat)} of "
            "vqtok 0.1; keep one"
        )
    upgraded = {key: value for key, value in config_dict.items() if key not in flat}
    upgraded["backbone_config"] = {"backbone_type": "conv", **flat}
    return upgraded


def legacy_key_mapping(config) -> dict[str, str]:
    """Regex -> replacement for every tensor name a vqtok 0.1 checkpoint of a tokenizer `config` used
    (its backbone's and its quantizer's), in the form of `from_pretrained(..., key_mapping=...)`.
    Each pattern matches a name of vqtok 0.1 that today's names never contain."""
    mapping = {}
    for prefix in ("encoder.", "decoder."):
        for old, new in config.backbone_config.legacy_state_names(prefix).items():
            anchor = "^" if old.startswith(prefix) else ""
            mapping[anchor + re.escape(old)] = new
    for old, new in getattr(config.quantizer_class, "legacy_state_names", {}).items():
        mapping[f"^quantizer\\.{re.escape(old)}$"] = f"quantizer.{new}"
    return mapping


def complete_legacy_state(model, info: dict) -> dict:
    """`info` (transformers' loading info) of a vqtok 0.1 checkpoint loaded into `model`, less the
    missing quantizer tensors it set from the loaded state (`restore_legacy_state`) and the
    unexpected ones it no longer keeps (`retired_legacy_state`)."""
    prefix = "quantizer."
    quantizer = model.quantizer
    missing = {key[len(prefix):] for key in info.get("missing_keys") or () if key.startswith(prefix)}
    restored = {prefix + name for name in quantizer.restore_legacy_state(missing)}
    retired = {prefix + name for name in quantizer.retired_legacy_state()}
    return {
        **info,
        "missing_keys": {key for key in info.get("missing_keys") or () if key not in restored},
        "unexpected_keys": {key for key in info.get("unexpected_keys") or () if key not in retired},
    }
