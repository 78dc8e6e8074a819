"""The autoregressive prior over token grids and sampling: `PriorConfig` / `TokenPrior` (a
`transformers` GPT-2 or Llama causal LM over the K codes + BOS), its model card, and the three
sampling schemes (uniform, code histogram, prior through `generate`).

`PriorConfig` and `TokenPrior` are registered with `AutoConfig` and `AutoModel` (`model_type:
vqtok-prior`), so `transformers.AutoModel.from_pretrained` loads a saved prior too.
"""

from transformers import AutoConfig, AutoModel

from .card import render_prior_card, save_prior_card
from .configuration import PriorConfig
from .modeling import TokenPrior
from .sampling import (
    SCHEMES,
    code_counts,
    decode_samples,
    histogram_bits_per_token,
    sample_from_histogram,
    sample_uniform,
)

AutoConfig.register(PriorConfig.model_type, PriorConfig, exist_ok=True)
AutoModel.register(PriorConfig, TokenPrior, exist_ok=True)

__all__ = [
    "SCHEMES",
    "PriorConfig",
    "TokenPrior",
    "code_counts",
    "decode_samples",
    "histogram_bits_per_token",
    "render_prior_card",
    "sample_from_histogram",
    "sample_uniform",
    "save_prior_card",
]
