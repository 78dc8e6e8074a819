"""Datasets: the bundled offline sample set, local image folders, the pixel transform, the grid picture."""

import numpy as np
import pytest
import torch
from PIL import Image

from vqtok.data import PixelTransform, load_image_dataset, load_sample_dataset, pixel_dataset, stack_pixel_values
from vqtok.metrics.pictures import save_reconstruction_grid


def test_sample_dataset_is_offline_real_and_split():
    splits = load_sample_dataset()
    assert set(splits) == {"train", "test"}
    assert len(splits["train"]) > 2000 and len(splits["test"]) > 200
    image = splits["train"][0]["image"]
    assert image.size == (32, 32) and image.mode == "RGB"
    # Real photographs, not constant or noise patches: pixel values vary and neighbours correlate.
    pixels = stack_pixel_values(pixel_dataset(splits["test"], 32), limit=64)
    assert pixels.std() > 0.2
    horizontal_neighbours = torch.corrcoef(torch.stack([pixels[..., :-1].flatten(), pixels[..., 1:].flatten()]))
    assert horizontal_neighbours[0, 1] > 0.8
    # Several photographs contribute to each split.
    assert len(set(splits["test"]["source"])) >= 10


def test_sample_dataset_is_deterministic():
    first = load_sample_dataset.__wrapped__(seed=3)
    second = load_sample_dataset.__wrapped__(seed=3)
    assert np.array_equal(np.asarray(first["test"][0]["image"]), np.asarray(second["test"][0]["image"]))


def test_load_image_dataset_sample_and_bad_split():
    assert len(load_image_dataset("sample", split="test")) == len(load_sample_dataset()["test"])
    with pytest.raises(ValueError, match="splits"):
        load_image_dataset("sample", split="validation")


def test_local_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for label in ("cats", "dogs"):
        (tmp_path / label).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / label / f"{i}.png")
    dataset = load_image_dataset(str(tmp_path), split="train")
    assert len(dataset) == 6 and "image" in dataset.column_names
    pixels = stack_pixel_values(pixel_dataset(dataset, 16, channels=1))
    assert pixels.shape == (6, 1, 16, 16)


def test_file_instead_of_folder_is_rejected(tmp_path):
    path = tmp_path / "image.png"
    Image.new("RGB", (8, 8)).save(path)
    with pytest.raises(ValueError, match="is a file"):
        load_image_dataset(str(path))


def test_pixel_transform_scales_resizes_and_crops():
    image = Image.fromarray(np.array([[[0, 255, 0]] * 64] * 32, dtype=np.uint8))  # 64 wide, 32 high
    transform = PixelTransform(16, channels=3)
    tensor = transform.image_to_tensor(image)
    assert tensor.shape == (3, 16, 16)
    assert torch.allclose(tensor[1], torch.ones(16, 16)) and torch.allclose(tensor[0], -torch.ones(16, 16))
    grey = PixelTransform(28, channels=1).image_to_tensor(image)
    assert grey.shape == (1, 28, 28)
    with pytest.raises(ValueError, match="channels"):
        PixelTransform(16, channels=2)


def test_reconstruction_grid_layout(tmp_path):
    originals = -torch.ones(3, 3, 4, 4)  # black
    reconstructions = torch.ones(3, 3, 4, 4)  # white
    path = save_reconstruction_grid(originals, reconstructions, tmp_path / "grid.png", columns=2, scale=1, gap=1)
    grid = np.asarray(Image.open(path))
    # two rows of pairs: height = 2 rows * 2 * (4 + 1) + 1, width = 2 * (4 + 1) + 1
    assert grid.shape == (21, 11, 3)
    assert (grid[1:5, 1:5] == 0).all()  # first original, black
    assert (grid[6:10, 1:5] == 255).all()  # its reconstruction below, white
    with pytest.raises(ValueError, match="same shape"):
        save_reconstruction_grid(originals, reconstructions[:2], tmp_path / "bad.png")


def test_reconstruction_grid_puts_each_set_under_the_originals(tmp_path):
    originals = -torch.ones(2, 3, 4, 4)  # black
    first, second = torch.ones(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)  # white, mid grey
    path = save_reconstruction_grid(originals, [first, second], tmp_path / "grid.png", columns=2, scale=1, gap=1)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (3 * 5 + 1, 2 * 5 + 1, 3)  # one group of three rows
    assert (grid[1:5, 6:10] == 0).all() and (grid[6:10, 6:10] == 255).all()
    assert (grid[11:15, 6:10] == 128).all() or (grid[11:15, 6:10] == 127).all()
    with pytest.raises(ValueError, match="same shape"):
        save_reconstruction_grid(originals, [first, second[:1]], tmp_path / "bad.png")
