"""Quantizers: standalone `nn.Module`s sharing the interface in `base.py`."""

from .base import Quantizer, QuantizerOutput, nearest_code, perplexity_from_counts, usage_stats
from .vq import VectorQuantizer

__all__ = ["Quantizer", "QuantizerOutput", "VectorQuantizer", "nearest_code", "perplexity_from_counts", "usage_stats"]
