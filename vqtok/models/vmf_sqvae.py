"""von Mises-Fisher SQ-VAE tokenizer (Takida et al. 2022): stochastic quantization of normalised
latents on the sphere, with the vMF decoder likelihood for categorical images as an option."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..configuration import VQTokenizerConfig
from ..modeling import image_size_for
from ..hub.references import QuantizerReference
from ..losses.likelihoods import vmf_categorical_nll
from ..options import Option, document_options
from ..quantizers import VMFSQVAEQuantizer
from .sqvae import RECONSTRUCTION_OBJECTIVES, SQVAE_PAPER, SQVAEConfig, SQVAEModel

# log kappa_x of the categorical vMF likelihood at initialisation (the reference's kappa = 100).
DECODER_LOG_CONCENTRATION_INIT = math.log(100.0)
# A categorical image stores category c as the grey level c (uint8), so at most 256 categories.
MAX_CATEGORIES = 256


@document_options
class VMFSQVAEConfig(VQTokenizerConfig, quantizer=VMFSQVAEQuantizer):
    r"""von Mises-Fisher SQ-VAE tokenizer (Takida et al. 2022). Latents and codes are normalised to
    the unit sphere; the posterior over codes is P(k|z) proportional to exp(kappa z.b_k) with
    kappa = exp(s) + 1 learned (it rises during training: self-annealing); training hands the
    decoder a Gumbel-softmax mixture of codes; the loss is the reconstruction objective,
    R = kappa sum z.(z - z~) and the posterior's negative entropy. Encoding takes the posterior's
    argmax.

    The class defaults are tuned for short runs on small images (the quickstart's 300 steps);
    `VMFSQVAEConfig.paper_preset()` gives the reference settings.

    For categorical images (label maps), `reconstruction_objective="vmf"` scores the decoder with
    the von Mises-Fisher likelihood the paper uses on segmentation maps: the images are grey
    (`in_channels=1`) and pixel grey level c (0..255 in the file) is category c; the decoder outputs
    one channel per category, and `decode` returns the grey level of the highest-scoring category.
    """

    model_type = "vqtok-vmf-sqvae"
    options = {
        "reconstruction_objective": Option(str, choices=(*RECONSTRUCTION_OBJECTIVES, "vmf"))("arelbo", (
            '"arelbo" or "gaussian" for ordinary images (see `SQVAEConfig`), "vmf" for categorical images (needs '
            "`num_categories` and `in_channels=1`)."
        )),
        "num_categories": Option(int, low=2, high=MAX_CATEGORIES, optional=True)(None, (
            'Number of categories C of a categorical image (2..256) when `reconstruction_objective` is "vmf".'
        )),
        "reconstruction_loss_weight": SQVAEConfig.options["reconstruction_loss_weight"],
    }
    reference = QuantizerReference(
        "SQ-VAE (von Mises-Fisher)", "sq-vae", (SQVAE_PAPER,),
        "Stochastic quantization on the unit sphere: a von Mises-Fisher posterior over the codes whose learned "
        "concentration anneals itself, a Gumbel-softmax mixture of codes in training, the posterior's mode at encode.",
    )
    paper_settings = dict(
        codebook_size=512, latent_dim=64, kappa_init=1.05, tau_max=1.0, tau_min=0.01, tau_decay=math.exp(-1e-5),
        kmeans_init=False, dead_code_threshold=0.0, reconstruction_loss_weight=1.0, quantizer_lr_multiplier=1.0,
    )

    def check(self) -> None:
        super().check()
        categorical = self.reconstruction_objective == "vmf"
        if categorical and (self.num_categories is None or self.in_channels != 1):
            raise ValueError(
                "config field `reconstruction_objective` 'vmf' (categorical images) needs `num_categories` and "
                f"`in_channels=1`, got num_categories={self.num_categories}, in_channels={self.in_channels}"
            )
        if not categorical and self.num_categories is not None:
            raise ValueError(
                f"config field `num_categories` ({self.num_categories}) is only used with "
                f"`reconstruction_objective='vmf'`, got {self.reconstruction_objective!r}"
            )


def categories_from_pixels(pixel_values: torch.Tensor, num_categories: int) -> torch.Tensor:
    """Category ids `[B, H, W]` of grey images `[B, 1, H, W]` in [-1, 1] (grey level c = category c)."""
    labels = torch.round((pixel_values[:, 0].float() + 1.0) * 127.5).long()
    if int(labels.max()) >= num_categories:
        raise ValueError(
            f"categorical images must hold grey levels 0..{num_categories - 1} (num_categories={num_categories}), "
            f"got a pixel of grey level {int(labels.max())}"
        )
    return labels


class VMFSQVAEModel(SQVAEModel):
    """vMF SQ-VAE tokenizer (`VMFSQVAEConfig`)."""

    config_class = VMFSQVAEConfig

    def __init__(self, config: VMFSQVAEConfig):
        super().__init__(config)
        if config.reconstruction_objective == "vmf":
            self.decoder_log_concentration = nn.Parameter(torch.tensor(DECODER_LOG_CONCENTRATION_INIT))

    @property
    def categorical(self) -> bool:
        return self.config.reconstruction_objective == "vmf"

    def build_decoder(self, config):
        """One output channel per category for categorical images, the image channels otherwise."""
        if config.reconstruction_objective == "vmf":
            return config.backbone_config.build_decoder(config.latent_dim, config.num_categories, **image_size_for(config))
        return super().build_decoder(config)

    def images_from_decoder_output(self, output):
        """Categorical images: the grey level (in [-1, 1]) of each pixel's highest-scoring category."""
        if not self.categorical:
            return super().images_from_decoder_output(output)
        return output.argmax(dim=1, keepdim=True).to(output.dtype) / 127.5 - 1.0

    def check_images(self, pixel_values):
        """Also, for categorical images: every grey level names a category (checked before the
        quantizer's codebook, usage or temperature move)."""
        super().check_images(pixel_values)
        if self.categorical:
            categories_from_pixels(pixel_values, self.config.num_categories)

    def reconstruction_losses(self, reconstruction, pixel_values, quantized):
        if not self.categorical:
            return super().reconstruction_losses(reconstruction, pixel_values, quantized)
        labels = categories_from_pixels(pixel_values, self.config.num_categories)
        loss = vmf_categorical_nll(reconstruction, labels, self.decoder_log_concentration)
        return {"reconstruction_loss": self.config.reconstruction_loss_weight * loss}
