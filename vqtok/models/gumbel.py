"""Gumbel-softmax VQ tokenizer (the vq-wav2vec baseline): hard Gumbel samples in training, the
logits' argmax at encode."""

from __future__ import annotations

import torch

from ..configuration import VQTokenizerConfig
from ..modeling import VQTokenizerPreTrainedModel
from ..options import POSITIVE
from ..quantizers import GumbelQuantizer
from ..hub.references import ICLR, Paper, QuantizerReference

VQ_WAV2VEC_PAPER = Paper(
    "baevski2020vqwav2vec", "vq-wav2vec: Self-Supervised Learning of Discrete Speech Representations",
    ("Baevski, Alexei", "Schneider, Steffen", "Auli, Michael"), 2020, ICLR, arxiv_id="1910.05453",
)
GUMBEL_SOFTMAX_PAPER = Paper(
    "jang2017categorical", "Categorical Reparameterization with Gumbel-Softmax",
    ("Jang, Eric", "Gu, Shixiang", "Poole, Ben"), 2017, ICLR, arxiv_id="1611.01144",
)


class GumbelVQConfig(VQTokenizerConfig):
    r"""Gumbel-softmax VQ tokenizer (the vq-wav2vec baseline): a linear layer maps each latent vector
    to code logits; training samples a hard Gumbel-softmax code (straight-through gradient of the
    soft sample) and hands its learned code vector to the decoder; encoding takes the logits' argmax.

    The class defaults are tuned for short runs on small images (the quickstart's 300 steps on the
    bundled sample set: held-out MSE 0.0066, 96% of the codes used); `GumbelVQConfig.paper_preset()`
    gives the reference settings (the slow temperature schedule, no diversity loss, random
    initialisation, one learning rate for everything).
    """

    model_type = "vqtok-gumbel"
    quantizer_class = GumbelQuantizer
    model_options = {
        "quantizer_lr_multiplier": POSITIVE.documented(
            "The learning rate of the quantizer's parameters (logit layer and code table) relative to the training "
            "learning rate (no weight decay on them). The posterior sharpens only as fast as the logit layer "
            "moves; at the training learning rate (the reference, 1) it stays so flat in a short run that the "
            "decoder learns from nearly random codes."
        ),
    }
    option_notes = {
        "diversity_weight": "It balances `quantizer_lr_multiplier`: with a fast logit layer and a small weight (0.01 "
                            "or less) most codes fall out of use.",
        "kmeans_init": "Gumbel VQ also sets the logit layer to the Gaussian posterior around the centres, "
                       "`logits_k = (||z||^2 - ||z - c_k||^2) / s` with `s` the mean squared distance to the nearest "
                       "centre, so training starts from a posterior that already separates the codes.",
    }
    paper_settings = dict(tau_decay=0.999995, diversity_weight=0.0, kmeans_init=False, quantizer_lr_multiplier=1.0)
    reference = QuantizerReference(
        "Gumbel-softmax VQ", "gumbel-vq", (VQ_WAV2VEC_PAPER, GUMBEL_SOFTMAX_PAPER),
        "Codes chosen by a learnt linear map and a straight-through Gumbel-softmax sample, as in vq-wav2vec.",
    )

    tau_max: float | int = 2.0
    tau_min: float | int = 0.5
    tau_decay: float = 0.995
    diversity_weight: float | int = 0.03
    kmeans_init: bool = True
    kmeans_iters: int = 10
    quantizer_lr_multiplier: float | int = 30.0


class GumbelVQModel(VQTokenizerPreTrainedModel):
    """Gumbel-softmax VQ tokenizer (`GumbelVQConfig`): hard Gumbel samples in training, the logits'
    argmax at encode."""

    config_class = GumbelVQConfig

    def build_optimizer(self, learning_rate: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
        """AdamW with the quantizer's parameters (logit layer and code table) in a group of their own:
        learning rate x `quantizer_lr_multiplier`, no weight decay."""
        return self.adamw_with_own_group(
            learning_rate, weight_decay, list(self.quantizer.parameters()), self.config.quantizer_lr_multiplier
        )
