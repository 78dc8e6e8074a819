"""What lets `transformers.AutoModel.from_pretrained(folder_or_repo, trust_remote_code=True)` load a
saved vqtok model where vqtok is installed but not imported, the Hub's convention for models whose
code lives outside transformers.

Every saved vqtok config carries an `auto_map` naming the classes in `LOADER_MODULE`, a small module
written beside `config.json` (and uploaded with it). That module holds no model code: it imports the
installed vqtok, which registers its models with transformers' Auto classes, and takes the classes of
the saved `model_type` from them. Without `trust_remote_code=True`, `import vqtok` first does the same.
"""

from __future__ import annotations

import os

from transformers import PreTrainedConfig
from transformers.models.auto.modeling_auto import MODEL_MAPPING

LOADER_MODULE = "vqtok_loader"

_LOADER = '''"""Loads this vqtok model with transformers' Auto classes and `trust_remote_code=True`. The code is
vqtok's own, installed with `pip install vqtok`; this module only imports it: vqtok registers its
models with the Auto classes, and the classes of this model's type are taken from them."""

import vqtok  # noqa: F401
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.modeling_auto import MODEL_MAPPING

{config_name} = CONFIG_MAPPING[{model_type!r}]
{model_name} = MODEL_MAPPING[{config_name}]
'''


def auto_map(config: PreTrainedConfig) -> dict[str, str]:
    """The `auto_map` of a vqtok config: its class (`AutoConfig`) and its model class (`AutoModel`),
    in `LOADER_MODULE`; none for a config no model class is registered for."""
    model_class = _model_class(config)
    if model_class is None:
        return {}
    return {"AutoConfig": f"{LOADER_MODULE}.{type(config).__name__}", "AutoModel": f"{LOADER_MODULE}.{model_class.__name__}"}


def write_loader(config: PreTrainedConfig, folder: str | os.PathLike) -> str:
    """Write `LOADER_MODULE` into `folder` for `config`'s type (nothing for a type without a registered
    model class); returns its path."""
    model_class = _model_class(config)
    if model_class is None:
        return ""
    path = os.path.join(folder, f"{LOADER_MODULE}.py")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(_LOADER.format(config_name=type(config).__name__, model_type=config.model_type,
                                    model_name=model_class.__name__))
    return path


def _model_class(config: PreTrainedConfig) -> type | None:
    try:
        return MODEL_MAPPING[type(config)]
    except KeyError:
        return None
