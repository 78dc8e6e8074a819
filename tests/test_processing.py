"""VQImageProcessor: images in, pixel_values in [-1, 1] out, saved and reloaded like any HF processor
(also through AutoImageProcessor), and the same pixels as the training transforms."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.auto.image_processing_auto import AutoImageProcessor  # see vqtok/auto.py

from vqtok import VQConfig, VQImageProcessor, VQModel
from vqtok.data import PixelTransform


def solid(colour, size=(60, 40)):
    return Image.fromarray(np.full((size[1], size[0], 3), colour, dtype=np.uint8))


def test_scales_to_minus_one_one_and_crops_to_square():
    processor = VQImageProcessor.for_tokenizer(VQConfig(image_size=16))
    pixels = processor([solid((255, 0, 128))], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 16, 16)
    assert torch.allclose(pixels[0, :, 0, 0], torch.tensor([1.0, -1.0, 128 / 127.5 - 1]), atol=1e-5)


def test_greyscale_output_uses_luma_on_the_uint8_pixels():
    processor = VQImageProcessor.for_tokenizer(VQConfig(image_size=16, in_channels=1))
    pixels = processor([solid((255, 0, 0)), solid((0, 0, 255))], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 1, 16, 16)
    # ITU-R 601 luma rounded to uint8 (as PIL's convert("L")): 0.299 * 255 -> 76, 0.114 * 255 -> 29.
    assert pixels[0, 0, 0, 0].item() == pytest.approx(76 / 127.5 - 1, abs=1e-6)
    assert pixels[1, 0, 0, 0].item() == pytest.approx(29 / 127.5 - 1, abs=1e-6)


def test_numpy_input_and_round_trip_through_a_tokenizer(tmp_path):
    config = VQConfig(image_size=16, backbone_config=dict(base_channels=8), latent_dim=4, codebook_size=16)
    processor = VQImageProcessor.for_tokenizer(config)
    processor.save_pretrained(tmp_path)
    reloaded = VQImageProcessor.from_pretrained(tmp_path)
    array = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    pixels = reloaded(array, return_tensors="pt")["pixel_values"]
    assert torch.equal(pixels, processor(array, return_tensors="pt")["pixel_values"])
    model = VQModel(config).eval()
    pictures = VQImageProcessor.postprocess(model.decode(model.encode(pixels)))
    assert pictures[0].size == (16, 16) and pictures[0].mode == "RGB"


def test_bad_channel_count_is_rejected():
    with pytest.raises(ValueError, match="num_channels"):
        VQImageProcessor(num_channels=2)([solid((0, 0, 0))], return_tensors="pt")


def odd_images():
    """RGB, RGBA, greyscale and palette images of awkward sizes (resize and crop both matter)."""
    rng = np.random.default_rng(1)
    rgb = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in [(16, 16), (33, 47), (90, 17)]]
    return rgb + [rgb[1].convert("RGBA"), rgb[1].convert("L"), rgb[2].convert("P")]


@pytest.mark.parametrize("channels", [1, 3])
def test_training_transform_and_processor_give_identical_pixels(channels):
    images = odd_images()
    processor = VQImageProcessor.for_tokenizer(VQConfig(image_size=16, in_channels=channels))
    expected = processor(images, return_tensors="pt")["pixel_values"]
    transform = PixelTransform(16, channels)
    got = torch.stack([transform.image_to_tensor(image) for image in images])
    assert got.shape == (len(images), channels, 16, 16)
    assert torch.equal(got, expected)


def test_random_crops_are_windows_of_the_processors_resized_image():
    image = odd_images()[1]  # 33 x 47: resized to 16 x 22 (transformers truncates 22.8), the crop slides vertically
    resized = VQImageProcessor.for_image_size(16)(image, do_center_crop=False, return_tensors="pt")["pixel_values"][0]
    assert resized.shape == (3, 22, 16)
    windows = [resized[:, top : top + 16] for top in range(7)]
    transform = PixelTransform(16, random_crop=True, random_flip=True)
    for seed in range(10):
        crop = transform.image_to_tensor(image, generator=torch.Generator().manual_seed(seed))
        assert any(torch.equal(crop, w) or torch.equal(crop, w.flip(-1)) for w in windows)


def test_auto_image_processor_loads_the_processor_saved_with_a_tokenizer(tmp_path):
    config = VQConfig(image_size=16, in_channels=1, backbone_config=dict(base_channels=8), latent_dim=4, codebook_size=16)
    VQModel(config).save_pretrained(tmp_path)
    VQImageProcessor.for_tokenizer(config).save_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert isinstance(processor, VQImageProcessor) and processor.num_channels == 1
    assert processor(odd_images()[0], return_tensors="pt")["pixel_values"].shape == (1, 1, 16, 16)
