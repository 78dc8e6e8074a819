"""The registry of tokenizer types: `model_type` -> (config class, model class).

`register_tokenizer` also registers the pair with `transformers.AutoConfig` and `AutoModel`, so
`AutoModel.from_pretrained` loads vqtok checkpoints without `trust_remote_code`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from transformers import AutoConfig, AutoModel

if TYPE_CHECKING:
    from .configuration import VQTokenizerConfig
    from .modeling import VQTokenizerPreTrainedModel

# model_type -> (config class, model class); filled by `register_tokenizer`.
TOKENIZER_REGISTRY: dict[str, tuple[type[VQTokenizerConfig], type[VQTokenizerPreTrainedModel]]] = {}


def register_tokenizer(config_class: type[VQTokenizerConfig], model_class: type[VQTokenizerPreTrainedModel]) -> None:
    """Make a tokenizer type loadable by `VQTokenizer`, `AutoConfig` and `AutoModel`."""
    model_type = config_class.model_type
    TOKENIZER_REGISTRY[model_type] = (config_class, model_class)
    AutoConfig.register(model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)


