"""Quantizers: standalone `nn.Module`s sharing the interface in `base.py`."""

from .base import Quantizer, QuantizerOutput, nearest_code, perplexity_from_counts, usage_stats
from .gumbel import GumbelQuantizer, hard_gumbel_softmax
from .nsvq import NSVQuantizer
from .schedules import TemperatureSchedule
from .soft_em import SoftEMQuantizer
from .vq import VectorQuantizer

__all__ = [
    "GumbelQuantizer",
    "NSVQuantizer",
    "Quantizer",
    "QuantizerOutput",
    "SoftEMQuantizer",
    "TemperatureSchedule",
    "VectorQuantizer",
    "hard_gumbel_softmax",
    "nearest_code",
    "perplexity_from_counts",
    "usage_stats",
]
