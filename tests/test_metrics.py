"""The reconstruction measures of `vqtok.metrics` against hand-computed cases and independent
references (scikit-image's SSIM, SciPy's matrix square root), LPIPS against its formula, and the
weights of the judging networks: found, refused or missing with clear errors."""

import math
import urllib.error

import numpy as np
import pytest
import scipy.linalg
import torch
from skimage.metrics import structural_similarity

from vqtok.metrics import (
    LPIPS,
    RANDOM_WEIGHTS,
    VGG16_WEIGHTS,
    FeatureStatistics,
    MissingWeightsError,
    RandomConvFeatures,
    frechet_distance,
    frechet_distance_of,
    high_frequency_energy,
    per_image_mse,
    per_image_ssim,
    psnr_from_mse,
)
from vqtok.metrics.lpips import LPIPS_CHANNELS, VGG16Features, lpips_heads_path


def random_images(batch=2, channels=3, size=24, seed=0):
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_mse_and_psnr_of_a_constant_offset():
    original = torch.zeros(2, 3, 4, 4)
    # 0.2 in [-1, 1] is 0.1 on the [0, 1] scale: MSE 0.01, PSNR 20 dB
    assert per_image_mse(original, original + 0.2) == pytest.approx(torch.full((2,), 0.01))
    assert psnr_from_mse(torch.tensor([0.01])).item() == pytest.approx(20.0)


def test_ssim_equals_scikit_images_gaussian_ssim():
    originals = random_images()
    blurred = torch.nn.functional.avg_pool2d(originals, 3, stride=1, padding=1)
    ours = per_image_ssim(originals, blurred)
    for index in range(2):
        reference = structural_similarity(
            (originals[index].numpy() + 1) / 2, (blurred[index].numpy() + 1) / 2, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=1.0, channel_axis=0,
        )
        assert ours[index].item() == pytest.approx(reference, abs=1e-6)
    assert per_image_ssim(originals, originals) == pytest.approx(torch.ones(2), abs=1e-6)
    with pytest.raises(ValueError, match="at least 11x11"):
        per_image_ssim(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_frechet_distance_of_one_dimensional_gaussians_by_hand():
    # N(0, 1) vs N(1, 4): (0 - 1)^2 + 1 + 4 - 2 sqrt(1 * 4) = 2
    assert frechet_distance(torch.zeros(1), torch.eye(1), torch.ones(1), 4 * torch.eye(1)) == pytest.approx(2.0)


def test_frechet_distance_equals_the_scipy_square_root_formula():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 6, generator=generator, dtype=torch.float64), torch.randn(6, 6, generator=generator, dtype=torch.float64)
    first, second = a @ a.T, b @ b.T + 0.1 * torch.eye(6, dtype=torch.float64)
    mean_1, mean_2 = torch.randn(6, generator=generator, dtype=torch.float64), torch.randn(6, generator=generator, dtype=torch.float64)
    root = scipy.linalg.sqrtm(first.numpy() @ second.numpy()).real
    expected = float(((mean_1 - mean_2) ** 2).sum()) + np.trace(first.numpy() + second.numpy() - 2 * root)
    assert frechet_distance(mean_1, first, mean_2, second) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(mean_1, first, mean_1, first) == pytest.approx(0.0, abs=1e-8)


