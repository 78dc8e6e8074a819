"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), version 0.1 on VGG16: the perceptual distance the field reports and trains with.

    d(x, y) = sum_l mean_hw  w_l . (n_l(x) - n_l(y))^2,

n_l the VGG16 activations after relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3, each unit-normalised
over its channels, and w_l >= 0 a learnt linear head per layer. Images are in [-1, 1] and are
shifted and scaled per channel before VGG, as the paper's network expects.

The VGG16 backbone is torchvision's ImageNet network (`VGG16_WEIGHTS`: the torch hub cache, a path,
or a download on first use); the linear heads are the paper's v0.1 heads that ship inside the
`torchmetrics` wheel. Both are frozen, and nothing here is ever saved into a tokenizer.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..validation import check_pixel_range
from .weights import RANDOM_WEIGHTS, PretrainedWeights, load_matching

VGG16_WEIGHTS = PretrainedWeights(
    name="VGG16 (torchvision's ImageNet weights, the LPIPS backbone)",
    filename="vgg16-397923af.pth",
    url="https://download.pytorch.org/models/vgg16-397923af.pth",
    option="`vgg_weights: PATH` (objectives.perceptual), `LPIPS.pretrained(vgg_weights=PATH)` (vqtok.metrics) or `--vgg_weights PATH` "
    "(`vqtok evaluate`, which skips LPIPS with `--no_lpips`)",
)

# torchvision's VGG16 ("configuration D"): output channels of each 3x3 conv, "M" a 2x2 max-pool. The
# `features.<i>` names of its weights count every conv, ReLU and pool in this order.
_VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# The activations LPIPS compares: after relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (indices into `features`).
_LPIPS_TAPS = (3, 8, 15, 22, 29)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# The per-channel shift and scale LPIPS applies to [-1, 1] images before VGG.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_NORM_EPS = 1e-10
# Seed of the random networks built for plumbing checks (`RANDOM_WEIGHTS`).
RANDOM_SEED = 0


def smallest_image() -> int:
    """The least image side LPIPS takes: each 2x pooling before its last tap halves the side, which
    must still be one pixel there."""
    last_tap = max(_LPIPS_TAPS)
    pools = [index for index, width in enumerate(_feature_layers()) if width == "M" and index < last_tap]
    return 2 ** len(pools)


def _feature_layers() -> list:
    """`features.<i>`'s layer kinds, in torchvision's numbering: "M" for a pooling, a width for a
    convolution (whose ReLU follows as the next index)."""
    return [kind for width in _VGG16_LAYERS for kind in (["M"] if width == "M" else [width, "relu"])]


class VGG16Features(nn.Module):
    """The convolutional part of VGG16 up to relu5_3, under torchvision's names (`features.<i>`);
    `forward` returns the activations at `taps`."""

    def __init__(self, taps: tuple[int, ...] = _LPIPS_TAPS):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for width in _VGG16_LAYERS:
            if width == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
                channels = width
        self.features = nn.Sequential(*layers)
        self.taps = taps

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        hidden = images
        for index, layer in enumerate(self.features):
            hidden = layer(hidden)
            if index in self.taps:
                outputs.append(hidden)
        return outputs


def lpips_heads_path() -> str:
    """The LPIPS v0.1 VGG linear heads that ship inside the `torchmetrics` wheel."""
    try:
        import torchmetrics
    except ImportError as error:
        raise ImportError("LPIPS reads its linear heads from the torchmetrics package: pip install torchmetrics") from error
    path = os.path.join(os.path.dirname(torchmetrics.__file__), "functional", "image", "lpips_models", "vgg.pth")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the LPIPS heads are missing from the installed torchmetrics ({path}); reinstall it")
    return path


class LPIPS(nn.Module):
    """The LPIPS v0.1 (VGG16) distance between two batches of images in [-1, 1].

    `LPIPS()` is randomly initialised; `LPIPS.pretrained(...)` loads the real network. Frozen: its
    parameters take no gradient, but gradients flow through it to the images (a training loss).
    `forward(x, y) -> [B]` distances; 1-channel images are repeated to 3 channels.
    """

    def __init__(self):
        super().__init__()
        self.vgg = VGG16Features()
        self.heads = nn.ModuleList(nn.Conv2d(channels, 1, 1, bias=False) for channels in LPIPS_CHANNELS)
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def pretrained(cls, vgg_weights: str | os.PathLike | None = None, download: bool = True) -> "LPIPS":
        """LPIPS with torchvision's VGG16 (found by `VGG16_WEIGHTS.locate(vgg_weights, download)`)
        and the paper's heads. `vgg_weights="random"` builds a seeded random VGG16 instead: a plumbing
        check of the code path whose figures are no perceptual measure."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            model = cls()
        if vgg_weights != RANDOM_WEIGHTS:
            state = VGG16_WEIGHTS.load(vgg_weights, download)
            load_matching(model.vgg, state, VGG16_WEIGHTS, ignore=("classifier.",))
        heads = torch.load(lpips_heads_path(), map_location="cpu", weights_only=True)
        with torch.no_grad():
            for index, head in enumerate(model.heads):
                head.weight.copy_(heads[f"lin{index}.model.1.weight"])
        return model

    def train(self, mode: bool = True) -> "LPIPS":
        return super().train(False)  # always in evaluation mode (no dropout, no statistics)

    def forward(self, images: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
        """The distance of each image of `images` (reference images in [-1, 1]) to the same one of
        `others` (images in the same range; a decoder's output may stray a little outside it)."""
        if images.shape != others.shape:
            raise ValueError(f"LPIPS compares images of one shape, got {tuple(images.shape)} and {tuple(others.shape)}")
        check_pixel_range(images, "the reference images LPIPS compares")
        both = self._prepared(torch.cat([images, others]))
        distance = 0.0
        for features, head in zip(self.vgg(both), self.heads):
            features = features.float()
            features = features / (features.pow(2).sum(dim=1, keepdim=True).sqrt() + _NORM_EPS)
            first, second = features.chunk(2)
            weighted = (first - second).pow(2) * head.weight.float().view(1, -1, 1, 1)
            distance = distance + weighted.sum(dim=1).mean(dim=(1, 2))
        return distance

    def _prepared(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"LPIPS takes images [B, 1 or 3, H, W], got shape {tuple(images.shape)}")
        if min(images.shape[-2:]) < smallest_image():
            side = smallest_image()
            raise ValueError(f"LPIPS takes images of at least {side}x{side} pixels (its VGG16 halves the image side "
                             f"{side.bit_length() - 1} times before its last layer), got {tuple(images.shape[-2:])}")
        if not images.is_floating_point():
            raise ValueError(f"LPIPS takes float images in [-1, 1], got dtype {images.dtype}")
        images = images.expand(-1, 3, -1, -1)
        shift = images.new_tensor(_SHIFT).view(1, 3, 1, 1)
        scale = images.new_tensor(_SCALE).view(1, 3, 1, 1)
        return (images - shift) / scale
