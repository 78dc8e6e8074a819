"""Tokens for transformers: how a token grid is laid out as a flat id sequence (`TokenLayout`) and
the tokenization of whole image datasets (`tokenize_dataset`, saved and loaded with the layout)."""

from .layout import LAYOUT_FILE, TokenLayout, check_codes
from .tokenization import codes_from_dataset, load_tokenized, save_tokenized, tokenize_dataset, tokenized_split

__all__ = [
    "LAYOUT_FILE",
    "TokenLayout",
    "check_codes",
    "codes_from_dataset",
    "load_tokenized",
    "tokenized_split",
    "save_tokenized",
    "tokenize_dataset",
]
