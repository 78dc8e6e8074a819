"""vqtok: vector-quantized image tokenizers native to the Hugging Face ecosystem."""

from .configuration import VQConfig, VQTokenizerConfig
from .modeling import VQModel, VQTokenizer, VQTokenizerOutput, VQTokenizerPreTrainedModel, register_tokenizer

__version__ = "0.1.0"

__all__ = [
    "VQConfig",
    "VQModel",
    "VQTokenizer",
    "VQTokenizerConfig",
    "VQTokenizerOutput",
    "VQTokenizerPreTrainedModel",
    "register_tokenizer",
]
