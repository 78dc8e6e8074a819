"""Images into language models: `VQMultimodalProcessor` puts a vqtok tokenizer's codes into a text
tokenizer's vocabulary; `ImageSpanLogitsProcessor` keeps generated images whole;
`resize_embeddings_for_image_tokens` gives a causal language model rows for the new tokens."""

from transformers import AutoProcessor

from ..configuration import VQTokenizerConfig
from .generation import ImageSpanLogitsProcessor, resize_embeddings_for_image_tokens
from .processing import IMAGE_PLACEHOLDER, VQMultimodalProcessor
from .vocabulary import BEGIN_OF_IMAGE, END_OF_IMAGE, ImageVocabulary, add_image_tokens, code_token

# AutoProcessor finds a processor class by the name saved in processor_config.json among the
# registered ones; the key is a config class, and the base class is one no saved model has, so
# AutoProcessor on a plain vqtok tokenizer's folder behaves as before.
AutoProcessor.register(VQTokenizerConfig, VQMultimodalProcessor, exist_ok=True)

__all__ = [
    "BEGIN_OF_IMAGE",
    "END_OF_IMAGE",
    "IMAGE_PLACEHOLDER",
    "ImageSpanLogitsProcessor",
    "ImageVocabulary",
    "VQMultimodalProcessor",
    "add_image_tokens",
    "code_token",
    "resize_embeddings_for_image_tokens",
]
