"""Tokenizers and training checkpoints written by earlier vqtok versions, read as today's: everything
vqtok knows of those formats is here.

vqtok 0.1 wrote the conv backbone's fields at the top level of `config.json` (today they sit in
`backbone_config`), kept each backbone half in one `nn.Sequential` (today its layers are named:
`conv_in`, `down.0.blocks.0`, ..., `conv_out`), let each quantizer own its code table and its
statistics (today a `Codebook` module holds them), and, before 2026-11-23, wrote training checkpoints
without a completeness marker. vqtok 0.1 and 0.2 gave the quantizer's learning-rate multiplier three
names (`RENAMED_OPTIONS`).

- `upgrade_config_dict` moves the backbone fields and renames the options (`VQTokenizerConfig.from_dict`
  applies it to every config it reads; a today's file is left as it is);
- `tensor_renames` gives `from_pretrained` the renaming of every tensor of a 0.1 checkpoint, and
  `complete_loaded_state` then accepts the tensors a quantizer no longer keeps and sets those it keeps
  since (from the loaded state); a re-saved tokenizer is written in today's format;
- `unmarked_checkpoint_problem` says whether a training checkpoint folder without a marker holds
  what a complete one does (`vqtok.training.checkpoints` accepts such a folder with a warning).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

# The conv backbone's fields, which vqtok 0.1 kept at the top level of a tokenizer config.
FLAT_BACKBONE_KEYS = ("base_channels", "channel_multipliers", "num_res_blocks", "downsampling_factor", "norm_groups")

# Options of vqtok 0.1 and 0.2 -> today's names.
RENAMED_OPTIONS = {"codebook_lr_multiplier": "quantizer_lr_multiplier", "annealing_lr_multiplier": "quantizer_lr_multiplier"}

# The tensors of each type's quantizer in vqtok 0.1 -> today's names (relative to the quantizer); the
# other types vqtok 0.1 shipped (HyperVQ) kept today's names.
_TABLE = {"embedding": "codebook.weight", "initialized": "codebook.initialized"}
_EMA = {"ema_cluster_size": "codebook.ema_cluster_size", "ema_embed_sum": "codebook.ema_embed_sum"}
_USAGE = {"code_usage": "codebook.usage"}
QUANTIZER_TENSORS = {
    "vqtok-vq": {**_TABLE, **_USAGE, **_EMA},
    "vqtok-nsvq": _TABLE,
    "vqtok-softvq": {**_TABLE, **_EMA},
    "vqtok-gumbel": {"embedding": "codebook.weight"},
    "vqtok-sqvae": {**_TABLE, **_USAGE},
    "vqtok-vmf-sqvae": {**_TABLE, **_USAGE},
}
TYPES = (*QUANTIZER_TENSORS, "vqtok-hypervq")
"""The tokenizer types vqtok 0.1 shipped."""

# What a training checkpoint written before markers must hold to count as complete.
CHECKPOINT_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
CHECKPOINT_OPTIMIZER = "optimizer"  # Accelerate's optimizer.bin, optimizer_1.bin, ...


def upgrade_config_dict(config_dict: Mapping[str, Any]) -> dict[str, Any]:
    """`config_dict` with the options of earlier versions renamed (`RENAMED_OPTIONS`) and vqtok 0.1's
    top-level backbone fields moved into `backbone_config` (a conv backbone); today's dict is returned
    as it is. ValueError when a file has both the flat fields and `backbone_config`."""
    config_dict = {RENAMED_OPTIONS.get(key, key): value for key, value in config_dict.items()}
    flat = {key: config_dict[key] for key in FLAT_BACKBONE_KEYS if key in config_dict}
    if not flat:
        return config_dict
    if config_dict.get("backbone_config") is not None:
        raise ValueError(
            f"the config holds both `backbone_config` and the top-level backbone field(s) {sorted(flat)} of "
            "vqtok 0.1; keep one"
        )
    upgraded = {key: value for key, value in config_dict.items() if key not in flat}
    upgraded["backbone_config"] = {"backbone_type": "conv", **flat}
    return upgraded


def tensor_renames(config_class: type, source: str, download: dict, config=None) -> dict[str, str] | None:
    """Regex -> replacement for every tensor name that a vqtok 0.1 checkpoint of this tokenizer used
    (its backbone's and its quantizer's), in the form of `from_pretrained(..., key_mapping=...)`, or
    None for a class whose type vqtok 0.1 did not ship (its config is then not read). Each pattern
    matches a name of vqtok 0.1 that today's names never contain. `config` is read from `source`
    (with the Hub arguments `download`) when the caller gave none."""
    if getattr(config_class, "model_type", None) not in TYPES:
        return None
    config = config if config is not None else config_class.from_pretrained(source, **download)
    mapping = {}
    if config.backbone_config.backbone_type == "conv":
        for prefix in ("encoder.", "decoder."):
            for old, new in conv_backbone_renames(config.backbone_config, prefix).items():
                anchor = "^" if old.startswith(prefix) else ""
                mapping[anchor + re.escape(old)] = new
    for old, new in QUANTIZER_TENSORS.get(config.model_type, {}).items():
        mapping[f"^quantizer\\.{re.escape(old)}$"] = f"quantizer.{new}"
    return mapping


def conv_backbone_renames(backbone, prefix: str) -> dict[str, str]:
    """vqtok 0.1 kept each half of the conv backbone in one `nn.Sequential` (`layers.<i>`) and each
    residual block's body in another (`body.<i>`): those name prefixes of the encoder's (`prefix=
    "encoder."`) or decoder's (`"decoder."`) tensors -> today's, in the same build order."""
    down = prefix == "encoder."
    names = ["conv_in"] + ([] if down else ["mid"])
    for level in range(backbone.num_levels):
        part = f"down.{level}" if down else f"up.{level}"
        names += [f"{part}.blocks.{block}" for block in range(backbone.num_res_blocks)]
        names.append(f"{part}.downsample" if down else f"{part}.upsample")
    names += (["mid"] if down else []) + ["norm_out", None, "conv_out"]  # None: the parameterless SiLU
    renames = {f"{prefix}layers.{i}.": f"{prefix}{name}." for i, name in enumerate(names) if name}
    renames.update({f".body.{i}.": f".{name}." for i, name in ((0, "norm1"), (2, "conv1"), (3, "norm2"), (5, "conv2"))})
    return renames


def complete_loaded_state(model, info: dict) -> dict:
    """`info` (transformers' loading info) of a vqtok 0.1 checkpoint loaded into the tokenizer `model`
    (its tensors renamed by `tensor_renames`), less the quantizer tensors it lacks and that follow from
    the loaded state (set here) and those it holds and today's quantizer no longer keeps."""
    prefix = "quantizer."
    missing = {key for key in info.get("missing_keys") or () if key.startswith(prefix)}
    restored = {prefix + name for name in _restore_state(model, {key[len(prefix):] for key in missing})}
    retired = {prefix + name for name in _retired_state(model.config)}
    return {
        **info,
        "missing_keys": {key for key in info.get("missing_keys") or () if key not in restored},
        "unexpected_keys": {key for key in info.get("unexpected_keys") or () if key not in retired},
    }


def _retired_state(config) -> set[str]:
    """Today's names of the quantizer tensors that vqtok 0.1 saved and today's quantizer (with these
    options) no longer keeps: the EMA statistics vqtok 0.1 also kept for a VQ codebook learnt by
    gradient (unused there)."""
    if config.model_type == "vqtok-vq" and not config.use_ema:
        return {"codebook.ema_cluster_size", "codebook.ema_embed_sum"}
    return set()


def _restore_state(model, missing: set[str]) -> set[str]:
    """Set the quantizer tensors `missing` from a vqtok 0.1 checkpoint that follow from the loaded
    state; returns their names: a Gumbel codebook started on its first training batch, while the
    temperature schedule's step was 0, so it has been started when the step has moved."""
    quantizer = model.quantizer
    if model.config.model_type != "vqtok-gumbel" or "codebook.initialized" not in missing:
        return set()
    quantizer.codebook.initialized.fill_(bool(quantizer.temperature.step > 0))
    return {"codebook.initialized"}


def unmarked_checkpoint_problem(names: Collection[str]) -> str | None:
    """Why a training checkpoint folder without a completeness marker, holding the files `names`, is
    not what vqtok 0.1 wrote before markers (None when it is: its model weights and optimizer state)."""
    if not any(name in names for name in CHECKPOINT_WEIGHTS):
        return f"it has neither a completeness marker nor model weights ({' or '.join(CHECKPOINT_WEIGHTS)})"
    if not any(name.startswith(CHECKPOINT_OPTIMIZER) for name in names):
        return f"it has no optimizer state ({CHECKPOINT_OPTIMIZER}.bin)"
    return None


def unmarked_checkpoint_warning(folder: str, marker: str) -> str:
    """The warning of a resume from a folder without the marker `marker` that vqtok 0.1 wrote."""
    return (f"checkpoint {folder} has no {marker} (written by vqtok 0.1, before checkpoints were marked complete): "
            "only its files could be checked")
