"""The registry of tokenizer types: `model_type` -> (config class, model class).

`register_tokenizer` also registers the type with `transformers.AutoConfig`, `AutoModel` and
`AutoImageProcessor`, so `AutoModel.from_pretrained` loads vqtok checkpoints and
`AutoImageProcessor.from_pretrained` their processors, without `trust_remote_code`. The types are
registered in `vqtok/models/__init__.py`.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoImageProcessor, AutoModel

from .processing import VQImageProcessor

# model_type -> (config class, model class); filled by `register_tokenizer`.
TOKENIZER_REGISTRY: dict[str, tuple[type, type]] = {}


def register_tokenizer(model_class: type) -> None:
    """Make the tokenizer type of `model_class` (and of its `config_class`) loadable by
    `VQTokenizer`, `AutoConfig`, `AutoModel` and `AutoImageProcessor`."""
    config_class = model_class.config_class
    model_type = config_class.model_type
    TOKENIZER_REGISTRY[model_type] = (config_class, model_class)
    AutoConfig.register(model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)
    AutoImageProcessor.register(config_class, image_processor_classes={"pil": VQImageProcessor}, exist_ok=True)


def registered_config_class(model_type: str) -> type:
    """The config class registered for `model_type` (ValueError naming the registered types otherwise)."""
    return _registered(model_type)[0]


def registered_model_class(model_type: str) -> type:
    """The model class registered for `model_type` (ValueError naming the registered types otherwise)."""
    return _registered(model_type)[1]


def _registered(model_type: str) -> tuple[type, type]:
    if model_type not in TOKENIZER_REGISTRY:
        raise ValueError(f"unknown vqtok model_type {model_type!r}; registered types: {sorted(TOKENIZER_REGISTRY)}")
    return TOKENIZER_REGISTRY[model_type]
