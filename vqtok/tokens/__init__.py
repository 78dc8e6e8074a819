"""Tokens for transformers: how a token grid is laid out as a flat id sequence (`TokenLayout`) and
the tokenization of whole image datasets (`tokenize_dataset`, saved and loaded with the layout) and
of streamed ones into resumable Parquet shards (`tokenize_stream`, read with `load_tokenized_shards`)."""

from .layout import LAYOUT_FILE, TokenLayout, check_codes
from .parquet_shards import load_tokenized_shards, sharded_token_files
from .stream_tokenization import TokenShards, tokenize_stream
from .tokenization import codes_from_dataset, load_tokenized, save_tokenized, tokenize_dataset, tokenized_split

__all__ = [
    "LAYOUT_FILE",
    "TokenLayout",
    "TokenShards",
    "check_codes",
    "codes_from_dataset",
    "load_tokenized",
    "load_tokenized_shards",
    "sharded_token_files",
    "tokenized_split",
    "save_tokenized",
    "tokenize_dataset",
    "tokenize_stream",
]
