"""VQ-VAE tokenizer (van den Oord et al. 2017): nearest code with a straight-through gradient; the
codebook is learnt by EMA (default) or by gradient."""

from __future__ import annotations

from ..configuration import VQTokenizerConfig
from ..hub.references import NEURIPS, Paper, QuantizerReference
from ..modeling import VQTokenizerPreTrainedModel
from ..options import document_options
from ..quantizers import VectorQuantizer

VQ_VAE_PAPER = Paper(
    "vandenoord2017neural", "Neural Discrete Representation Learning",
    ("van den Oord, Aaron", "Vinyals, Oriol", "Kavukcuoglu, Koray"), 2017, NEURIPS, volume="30",
    arxiv_id="1711.00937",
)


@document_options
class VQConfig(VQTokenizerConfig, quantizer=VectorQuantizer):
    r"""VQ-VAE tokenizer (van den Oord et al. 2017) with straight-through gradients, optionally with
    EMA codebook updates. Defaults keep the codebook healthy: k-means initialisation on the first
    training batch, EMA updates, and restart of codes that fall out of use.
    """

    model_type = "vqtok-vq"
    reference = QuantizerReference(
        "VQ-VAE", "vq-vae", (VQ_VAE_PAPER,),
        "Nearest-code vector quantization with a straight-through gradient and a commitment loss; the codebook "
        "is learnt by gradient or by exponential moving averages.",
    )


class VQModel(VQTokenizerPreTrainedModel):
    """VQ-VAE tokenizer (`VQConfig`): nearest-code quantization with straight-through gradients."""

    config_class = VQConfig
