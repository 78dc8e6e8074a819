"""Gumbel-softmax VQ tokenizer (the vq-wav2vec baseline): hard Gumbel samples in training, the
logits' argmax at encode."""

from __future__ import annotations

from ..configuration import VQTokenizerConfig
from ..modeling import VQTokenizerPreTrainedModel
from ..quantizers import GumbelQuantizer
from ..references import ICLR, Paper, QuantizerReference

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

    Args:
        tau_max (`float`, defaults to 2.0):
            Gumbel-softmax temperature at the first training step.
        tau_min (`float`, defaults to 0.5):
            Floor of the temperature; must not exceed `tau_max`.
        tau_decay (`float`, defaults to 0.999995):
            delta: the temperature at training forward j is `max(tau_max * delta**j, tau_min)`. The
            step j is saved with the weights, so a resumed run continues the schedule.
        diversity_weight (`float`, defaults to 0.0):
            Weight of the diversity loss `(K - perplexity(batch-mean softmax)) / K`, which spreads
            the use over the codebook (0 leaves it out).
    """

    model_type = "vqtok-gumbel"
    quantizer_class = GumbelQuantizer
    reference = QuantizerReference(
        "Gumbel-softmax VQ", "gumbel-vq", (VQ_WAV2VEC_PAPER, GUMBEL_SOFTMAX_PAPER),
        "Codes chosen by a learnt linear map and a straight-through Gumbel-softmax sample, as in vq-wav2vec.",
    )

    tau_max: float | int = 2.0
    tau_min: float | int = 0.5
    tau_decay: float = 0.999995
    diversity_weight: float | int = 0.0


class GumbelVQModel(VQTokenizerPreTrainedModel):
    """Gumbel-softmax VQ tokenizer (`GumbelVQConfig`): hard Gumbel samples in training, the logits'
    argmax at encode."""

    config_class = GumbelVQConfig
