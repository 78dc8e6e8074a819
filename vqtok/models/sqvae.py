"""Gaussian SQ-VAE tokenizer (Takida et al. 2022): stochastic quantization with a learned variance
(parameterisations I-IV) that anneals itself, trained with the paper's reconstruction objective."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..configuration import VQTokenizerConfig
from ..losses.likelihoods import arelbo_loss, gaussian_nll
from ..modeling import VQTokenizerPreTrainedModel
from ..options import POSITIVE, Option
from ..quantizers import SQVAEQuantizer
from ..hub.references import ICML, Paper, QuantizerReference

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
ANNEALING_LR_MULTIPLIER = POSITIVE.documented(
    "The learning rate of the posterior's sharpness parameter (sigma^2's scalar s, or kappa's) relative to the "
    "training learning rate. Adam moves a parameter by about one learning rate per step, so at 1 the posterior can "
    "sharpen only by a factor of about e^(steps x lr): fine for the paper's 100k+ steps, too slow for short runs."
)


class SQVAEConfig(VQTokenizerConfig):
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
    quantizer_class = SQVAEQuantizer
    model_options = {
        "reconstruction_objective": Option(str, choices=RECONSTRUCTION_OBJECTIVES, doc=(
            '"arelbo": (D_x / 2) log(SSE / B), the Gaussian likelihood at its maximum-likelihood variance (the '
            'reference\'s default); "gaussian": a Gaussian likelihood with a learned variance sigma_x^2 '
            "(initialised at 0.1)."
        )),
        "annealing_lr_multiplier": ANNEALING_LR_MULTIPLIER,
    }
    option_notes = {
        "reconstruction_loss_weight": "SQ-VAE weighs its objective against R and the entropy term (1 in the "
                                      "paper). Over a short run the encoder cannot yet make sharp posteriors pay off, "
                                      "and at weight 1 R and the entropy term win: the posterior stays diffuse and the "
                                      "decoder learns from blurred code mixtures.",
    }
    reference = QuantizerReference(
        "SQ-VAE (Gaussian)", "sq-vae", (SQVAE_PAPER,),
        "Stochastic quantization: a Gaussian posterior over the codes whose learned variance anneals itself, "
        "a Gumbel-softmax mixture of codes in training, the posterior's mode at encode.",
    )
    paper_settings = dict(
        codebook_size=512, latent_dim=64, variance_init=20.0, latent_scale=1.0, tau_max=1.0, tau_min=0.01,
        tau_decay=math.exp(-1e-5), kmeans_init=False, dead_code_threshold=0.0, reconstruction_loss_weight=1.0,
        annealing_lr_multiplier=1.0,
    )

    variance: str = "I"
    variance_init: float | int = 1.0
    latent_scale: float | int = 4.0
    tau_max: float | int = 1.0
    tau_min: float | int = 0.01
    tau_decay: float = math.exp(-1e-5)
    kmeans_init: bool = True
    kmeans_iters: int = 10
    dead_code_threshold: float | int = 1.0
    reconstruction_objective: str = "arelbo"
    annealing_lr_multiplier: float | int = 10.0
    reconstruction_loss_weight: float | int = 30.0


class SQVAEModel(VQTokenizerPreTrainedModel):
    """Gaussian SQ-VAE tokenizer (`SQVAEConfig`): trains with the reconstruction objective of
    `config.reconstruction_objective` instead of the pixel MSE."""

    config_class = SQVAEConfig

    def __init__(self, config: VQTokenizerConfig):
        super().__init__(config)
        if config.reconstruction_objective == "gaussian":
            self.decoder_log_variance = nn.Parameter(torch.tensor(DECODER_LOG_VARIANCE_INIT))

    def build_optimizer(self, learning_rate: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
        """AdamW with the posterior's sharpness parameters (sigma^2's, or kappa's) in a group of
        their own: learning rate x `annealing_lr_multiplier`, no weight decay."""
        return self.adamw_with_own_group(
            learning_rate, weight_decay, self.quantizer.annealing_parameters(), self.config.annealing_lr_multiplier
        )

    def reconstruction_losses(self, reconstruction, pixel_values, quantized):
        """`reconstruction_loss_weight` x the negative log-likelihood of `reconstruction_objective`,
        summed over each image's values and averaged over the batch."""
        if self.config.reconstruction_objective == "gaussian":
            loss = gaussian_nll(reconstruction, pixel_values, self.decoder_log_variance)
        else:
            loss = arelbo_loss(reconstruction, pixel_values)
        return {"reconstruction_loss": self.config.reconstruction_loss_weight * loss}
