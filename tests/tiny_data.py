"""Small synthetic images and a stop-and-resume helper shared by the training and contract tests."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset, Features, Image
from PIL import Image as PILImage

import vqtok.training.trainer as trainer


def tiny_images(count: int = 40, seed: int = 0, width: int = 20, height: int = 16) -> Dataset:
    """`count` non-square RGB images with smooth structure, so a random crop has room to move."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    images = []
    for _ in range(count):
        fx, fy, phase = rng.uniform(0.1, 0.6, size=3)
        channels = [np.sin(fx * xx + c) * np.cos(fy * yy + phase * c) for c in range(3)]
        array = ((np.stack(channels, axis=-1) + 1) * 127.5).astype(np.uint8)
        images.append(PILImage.fromarray(array))
    return Dataset.from_dict({"image": images}, features=Features({"image": Image()}))


class Interrupted(Exception):
    """Raised in place of a job killed right after a checkpoint."""


def run_interrupted_after(step: int, monkeypatch, run) -> None:
    """Call `run()` with checkpointing that stops the job right after the checkpoint of `step`."""
    save = trainer.save_checkpoint

    def save_then_stop(accelerator, args, at_step):
        path = save(accelerator, args, at_step)
        if at_step == step:
            raise Interrupted
        return path

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        run()
    monkeypatch.setattr(trainer, "save_checkpoint", save)
