"""vqtok: vector-quantized image tokenizers native to the Hugging Face ecosystem."""

from .configuration import GumbelVQConfig, NSVQConfig, SoftVQConfig, VQConfig, VQTokenizerConfig
from .hub import render_model_card, save_model_card
from .modeling import (
    GumbelVQModel,
    NSVQModel,
    SoftVQModel,
    VQModel,
    VQTokenizer,
    VQTokenizerOutput,
    VQTokenizerPreTrainedModel,
    register_tokenizer,
)
from .processing import VQImageProcessor

__version__ = "0.1.0"

__all__ = [
    "GumbelVQConfig",
    "GumbelVQModel",
    "NSVQConfig",
    "NSVQModel",
    "SoftVQConfig",
    "SoftVQModel",
    "VQConfig",
    "VQImageProcessor",
    "VQModel",
    "VQTokenizer",
    "VQTokenizerConfig",
    "VQTokenizerOutput",
    "VQTokenizerPreTrainedModel",
    "register_tokenizer",
    "render_model_card",
    "save_model_card",
]
