"""The registry of tokenizer types (`model_type` -> config class, model class) and `VQTokenizer`,
the auto class that builds or loads any registered type by its config's `model_type`.

`register_tokenizer` also registers the type with `transformers.AutoConfig`, `AutoModel` and
`AutoImageProcessor`, so `AutoModel.from_pretrained` loads vqtok checkpoints and
`AutoImageProcessor.from_pretrained` their processors, without `trust_remote_code`. The types are
registered in `vqtok/models/__init__.py`.
"""

from __future__ import annotations

import os

from transformers import AutoConfig, AutoModel, PreTrainedConfig
# From its module: transformers 5.16-5.17 export a torchvision-requiring placeholder at the top level.
from transformers.models.auto.image_processing_auto import AutoImageProcessor

from .configuration import VQTokenizerConfig
from .hub.loading import HUB_DOWNLOAD_KWARGS, check_config_file, check_local_folder
from .modeling import VQTokenizerPreTrainedModel
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


class VQTokenizer:
    """Auto class: builds or loads the right tokenizer for a config's `model_type`.

    >>> tokenizer = VQTokenizer.from_pretrained("path/or/repo-id")
    >>> ids = tokenizer.encode(pixel_values)          # [B, h, w] torch.long ([B, h, w, R]: R codes per position)
    >>> images = tokenizer.decode(ids)                # [B, C, H, W] in [-1, 1]
    """

    def __init__(self, *args, **kwargs):
        raise TypeError(
            "VQTokenizer is an auto class: use VQTokenizer.from_pretrained(...) or VQTokenizer.from_config(...)"
        )

    @staticmethod
    def model_class_for(model_type: str) -> type[VQTokenizerPreTrainedModel]:
        """The registered model class for `model_type` (ValueError naming the known types otherwise)."""
        return registered_model_class(model_type)

    @classmethod
    def from_config(cls, config: VQTokenizerConfig) -> VQTokenizerPreTrainedModel:
        """A freshly initialised tokenizer for `config`."""
        if not isinstance(config, VQTokenizerConfig):
            raise TypeError(f"config must be a VQTokenizerConfig subclass, got {type(config).__name__}")
        return cls.model_class_for(config.model_type)(config)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> VQTokenizerPreTrainedModel:
        """Load any vqtok tokenizer saved with `save_pretrained` or pushed to the Hub.

        Keyword arguments (`revision`, `cache_dir`, `token`, `local_files_only`, ...) pass through to
        `transformers.PreTrainedModel.from_pretrained`. A `config.json` whose `model_type` is not a
        registered vqtok type raises `ValueError` listing the registered types; the other errors are
        those of `VQTokenizerPreTrainedModel.from_pretrained`.
        """
        source = os.fspath(pretrained_model_name_or_path)
        config = kwargs.pop("config", None)
        if config is None:
            config = cls.config_from_pretrained(source, **{k: kwargs[k] for k in HUB_DOWNLOAD_KWARGS if k in kwargs})
        elif not isinstance(config, VQTokenizerConfig):
            raise TypeError(f"config must be a VQTokenizerConfig subclass, got {type(config).__name__}")
        check_local_folder(source, "tokenizer")
        return cls.model_class_for(config.model_type).from_pretrained(source, config=config, **kwargs)

    @classmethod
    def config_from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **download) -> VQTokenizerConfig:
        """The config of any vqtok tokenizer saved with `save_pretrained` or pushed to the Hub, without its
        weights (`download`: `revision`, `cache_dir`, `token`, `local_files_only`, ...). A `config.json`
        whose `model_type` is not a registered vqtok type raises `ValueError` listing the registered types."""
        check_local_folder(pretrained_model_name_or_path, "tokenizer")
        source = os.fspath(pretrained_model_name_or_path)
        check_config_file(source, download)
        config_dict, _ = PreTrainedConfig.get_config_dict(source, **download)
        try:
            model_class = cls.model_class_for(config_dict.get("model_type"))
        except ValueError as error:
            raise ValueError(f"cannot load {source}: {error}") from None
        return model_class.config_class.from_dict(config_dict)
