"""VQ-VAE tokenizer (van den Oord et al. 2017): nearest code with a straight-through gradient; the
codebook is learnt by EMA (default) or by gradient."""

from __future__ import annotations

from ..configuration import VQTokenizerConfig
from ..modeling import VQTokenizerPreTrainedModel
from ..quantizers import VectorQuantizer
from ..hub.references import ROTATION_TRICK_PAPER, NEURIPS, Paper, QuantizerReference

VQ_VAE_PAPER = Paper(
    "vandenoord2017neural", "Neural Discrete Representation Learning",
    ("van den Oord, Aaron", "Vinyals, Oriol", "Kavukcuoglu, Koray"), 2017, NEURIPS, volume="30",
    arxiv_id="1711.00937",
)


class LearntCodebookConfig(VQTokenizerConfig):
    r"""The fields of the types whose codebook learns as VQ-VAE's does (by EMA or by gradient, from a
    k-means start, with dead-code restarts) under a commitment loss: `vqtok-vq`, `vqtok-rvq` and
    `vqtok-msrvq` subclass it. Not a type of its own.
    """

    commitment_cost: float | int = 0.25
    use_ema: bool = True
    ema_decay: float = 0.99
    ema_epsilon: float = 1e-5
    kmeans_init: bool = True
    kmeans_iters: int = 10
    dead_code_threshold: float | int = 1.0


class VQConfig(LearntCodebookConfig):
    r"""VQ-VAE tokenizer (van den Oord et al. 2017) with straight-through gradients, optionally with
    EMA codebook updates. Defaults keep the codebook healthy: k-means initialisation on the first
    training batch, EMA updates, and restart of codes that fall out of use.
    """

    model_type = "vqtok-vq"
    quantizer_class = VectorQuantizer
    option_papers = {"rotation_trick": ROTATION_TRICK_PAPER}
    reference = QuantizerReference(
        "VQ-VAE", "vq-vae", (VQ_VAE_PAPER,),
        "Nearest-code vector quantization with a straight-through gradient and a commitment loss; the codebook "
        "is learnt by gradient or by exponential moving averages.",
    )

    use_cosine: bool = False
    rotation_trick: bool = False


class VQModel(VQTokenizerPreTrainedModel):
    """VQ-VAE tokenizer (`VQConfig`): nearest-code quantization with straight-through gradients."""

    config_class = VQConfig
