"""Gaussian SQ-VAE tokenizer (Takida et al. 2022): stochastic quantization with a learned variance
(parameterisations I-IV) that anneals itself, trained with the paper's reconstruction objective."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..configuration import VQTokenizerConfig
from ..hub.references import ICML, Paper, QuantizerReference
from ..losses.likelihoods import arelbo_loss, gaussian_nll
from ..modeling import VQTokenizerPreTrainedModel
from ..options import Option, document_options
from ..quantizers import SQVAEQuantizer

SQVAE_PAPER = Paper(
    "takida2022sqvae", "SQ-VAE: Variational Bayes on Discrete Representation with Self-annealed Stochastic Quantization",
    (
        "Takida, Yuhta", "Shibuya, Takashi", "Liao, WeiHsiang", "Lai, Chieh-Hsin", "Ohmura, Junki",
        "Uesaka, Toshimitsu", "Murata, Naoki", "Takahashi, Shusuke", "Kumakura, Toshiyuki", "Mitsufuji, Yuki",
    ),
    2022, ICML, arxiv_id="2205.07547",
)

# The Gaussian decoder's log sigma_x^2 at initialisation when it is learned (the reference's log 0.1).
DECODER_LOG_VARIANCE_INIT = math.log(0.1)
RECONSTRUCTION_OBJECTIVES = ("arelbo", "gaussian")


@document_options
class SQVAEConfig(VQTokenizerConfig, quantizer=SQVAEQuantizer):
    r"""Gaussian SQ-VAE tokenizer (Takida et al. 2022). In training each latent vector is replaced by
    a Gumbel-softmax mixture of codes drawn from the posterior P(k|z) proportional to
    exp(-||z - b_k||^2 / (2 sigma^2)); the loss is the reconstruction objective, R = sum (z - z~)^2 /
    (2 sigma^2) and the posterior's negative entropy. sigma^2 = exp(l) + exp(s) is learned, and
    falls during training (self-annealing), sharpening the posterior. Encoding takes the
    posterior's argmax.

    The class defaults are tuned for short runs on small images (the quickstart's 300 steps);
    `SQVAEConfig.paper_preset()` gives the reference settings.
    """

    model_type = "vqtok-sqvae"
    options = {
        "reconstruction_objective": Option(str, choices=RECONSTRUCTION_OBJECTIVES)("arelbo", (
            '"arelbo": (D_x / 2) log(SSE / B), the Gaussian likelihood at its maximum-likelihood variance (the '
            'reference\'s default); "gaussian": a Gaussian likelihood with a learned variance sigma_x^2 '
            "(initialised at 0.1)."
        )),
        "reconstruction_loss_weight": VQTokenizerConfig.options["reconstruction_loss_weight"].changed(30.0, (
            "SQ-VAE weighs its objective against R and the entropy term (1 in the paper). Over a short run the "
            "encoder cannot yet make sharp posteriors pay off, and at weight 1 R and the entropy term win: the "
            "posterior stays diffuse and the decoder learns from blurred code mixtures."
        )),
    }
    reference = QuantizerReference(
        "SQ-VAE (Gaussian)", "sq-vae", (SQVAE_PAPER,),
        "Stochastic quantization: a Gaussian posterior over the codes whose learned variance anneals itself, "
        "a Gumbel-softmax mixture of codes in training, the posterior's mode at encode.",
    )
    paper_settings = dict(
        codebook_size=512, latent_dim=64, variance_init=20.0, latent_scale=1.0, tau_max=1.0, tau_min=0.01,
        tau_decay=math.exp(-1e-5), kmeans_init=False, dead_code_threshold=0.0, reconstruction_loss_weight=1.0,
        quantizer_lr_multiplier=1.0,
    )


class SQVAEModel(VQTokenizerPreTrainedModel):
    """Gaussian SQ-VAE tokenizer (`SQVAEConfig`): trains with the reconstruction objective of
    `config.reconstruction_objective` instead of the pixel MSE."""

    config_class = SQVAEConfig

    def __init__(self, config: VQTokenizerConfig):
        super().__init__(config)
        if config.reconstruction_objective == "gaussian":
            self.decoder_log_variance = nn.Parameter(torch.tensor(DECODER_LOG_VARIANCE_INIT))

    def reconstruction_losses(self, reconstruction, pixel_values, quantized):
        """`reconstruction_loss_weight` x the negative log-likelihood of `reconstruction_objective`,
        summed over each image's values and averaged over the batch."""
        if self.config.reconstruction_objective == "gaussian":
            loss = gaussian_nll(reconstruction, pixel_values, self.decoder_log_variance)
        else:
            loss = arelbo_loss(reconstruction, pixel_values)
        return {"reconstruction_loss": self.config.reconstruction_loss_weight * loss}
