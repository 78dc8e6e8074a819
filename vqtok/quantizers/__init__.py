"""Quantizers: standalone `nn.Module`s (pure torch) sharing the interface in `base.py`.

`functional.py` holds the shared maths (chunked distances, posterior sampling, histograms,
perplexity), `codebook.py` the `Codebook` module that every quantizer with a code table holds,
`kmeans.py` its initialisation and `schedules.py` the annealed temperatures; every other module is
one method, named like its tokenizer type (`vq.py` for `vqtok-vq`, ...).
"""

from .base import CodeSpace, ParameterGroup, Quantizer, QuantizerOutput, sampled_code_vectors
from .codebook import Codebook
from .functional import (
    code_histogram,
    nearest_code,
    entropy_from_counts,
    perplexity_from_counts,
    sample_codes,
    rotate_to_codes,
    squared_distances,
    usage_stats,
)
from .bsq import BSQuantizer
from .fsq import FSQuantizer
from .ibq import IBQuantizer
from .lfq import LFQuantizer
from .rvq import ResidualVectorQuantizer
from .simvq import SimVQuantizer
from .gumbel import GumbelQuantizer, hard_gumbel_softmax, soft_gumbel_softmax
from .hypervq import HyperVQQuantizer
from .msrvq import MultiScaleResidualQuantizer
from .nsvq import NSVQuantizer
from .schedules import TemperatureSchedule
from .softvq import SoftVQQuantizer
from .sqvae import SQVAEQuantizer, StochasticQuantizer
from .vmf_sqvae import VMFSQVAEQuantizer
from .vq import VectorQuantizer

__all__ = [
    "BSQuantizer",
    "CodeSpace",
    "Codebook",
    "FSQuantizer",
    "IBQuantizer",
    "LFQuantizer",
    "ResidualVectorQuantizer",
    "SimVQuantizer",
    "GumbelQuantizer",
    "HyperVQQuantizer",
    "MultiScaleResidualQuantizer",
    "NSVQuantizer",
    "ParameterGroup",
    "Quantizer",
    "QuantizerOutput",
    "SQVAEQuantizer",
    "SoftVQQuantizer",
    "StochasticQuantizer",
    "TemperatureSchedule",
    "VMFSQVAEQuantizer",
    "VectorQuantizer",
    "code_histogram",
    "hard_gumbel_softmax",
    "nearest_code",
    "entropy_from_counts",
    "perplexity_from_counts",
    "rotate_to_codes",
    "sample_codes",
    "sampled_code_vectors",
    "soft_gumbel_softmax",
    "squared_distances",
    "usage_stats",
]
