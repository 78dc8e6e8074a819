"""How good a tokenizer is, in one room: the measures of its reconstructions (pixel MSE, PSNR, SSIM:
`pixels`; LPIPS: `lpips`; the Fréchet distance of Inception features, rFID, or of a seeded random
conv net's: `frechet`, `inception`; the high-frequency energy ratio, sharpness: `spectrum`), with the
frozen judging networks' weights found or downloaded (`weights`); `evaluate_tokenizer`, which runs
them and the codebook's use and topology over a held-out dataset (`evaluation`); and the pictures
drawn from them (`pictures`)."""

from .evaluation import codebook_topology, evaluate_tokenizer
from .frechet import FeatureStatistics, RandomConvFeatures, frechet_distance, frechet_distance_of
from .inception import INCEPTION_WEIGHTS, InceptionFeatures, tf1_bilinear_resize
from .lpips import LPIPS, VGG16_WEIGHTS
from .pictures import save_image_grid, save_reconstruction_grid
from .pixels import per_image_mse, per_image_ssim, psnr_from_mse
from .spectrum import high_frequency_energy
from .weights import RANDOM_WEIGHTS, MissingWeightsError, PretrainedWeights

__all__ = [
    "INCEPTION_WEIGHTS",
    "LPIPS",
    "RANDOM_WEIGHTS",
    "VGG16_WEIGHTS",
    "FeatureStatistics",
    "InceptionFeatures",
    "MissingWeightsError",
    "PretrainedWeights",
    "RandomConvFeatures",
    "codebook_topology",
    "evaluate_tokenizer",
    "frechet_distance",
    "frechet_distance_of",
    "high_frequency_energy",
    "per_image_mse",
    "per_image_ssim",
    "psnr_from_mse",
    "save_image_grid",
    "save_reconstruction_grid",
    "tf1_bilinear_resize",
]
