"""Quantizers: standalone `nn.Module`s (pure torch) sharing the interface in `base.py`.

`functional.py` holds the shared maths (chunked distances, posterior sampling, histograms,
perplexity), `codebook.py` the EMA codebook that VQ and soft EM build on, `kmeans.py` its
initialisation; every other module is one method.
"""

from .base import Quantizer, QuantizerOutput
from .codebook import CodebookQuantizer
from .functional import (
    code_histogram,
    nearest_code,
    perplexity_from_counts,
    sample_codes,
    squared_distances,
    usage_stats,
)
from .gumbel import GumbelQuantizer, hard_gumbel_softmax, soft_gumbel_softmax
from .hypervq import HyperbolicQuantizer
from .nsvq import NSVQuantizer
from .schedules import TemperatureSchedule
from .softvq import SoftEMQuantizer
from .sqvae import GaussianSQQuantizer, StochasticQuantizer, VMFSQQuantizer
from .vq import VectorQuantizer

__all__ = [
    "CodebookQuantizer",
    "GaussianSQQuantizer",
    "GumbelQuantizer",
    "HyperbolicQuantizer",
    "NSVQuantizer",
    "Quantizer",
    "QuantizerOutput",
    "SoftEMQuantizer",
    "StochasticQuantizer",
    "TemperatureSchedule",
    "VMFSQQuantizer",
    "VectorQuantizer",
    "code_histogram",
    "hard_gumbel_softmax",
    "nearest_code",
    "perplexity_from_counts",
    "sample_codes",
    "soft_gumbel_softmax",
    "squared_distances",
    "usage_stats",
]
