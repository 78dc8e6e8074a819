"""Inception-v3 pool3 features (2048-d), the features FID is computed on (Heusel et al. 2017), so
that rFID here is comparable with the figures papers report.

The network is the TensorFlow graph `inception-2015-12-05` (Szegedy et al. 2016, "Rethinking the
Inception Architecture for Computer Vision") that the reference FID code runs, with torch-fidelity's
PyTorch conversion of its weights (`INCEPTION_WEIGHTS`). That graph differs from torchvision's
Inception-v3 in ways that change the features:

- the average pools inside the mixed blocks divide by the number of pixels inside the image (TF's
  SAME padding), not by the full 3 x 3 window;
- the pool branch of the last block (`Mixed_7c`) is a max pool, not an average pool;
- BatchNorm uses eps = 1e-3 and the convolutions have no bias;
- images are uint8 pixels, resized to 299 x 299 with TensorFlow 1's bilinear rule
  (`tf1_bilinear_resize`), then scaled by (x - 128) / 128.

Images in [-1, 1] are first quantised to the uint8 pixels a saved PNG would hold, so the rFID of a
tokenizer's reconstructions equals the FID of those reconstructions written to disk.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from .weights import RANDOM_WEIGHTS, PretrainedWeights, load_matching

INCEPTION_WEIGHTS = PretrainedWeights(
    name="Inception-v3 for FID (torch-fidelity's port of TensorFlow's 2015-12-05 graph)",
    filename="weights-inception-2015-12-05-6726825d.pth",
    url="https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
    option="`InceptionFeatures.pretrained(PATH)` (vqtok.metrics) or `--inception_weights PATH` "
    "(`vqtok evaluate`, which skips rFID with `--no_rfid`)",
)

INPUT_SIZE = 299
FEATURE_DIM = 2048
_BATCH_NORM_EPS = 1e-3
# Seed of the random network built for plumbing checks (`RANDOM_WEIGHTS`).
RANDOM_SEED = 0


def tf1_bilinear_resize(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Resize float images `[B, C, H, W]` to `[B, C, size, size]` (or `size = (height, width)`) as
    TensorFlow 1's `tf.image.resize_bilinear` does with `align_corners=False`.

    TF1 has no half-pixel centres: output pixel i samples the input at `i * (in / out)` (scale and
    position in float32), interpolating between floor of that and the next pixel (clamped to the
    last one), first along the width and then along the height. PyTorch's `interpolate` samples at
    `(i + 0.5) * in / out - 0.5` instead, which shifts the image and changes FID."""
    if images.ndim != 4:
        raise ValueError(f"tf1_bilinear_resize takes images [B, C, H, W], got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"tf1_bilinear_resize takes float images, got dtype {images.dtype}")
    height, width = (size, size) if isinstance(size, int) else size
    if height < 1 or width < 1:
        raise ValueError(f"tf1_bilinear_resize needs a positive size, got {size}")
    rows_low, rows_high, row_weight = _tf1_samples(images.shape[2], height, images.device)
    cols_low, cols_high, col_weight = _tf1_samples(images.shape[3], width, images.device)
    col_weight = col_weight.to(images.dtype)
    row_weight = row_weight.to(images.dtype).view(-1, 1)

    def along_width(rows: torch.Tensor) -> torch.Tensor:
        left, right = rows.index_select(3, cols_low), rows.index_select(3, cols_high)
        return left + (right - left) * col_weight

    top = along_width(images.index_select(2, rows_low))
    bottom = along_width(images.index_select(2, rows_high))
    return top + (bottom - top) * row_weight


def _tf1_samples(in_size: int, out_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The two input indices each output index interpolates between, and the weight of the second."""
    scale = torch.tensor(in_size, dtype=torch.float32) / out_size  # TF divides in float32
    position = torch.arange(out_size, dtype=torch.float32) * scale
    low = position.floor()
    high = (low + 1).clamp_max(in_size - 1)
    return low.long().to(device), high.long().to(device), (position - low).to(device)


class FrozenBatchNorm(nn.Module):
    """BatchNorm at inference (running statistics only) with TensorFlow's eps. Its state is the four
    tensors the converted weights file holds per layer: no `num_batches_tracked` counter."""

    def __init__(self, channels: int, eps: float = _BATCH_NORM_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(hidden, self.running_mean, self.running_var, self.weight, self.bias,
                            training=False, eps=self.eps)


class ConvBN(nn.Module):
    """Convolution without bias, BatchNorm, ReLU: every layer of the graph (`<name>.conv`, `<name>.bn`)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int = 1, padding: int | tuple[int, int] = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = FrozenBatchNorm(out_channels)
        # Variance-preserving through ReLUs, so a seeded random network's features stay of order one.
        nn.init.kaiming_normal_(self.conv.weight, nonlinearity="relu")

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(hidden)))


