"""Gumbel-softmax VQ tokenizer (the vq-wav2vec baseline): hard Gumbel samples in training, the
logits' argmax at encode."""

from __future__ import annotations

from ..configuration import VQTokenizerConfig
from ..hub.references import ICLR, Paper, QuantizerReference
from ..modeling import VQTokenizerPreTrainedModel
from ..options import document_options
from ..quantizers import GumbelQuantizer

VQ_WAV2VEC_PAPER = Paper(
    "baevski2020vqwav2vec", "vq-wav2vec: Self-Supervised Learning of Discrete Speech Representations",
    ("Baevski, Alexei", "Schneider, Steffen", "Auli, Michael"), 2020, ICLR, arxiv_id="1910.05453",
)
GUMBEL_SOFTMAX_PAPER = Paper(
    "jang2017categorical", "Categorical Reparameterization with Gumbel-Softmax",
    ("Jang, Eric", "Gu, Shixiang", "Poole, Ben"), 2017, ICLR, arxiv_id="1611.01144",
)


@document_options
class GumbelVQConfig(VQTokenizerConfig, quantizer=GumbelQuantizer):
    r"""Gumbel-softmax VQ tokenizer (the vq-wav2vec baseline): a linear layer maps each latent vector
    to code logits; training samples a hard Gumbel-softmax code (straight-through gradient of the
    soft sample) and hands its learned code vector to the decoder; encoding takes the logits' argmax.

    The class defaults are tuned for short runs on small images (the quickstart's 300 steps on the
    bundled sample set: held-out MSE 0.0066, 96% of the codes used); `GumbelVQConfig.paper_preset()`
    gives the reference settings (the slow temperature schedule, no diversity loss, random
    initialisation, one learning rate for everything).
    """

    model_type = "vqtok-gumbel"
    paper_settings = dict(tau_decay=0.999995, diversity_weight=0.0, kmeans_init=False, quantizer_lr_multiplier=1.0)
    reference = QuantizerReference(
        "Gumbel-softmax VQ", "gumbel-vq", (VQ_WAV2VEC_PAPER, GUMBEL_SOFTMAX_PAPER),
        "Codes chosen by a learnt linear map and a straight-through Gumbel-softmax sample, as in vq-wav2vec.",
    )


class GumbelVQModel(VQTokenizerPreTrainedModel):
    """Gumbel-softmax VQ tokenizer (`GumbelVQConfig`): hard Gumbel samples in training, the logits'
    argmax at encode."""

    config_class = GumbelVQConfig
