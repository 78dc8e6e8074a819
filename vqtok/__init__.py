"""vqtok: vector-quantized image tokenizers native to the Hugging Face ecosystem."""

from .auto import VQTokenizer
from .configuration import VQTokenizerConfig
from .hub import render_model_card, save_model_card
from .modeling import VQTokenizerOutput, VQTokenizerPreTrainedModel
from .models import (
    GumbelVQConfig,
    GumbelVQModel,
    HyperVQConfig,
    HyperVQModel,
    NSVQConfig,
    NSVQModel,
    SoftVQConfig,
    SoftVQModel,
    SQVAEConfig,
    SQVAEModel,
    VMFSQVAEConfig,
    VMFSQVAEModel,
    VQConfig,
    VQModel,
)
from .prior import (
    PriorConfig,
    TokenPrior,
    code_counts,
    decode_samples,
    histogram_bits_per_token,
    sample_from_histogram,
    sample_uniform,
)
from .processing import VQImageProcessor
from .auto import register_tokenizer
from .tokens import TokenLayout, codes_from_dataset, load_tokenized, save_tokenized, tokenize_dataset

__version__ = "0.2.0"

__all__ = [
    "GumbelVQConfig",
    "GumbelVQModel",
    "HyperVQConfig",
    "HyperVQModel",
    "NSVQConfig",
    "NSVQModel",
    "SQVAEConfig",
    "SQVAEModel",
    "SoftVQConfig",
    "SoftVQModel",
    "VQConfig",
    "VQImageProcessor",
    "VMFSQVAEConfig",
    "VMFSQVAEModel",
    "VQModel",
    "VQTokenizer",
    "VQTokenizerConfig",
    "VQTokenizerOutput",
    "VQTokenizerPreTrainedModel",
    "register_tokenizer",
    "render_model_card",
    "save_model_card",
    "PriorConfig",
    "TokenLayout",
    "TokenPrior",
    "code_counts",
    "codes_from_dataset",
    "decode_samples",
    "histogram_bits_per_token",
    "load_tokenized",
    "sample_from_histogram",
    "sample_uniform",
    "save_tokenized",
    "tokenize_dataset",
]