def _chain(hidden: torch.Tensor, *layers: nn.Module) -> torch.Tensor:
    for layer in layers:
        hidden = layer(hidden)
    return hidden


def _average_pool_inside(hidden: torch.Tensor) -> torch.Tensor:
    """3 x 3, stride 1 average over the pixels inside the image (TF's SAME average pool)."""
    return F.avg_pool2d(hidden, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class Block35(nn.Module):
    """The 35 x 35 mixed block (`Mixed_5b`-`Mixed_5d`): 1x1, 5x5, double 3x3 and pooled 1x1 branches;
    224 + `pool_channels` output channels."""

    def __init__(self, in_channels: int, pool_channels: int):
        super().__init__()
        self.branch1x1 = ConvBN(in_channels, 64, 1)
        self.branch5x5_1 = ConvBN(in_channels, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(in_channels, pool_channels, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(hidden),
            _chain(hidden, self.branch5x5_1, self.branch5x5_2),
            _chain(hidden, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
            self.branch_pool(_average_pool_inside(hidden)),
        ], dim=1)


class Reduction35(nn.Module):
    """35 x 35 -> 17 x 17 (`Mixed_6a`): strided 3x3, strided double 3x3 and max-pool branches."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3 = ConvBN(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(in_channels, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch3x3(hidden),
            _chain(hidden, self.branch3x3dbl_1, self.branch3x3dbl_2, self.branch3x3dbl_3),
            F.max_pool2d(hidden, kernel_size=3, stride=2),
        ], dim=1)


class Block17(nn.Module):
    """The 17 x 17 mixed block (`Mixed_6b`-`Mixed_6e`): 7x7 convolutions factorised into 1x7 and 7x1,
    `mid_channels` wide inside the branches; 768 output channels."""

    def __init__(self, in_channels: int, mid_channels: int):
        super().__init__()
        mid = mid_channels
        self.branch1x1 = ConvBN(in_channels, 192, 1)
        self.branch7x7_1 = ConvBN(in_channels, mid, 1)
        self.branch7x7_2 = ConvBN(mid, mid, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(mid, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(in_channels, mid, 1)
        self.branch7x7dbl_2 = ConvBN(mid, mid, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(mid, mid, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(mid, mid, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(mid, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            self.branch1x1(hidden),
            _chain(hidden, self.branch7x7_1, self.branch7x7_2, self.branch7x7_3),
            _chain(hidden, self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                   self.branch7x7dbl_5),
            self.branch_pool(_average_pool_inside(hidden)),
        ], dim=1)


class Reduction17(nn.Module):
    """17 x 17 -> 8 x 8 (`Mixed_7a`): strided 3x3, factorised 7x7 then strided 3x3, and max-pool branches."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.branch3x3_1 = ConvBN(in_channels, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(in_channels, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            _chain(hidden, self.branch3x3_1, self.branch3x3_2),
            _chain(hidden, self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4),
            F.max_pool2d(hidden, kernel_size=3, stride=2),
        ], dim=1)


