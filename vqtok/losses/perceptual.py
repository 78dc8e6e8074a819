"""The perceptual loss: LPIPS (VGG16) between the images and their reconstructions, added to the
tokenizer's loss (`objectives: {perceptual: {...}}` in a run config). The VGG16 and the LPIPS heads
are frozen and never saved, in checkpoints or in the tokenizer."""

from __future__ import annotations

import torch

from ..metrics.lpips import LPIPS, smallest_image
from ..options import NON_NEGATIVE, Option, document_options
from .base import ObjectiveInputs, TrainingObjective


@document_options
class PerceptualObjective(TrainingObjective):
    """weight x mean LPIPS(x, x^) over the micro-batch, logged as `perceptual_loss`.

    The VGG16 weights are read when the objective is built (so a run without them fails before
    training starts): from `vgg_weights` when given, else from the torch hub cache, downloaded there
    on first use. `vgg_weights: random` runs the same code with a seeded random VGG16: a plumbing
    check only, no perceptual loss.
    """

    name = "perceptual"
    options = {
        "weight": NON_NEGATIVE(1.0, "Weight of the LPIPS term in the tokenizer's loss (taming, LlamaGen: 1)."),
        "vgg_weights": Option(str, optional=True)(None, (
            "Path to torchvision's VGG16 weights (vgg16-397923af.pth); null: the torch hub cache, downloaded "
            "there on first use; `random`: a seeded random VGG16 (a plumbing check, no perceptual loss).")),
    }

    def __init__(self, **options):
        super().__init__()
        self.set_options(options)
        self.lpips = LPIPS.pretrained(self.vgg_weights)

    def setup(self, tokenizer) -> None:
        channels, side = tokenizer.config.in_channels, tokenizer.config.image_size
        if channels not in (1, 3):
            raise ValueError(f"the perceptual loss compares 1- or 3-channel images; this tokenizer has {channels} channels")
        if side < smallest_image():
            raise ValueError(f"objectives.perceptual: LPIPS's VGG16 takes images of at least {smallest_image()} pixels; "
                             f"the tokenizer's are {side} (model.image_size): train larger images, or without it")

    def tokenizer_losses(self, inputs: ObjectiveInputs) -> dict[str, torch.Tensor]:
        distance = self.lpips(inputs.pixel_values, inputs.output.reconstruction)
        return {"perceptual_loss": self.weight * distance.mean()}