def test_feature_statistics_accumulated_in_batches_equal_the_whole_set():
    features = torch.randn(50, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    statistics = FeatureStatistics(4)
    for part in features.split(17):
        statistics.update(part)
    mean, covariance = statistics.mean_and_covariance()
    assert torch.allclose(mean, features.mean(0)) and torch.allclose(covariance, torch.cov(features.T))
    other = FeatureStatistics(4)
    other.update(features + 1)
    assert frechet_distance_of(statistics, other) == pytest.approx(4.0)  # a shift of 1 in each of 4 dimensions
    with pytest.raises(ValueError, match="NaN or inf"):
        statistics.update(torch.full((2, 4), math.nan))
    with pytest.raises(ValueError, match=r"features must be \[N, 4\]"):
        statistics.update(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="at least 2"):
        FeatureStatistics(4).mean_and_covariance()


def test_random_conv_features_are_seeded_and_see_blur():
    images = random_images(8, size=32)
    first, second = RandomConvFeatures(seed=0), RandomConvFeatures(seed=0)
    assert torch.equal(first(images), second(images)) and first(images).shape == (8, first.dim)
    assert not torch.equal(RandomConvFeatures(seed=1)(images), first(images))
    statistics = {name: FeatureStatistics(first.dim) for name in ("original", "same", "blurred")}
    statistics["original"].update(first(images))
    statistics["same"].update(first(images))
    statistics["blurred"].update(first(torch.nn.functional.avg_pool2d(images, 3, stride=1, padding=1)))
    assert frechet_distance_of(statistics["original"], statistics["same"]) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance_of(statistics["original"], statistics["blurred"]) > 0.01


def test_high_frequency_energy_of_a_constant_and_of_a_checkerboard():
    assert high_frequency_energy(torch.full((1, 3, 8, 8), 0.5)).item() == pytest.approx(0.0, abs=1e-12)
    # +-1 at the Nyquist frequency: by Parseval all C x H x W of its energy per pixel is high-frequency
    board = (torch.arange(8).view(-1, 1) + torch.arange(8).view(1, -1)) % 2 * 2.0 - 1
    assert high_frequency_energy(board.expand(1, 3, 8, 8)).item() == pytest.approx(3 * 8 * 8)
    images = random_images(2, size=32)
    blurred = torch.nn.functional.avg_pool2d(images, 3, stride=1, padding=1)
    assert (high_frequency_energy(blurred) < 0.5 * high_frequency_energy(images)).all()
    with pytest.raises(ValueError, match="cutoff"):
        high_frequency_energy(images, cutoff=1.5)


def lpips_by_hand(network: LPIPS, first, second):
    """LPIPS from its definition, written apart from vqtok's forward."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    total = torch.zeros(first.shape[0])
    hidden_1, hidden_2 = (first - shift) / scale, (second - shift) / scale
    for index, layer in enumerate(network.vgg.features):
        hidden_1, hidden_2 = layer(hidden_1), layer(hidden_2)
        if index in (3, 8, 15, 22, 29):
            head = network.heads[(3, 8, 15, 22, 29).index(index)].weight.view(-1)
            n_1 = hidden_1 / (hidden_1.norm(dim=1, keepdim=True) + 1e-10)
            n_2 = hidden_2 / (hidden_2.norm(dim=1, keepdim=True) + 1e-10)
            total += torch.einsum("bchw,c->bhw", (n_1 - n_2) ** 2, head).mean(dim=(1, 2))
    return total


def test_lpips_follows_its_formula_with_the_papers_heads():
    network = LPIPS.pretrained(RANDOM_WEIGHTS)
    heads = torch.load(lpips_heads_path(), map_location="cpu", weights_only=True)
    for index, channels in enumerate(LPIPS_CHANNELS):
        assert torch.equal(network.heads[index].weight, heads[f"lin{index}.model.1.weight"])
        assert network.heads[index].weight.shape == (1, channels, 1, 1)
    first, second = random_images(2, size=32), random_images(2, size=32, seed=1)
    distance = network(first, second)
    assert torch.allclose(distance, lpips_by_hand(network, first, second), rtol=1e-5)
    assert torch.allclose(network(first, first), torch.zeros(2), atol=1e-7)
    assert torch.allclose(network(second, first), distance, rtol=1e-5)
    grey = network(first[:, :1], second[:, :1])
    assert torch.allclose(grey, network(first[:, :1].expand(-1, 3, -1, -1), second[:, :1].expand(-1, 3, -1, -1)))


def test_lpips_passes_gradients_to_the_images_and_none_to_itself():
    network = LPIPS.pretrained(RANDOM_WEIGHTS)
    network.train()
    assert not network.training  # always in evaluation mode
    images = random_images(1, size=16).requires_grad_(True)
    network(images, random_images(1, size=16, seed=3)).sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(parameter.grad is None and not parameter.requires_grad for parameter in network.parameters())
    with pytest.raises(ValueError, match="LPIPS takes images"):
        network(torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16, 16))
    with pytest.raises(ValueError, match="one shape"):
        network(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 8, 8))



def test_missing_vgg_weights_say_which_file_and_the_two_ways_to_provide_it(empty_hub_cache, monkeypatch):
    def no_network(url, destination, progress=True):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(MissingWeightsError) as raised:
        LPIPS.pretrained()
    message = str(raised.value)
    assert "vgg16-397923af.pth" in message and str(empty_hub_cache / "vgg16-397923af.pth") in message
    assert "downloading https://download.pytorch.org/models/vgg16-397923af.pth failed (URLError" in message
    assert "TORCH_HOME" in message and "vgg_weights" in message
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="downloading is switched off"):
        LPIPS.pretrained()
    with pytest.raises(MissingWeightsError, match="nope.pth does not exist"):
        LPIPS.pretrained(empty_hub_cache / "nope.pth")


def torchvision_vgg16_file(path, seed=5):
    """A file laid out as torchvision's vgg16-397923af.pth: `features.<i>` and `classifier.<i>` tensors."""
    torch.manual_seed(seed)
    state = VGG16Features().state_dict()
    state.update({"classifier.0.weight": torch.zeros(4, 4), "classifier.0.bias": torch.zeros(4)})
    torch.save(state, path)
    return state


def test_vgg_weights_load_from_the_cache_and_from_a_path(empty_hub_cache, tmp_path):
    empty_hub_cache.mkdir(parents=True)
    state = torchvision_vgg16_file(empty_hub_cache / "vgg16-397923af.pth")
    cached = LPIPS.pretrained(download=False)
    assert torch.equal(cached.vgg.state_dict()["features.28.weight"], state["features.28.weight"])
    named = LPIPS.pretrained(empty_hub_cache / "vgg16-397923af.pth")
    assert torch.equal(named.vgg.state_dict()["features.0.bias"], state["features.0.bias"])
    del state["features.28.weight"]
    torch.save(state, tmp_path / "damaged.pth")
    with pytest.raises(ValueError, match=r"does not fit the network \(missing: features.28.weight"):
        LPIPS.pretrained(tmp_path / "damaged.pth")
    assert VGG16_WEIGHTS.locate(download=False) == str(empty_hub_cache / "vgg16-397923af.pth")