class Block8(nn.Module):
    """The 8 x 8 mixed block (`Mixed_7b`, `Mixed_7c`): 3x3 convolutions split into parallel 1x3 and
    3x1 halves; 2048 output channels. `pool` is "average" (`Mixed_7b`) or "max" (`Mixed_7c`: so it
    is in the 2015-12-05 graph)."""

    def __init__(self, in_channels: int, pool: str):
        super().__init__()
        if pool not in ("average", "max"):
            raise ValueError(f"pool must be 'average' or 'max', got {pool!r}")
        self.pool = pool
        self.branch1x1 = ConvBN(in_channels, 320, 1)
        self.branch3x3_1 = ConvBN(in_channels, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(in_channels, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(in_channels, 192, 1)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        narrow = self.branch3x3_1(hidden)
        double = _chain(hidden, self.branch3x3dbl_1, self.branch3x3dbl_2)
        if self.pool == "average":
            pooled = _average_pool_inside(hidden)
        else:
            pooled = F.max_pool2d(hidden, kernel_size=3, stride=1, padding=1)
        return torch.cat([
            self.branch1x1(hidden),
            self.branch3x3_2a(narrow), self.branch3x3_2b(narrow),
            self.branch3x3dbl_3a(double), self.branch3x3dbl_3b(double),
            self.branch_pool(pooled),
        ], dim=1)


class InceptionFeatures(nn.Module):
    """Inception-v3's 2048-d pool3 features of images, the features of FID.

    `InceptionFeatures()` is randomly initialised; `InceptionFeatures.pretrained(...)` loads the real
    network. Frozen and always in evaluation mode, computed in float32 without gradients.
    `forward(images) -> [B, 2048]` takes float images `[B, 1 or 3, H, W]` in [-1, 1] (1 channel is
    repeated to 3) of any size: they are quantised to uint8 pixels, resized to 299 x 299 with
    TensorFlow 1's bilinear rule and scaled to [-1, 1) as the TensorFlow graph does. Module names are
    those of the weights file; its classifier (`fc.*`) is not part of this network.
    """

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = Block35(192, pool_channels=32)
        self.Mixed_5c = Block35(256, pool_channels=64)
        self.Mixed_5d = Block35(288, pool_channels=64)
        self.Mixed_6a = Reduction35(288)
        self.Mixed_6b = Block17(768, mid_channels=128)
        self.Mixed_6c = Block17(768, mid_channels=160)
        self.Mixed_6d = Block17(768, mid_channels=160)
        self.Mixed_6e = Block17(768, mid_channels=192)
        self.Mixed_7a = Reduction17(768)
        self.Mixed_7b = Block8(1280, pool="average")
        self.Mixed_7c = Block8(2048, pool="max")
        self.requires_grad_(False)
        self.eval()

    @property
    def dim(self) -> int:
        return FEATURE_DIM

    @classmethod
    def pretrained(cls, path: str | os.PathLike | None = None, download: bool = True) -> "InceptionFeatures":
        """The FID network with the weights `INCEPTION_WEIGHTS.load(path, download)` finds (a path, the
        torch hub cache, or a download on first use), loaded strictly: a file that lacks a tensor or
        holds one of another shape is refused with a `ValueError` naming it.

        `path="random"` (`RANDOM_WEIGHTS`) builds a seeded random network instead, the same whatever
        the global seed: a plumbing check of the code path whose figures are no FID."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            model = cls()
        if path != RANDOM_WEIGHTS:
            state = INCEPTION_WEIGHTS.load(path, download)
            load_matching(model, state, INCEPTION_WEIGHTS, ignore=("fc.",))
        return model

    def train(self, mode: bool = True) -> "InceptionFeatures":
        return super().train(False)  # always in evaluation mode (BatchNorm on its running statistics)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"InceptionFeatures takes images [B, 1 or 3, H, W], got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"InceptionFeatures takes float images in [-1, 1], got dtype {images.dtype} "
                             "(scale uint8 pixels with x / 127.5 - 1)")
        with torch.autocast(images.device.type, enabled=False):
            # The uint8 pixels a saved image would hold (as vqtok.processing.to_uint8_images rounds).
            pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round()
            pixels = tf1_bilinear_resize(pixels.expand(-1, 3, -1, -1), INPUT_SIZE)
            hidden = (pixels - 128) / 128
            hidden = _chain(hidden, self.Conv2d_1a_3x3, self.Conv2d_2a_3x3, self.Conv2d_2b_3x3)
            hidden = F.max_pool2d(hidden, kernel_size=3, stride=2)
            hidden = _chain(hidden, self.Conv2d_3b_1x1, self.Conv2d_4a_3x3)
            hidden = F.max_pool2d(hidden, kernel_size=3, stride=2)
            hidden = _chain(hidden, self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                            self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c)
            return F.adaptive_avg_pool2d(hidden, 1).flatten(1)
