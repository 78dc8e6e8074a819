"""VQImageProcessor: images in, pixel_values in [-1, 1] out, saved and reloaded like any HF processor."""

import numpy as np
import pytest
import torch
from PIL import Image

from vqtok import VQConfig, VQImageProcessor, VQModel


def solid(colour, size=(60, 40)):
    return Image.fromarray(np.full((size[1], size[0], 3), colour, dtype=np.uint8))


def test_scales_to_minus_one_one_and_crops_to_square():
    processor = VQImageProcessor.for_tokenizer(VQConfig(image_size=16))
    pixels = processor([solid((255, 0, 128))], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (1, 3, 16, 16)
    assert torch.allclose(pixels[0, :, 0, 0], torch.tensor([1.0, -1.0, 128 / 127.5 - 1]), atol=1e-5)


def test_greyscale_output_uses_luma():
    processor = VQImageProcessor.for_tokenizer(VQConfig(image_size=16, in_channels=1))
    pixels = processor([solid((255, 0, 0)), solid((0, 0, 255))], return_tensors="pt")["pixel_values"]
    assert pixels.shape == (2, 1, 16, 16)
    assert pixels[0, 0, 0, 0].item() == pytest.approx(0.299 * 2 - 1, abs=1e-4)
    assert pixels[1, 0, 0, 0].item() == pytest.approx(0.114 * 2 - 1, abs=1e-4)


def test_numpy_input_and_round_trip_through_a_tokenizer(tmp_path):
    config = VQConfig(image_size=16, base_channels=8, latent_dim=4, codebook_size=16)
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
