"""Soft VQ tokenizer trained by EM (Roy et al. 2018): sampled soft assignments in training, the
nearest code at encode."""

from __future__ import annotations

from ..configuration import VQTokenizerConfig
from ..hub.references import ARXIV, Paper, QuantizerReference
from ..modeling import VQTokenizerPreTrainedModel
from ..options import document_options
from ..quantizers import SoftVQQuantizer

SOFT_EM_PAPER = Paper(
    "roy2018theory", "Theory and Experiments on Vector Quantized Autoencoders",
    ("Roy, Aurko", "Vaswani, Ashish", "Neelakantan, Arvind", "Parmar, Niki"), 2018, ARXIV, kind="article",
    arxiv_id="1805.11063",
)


@document_options
class SoftVQConfig(VQTokenizerConfig, quantizer=SoftVQQuantizer):
    r"""Soft VQ tokenizer trained by EM (Roy et al. 2018): in training each latent vector is
    replaced by the mean of `num_samples` codes drawn from the posterior
    p(k|z) = softmax(-||z - e_k||^2 / temperature) (straight-through to the encoder), and the
    codebook follows the soft assignments by a Laplace-smoothed EMA (soft M-step). Encoding takes
    the nearest code (the posterior's mode).

    The class defaults are tuned for short runs on small images (the quickstart's 300 steps on the
    bundled sample set: held-out MSE 0.0057, 99.8% of the codes used);
    `SoftVQConfig.paper_preset()` gives the reference settings (gamma = 0.999, T = 1, no restarts,
    random initial codes).
    """

    model_type = "vqtok-softvq"
    paper_settings = dict(ema_decay=0.999, temperature=1.0, dead_code_threshold=0.0, kmeans_init=False)
    reference = QuantizerReference(
        "Soft (EM) VQ-VAE", "soft-vq-vae", (SOFT_EM_PAPER,),
        "Soft expectation-maximisation quantization: codes are sampled from a softmax over negative distances "
        "and the codebook follows soft EMA (M-step) updates.",
    )


class SoftVQModel(VQTokenizerPreTrainedModel):
    """Soft VQ tokenizer trained by EM (`SoftVQConfig`): sampled soft assignments in training,
    nearest code at encode."""

    config_class = SoftVQConfig
