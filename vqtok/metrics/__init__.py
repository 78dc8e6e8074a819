"""How good a tokenizer's reconstructions are: pixel measures (MSE, PSNR, SSIM), LPIPS, the Fréchet
distance of Inception features (rFID) or of a seeded random conv net's, and the high-frequency
energy ratio (sharpness); with the frozen judging networks' weights found or downloaded
(`weights`). `vqtok.evaluation.evaluate_tokenizer` runs them over a dataset."""

from .frechet import FeatureStatistics, RandomConvFeatures, frechet_distance, frechet_distance_of
from .inception import INCEPTION_WEIGHTS, InceptionFeatures, tf1_bilinear_resize
from .lpips import LPIPS, VGG16_WEIGHTS
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
    "frechet_distance",
    "frechet_distance_of",
    "high_frequency_energy",
    "per_image_mse",
    "per_image_ssim",
    "psnr_from_mse",
    "tf1_bilinear_resize",
]
