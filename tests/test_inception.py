"""The Inception-v3 features of FID: TensorFlow 1's bilinear resize against hand-computed values, the
features of a seeded random network (shape, sign, the uint8 quantisation), strict loading of the
weights file and the errors for missing files and bad input. (Equality with torch-fidelity's
extractor was checked once, outside the suite: torch-fidelity is not a dependency.)"""

import copy

import pytest
import torch

from test_metrics import random_images

from vqtok.metrics import (
    INCEPTION_WEIGHTS,
    RANDOM_WEIGHTS,
    InceptionFeatures,
    MissingWeightsError,
    tf1_bilinear_resize,
)


def uint8_round_trip(images):
    """What saving the images as a PNG and reading them back gives."""
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.float() / 127.5 - 1


@pytest.fixture(scope="module")
def network():
    return InceptionFeatures.pretrained(RANDOM_WEIGHTS)



def weights_file_of(model, path):
    """A file laid out as torch-fidelity's: the network's tensors and the 1008-way classifier."""
    state = dict(model.state_dict())
    state.update({"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)})
    torch.save(state, path)
    return state


def test_tf1_resize_samples_at_index_times_scale_without_half_pixel_centres():
    # 2 -> 3: positions 0, 2/3, 4/3; the last clamps to the last pixel (no extrapolation).
    image = torch.tensor([[0.0, 3.0], [6.0, 9.0]]).view(1, 1, 2, 2)
    expected = torch.tensor([[0.0, 2.0, 3.0], [4.0, 6.0, 7.0], [6.0, 8.0, 9.0]])
    torch.testing.assert_close(tf1_bilinear_resize(image, 3)[0, 0], expected, rtol=0, atol=1e-6)
    # 4 -> 3: positions 0, 4/3, 8/3 along a non-linear row 0, 1, 4, 9 (half-pixel centres would give 1/6, 3/2, 17/6)
    row = torch.tensor([0.0, 1.0, 4.0, 9.0]).view(1, 1, 1, 4).expand(2, 3, 4, 4)
    resized = tf1_bilinear_resize(row, 3)
    assert resized.shape == (2, 3, 3, 3)
    torch.testing.assert_close(resized, torch.tensor([0.0, 2.0, 22 / 3]).expand(2, 3, 3, 3), rtol=0, atol=1e-5)


def test_tf1_resize_to_the_same_size_is_the_identity():
    image = random_images(batch=2, size=7)
    assert torch.equal(tf1_bilinear_resize(image, 7), image)
    wide = torch.rand(1, 3, 5, 9, generator=torch.Generator().manual_seed(1))
    assert torch.equal(tf1_bilinear_resize(wide, (5, 9)), wide)


def test_features_of_the_random_network(network, one_thread):
    images = random_images(batch=2, size=24)
    features = network(images)
    assert features.shape == (2, 2048) and features.dtype == torch.float32
    assert torch.isfinite(features).all()
    assert (features >= 0).all() and (features > 0).any()  # pool3 averages ReLU outputs
    assert not torch.equal(features[0], features[1])
    # the network sees the uint8 pixels a saved image holds: a PNG round trip changes nothing
    with torch.autocast("cpu", dtype=torch.bfloat16):  # and it computes in float32 all the same
        saved = network(uint8_round_trip(images))
    assert saved.dtype == torch.float32
    assert torch.equal(saved, features)


def test_a_grey_image_is_seen_as_its_rgb_repetition(network, one_thread):
    grey = random_images(batch=1, size=12, channels=1, seed=3)
    assert torch.equal(network(grey), network(grey.repeat(1, 3, 1, 1)))


def test_the_network_is_frozen_and_stays_in_evaluation_mode(network):
    assert not any(parameter.requires_grad for parameter in network.parameters())
    network.train()
    assert not network.training and not any(module.training for module in network.modules())
    assert not any("num_batches_tracked" in name for name in network.state_dict())  # the file has none


def test_random_weights_do_not_depend_on_the_global_seed():
    torch.manual_seed(1)
    first = InceptionFeatures.pretrained(RANDOM_WEIGHTS).state_dict()
    torch.manual_seed(2)
    second = InceptionFeatures.pretrained(RANDOM_WEIGHTS).state_dict()
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_a_weights_file_loads_strictly_and_reproduces_the_features(network, tmp_path, one_thread):
    network = copy.deepcopy(network)
    with torch.no_grad():  # another network than the seeded one, so loading must really happen
        for name, tensor in network.state_dict().items():
            if name.endswith("running_mean"):
                tensor.add_(0.01)
    state = weights_file_of(network, tmp_path / "weights-inception.pth")
    loaded = InceptionFeatures.pretrained(tmp_path / "weights-inception.pth")
    assert all(torch.equal(loaded.state_dict()[name], state[name]) for name in loaded.state_dict())
    images = random_images(batch=1, size=20, seed=4)
    assert torch.equal(loaded(images), network(images))
    assert not any(parameter.requires_grad for parameter in loaded.parameters())

    del state["Mixed_7c.branch_pool.bn.running_var"]
    torch.save(state, tmp_path / "damaged.pth")
    with pytest.raises(ValueError, match=r"does not fit the network \(missing: Mixed_7c.branch_pool.bn.running_var"):
        InceptionFeatures.pretrained(tmp_path / "damaged.pth")


def test_weights_are_found_in_the_torch_hub_cache(network, empty_hub_cache):
    empty_hub_cache.mkdir(parents=True)
    cached = empty_hub_cache / "weights-inception-2015-12-05-6726825d.pth"
    state = weights_file_of(network, cached)
    assert INCEPTION_WEIGHTS.locate(download=False) == str(cached)
    loaded = InceptionFeatures.pretrained(download=False)
    assert torch.equal(loaded.state_dict()["Conv2d_1a_3x3.conv.weight"], state["Conv2d_1a_3x3.conv.weight"])


def test_missing_weights_say_which_file_and_the_two_ways_to_provide_it(empty_hub_cache):
    with pytest.raises(MissingWeightsError, match="nope.pth does not exist"):
        InceptionFeatures.pretrained(empty_hub_cache / "nope.pth")
    with pytest.raises(MissingWeightsError) as raised:
        InceptionFeatures.pretrained(download=False)
    message = str(raised.value)
    assert "weights-inception-2015-12-05-6726825d.pth" in message
    assert str(empty_hub_cache / "weights-inception-2015-12-05-6726825d.pth") in message
    assert "downloading is switched off" in message and INCEPTION_WEIGHTS.url in message
    assert "TORCH_HOME" in message and "--inception_weights" in message and "InceptionFeatures.pretrained(PATH)" in message


def test_bad_input_is_refused_with_the_problem_named(network):
    with pytest.raises(ValueError, match=r"\[B, 1 or 3, H, W\], got shape \(3, 8, 8\)"):
        network(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"\[B, 1 or 3, H, W\], got shape \(1, 2, 8, 8\)"):
        network(torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match=r"float images in \[-1, 1\], got dtype torch.uint8"):
        network(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="float images"):
        tf1_bilinear_resize(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), 4)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        tf1_bilinear_resize(torch.zeros(8, 8), 4)
