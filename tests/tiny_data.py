"""Small synthetic images and a stop-and-resume helper shared by the training and contract tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
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


def tiny_tokenizer(folder, seed: int = 0, **overrides):
    """A small untrained VQ tokenizer (16x16 images, K=16, 4x4 tokens), saved in `folder` with its image
    processor; returns the model (in eval mode)."""
    from vqtok import VQConfig, VQImageProcessor, VQModel

    torch.manual_seed(seed)
    values = dict(image_size=16, backbone_config=dict(base_channels=8, downsampling_factor=4), latent_dim=8, codebook_size=16)
    model = VQModel(VQConfig(**{**values, **overrides})).eval()
    model.save_pretrained(folder)
    VQImageProcessor.for_tokenizer(model.config).save_pretrained(folder)
    return model


def tiny_prior(seed: int = 0, architecture: str = "gpt2", **options):
    """A small untrained prior over K=16 codes on a 4x4 grid (a 2-layer language model of width 32)."""
    from vqtok import PriorConfig, TokenLayout, TokenPrior

    torch.manual_seed(seed)
    values = dict(architecture=architecture, hidden_size=32, num_layers=2, num_heads=2, dropout=0.0)
    layout = TokenLayout(16, 4, 4, tokenizer="some/tokenizer")
    return TokenPrior(PriorConfig.for_tokenizer(layout, **{**values, **options}))


class Interrupted(Exception):
    """Raised in place of a job killed right after a checkpoint."""


def run_interrupted_after(step: int, monkeypatch, run, loop=trainer) -> None:
    """Call `run()` with checkpointing that stops the job right after the checkpoint of `step`
    (`loop`: the training-loop module whose `save_run_checkpoint` is wrapped)."""
    save = loop.save_run_checkpoint

    def save_then_stop(accelerator, updates, args, at_step):
        path = save(accelerator, updates, args, at_step)
        if at_step == step:
            raise Interrupted
        return path

    monkeypatch.setattr(loop, "save_run_checkpoint", save_then_stop)
    with pytest.raises(Interrupted):
        run()
    monkeypatch.setattr(loop, "save_run_checkpoint", save)


def tiny_text_tokenizer(texts, vocab_size: int = 280, pad: bool = True):
    """A byte-level BPE text tokenizer learnt from `texts` (no download), its one special token
    `<|endoftext|>` the end of text (and the padding with `pad`; GPT-2 has none)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    end = "<|endoftext|>"
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(list(texts) * 4, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[end], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=end, eos_token=end, unk_token=end,
                                   **({"pad_token": end} if pad else {}))
