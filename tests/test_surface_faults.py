"""Bad input and faults on the surfaces beyond the core: tar shards, streams, streamed tokenization,
code spaces, metrics, conversion and objectives. Each was a silent wrong result or an error that did
not name its culprit:

- shards written twice into one folder mixed the runs; a folder's missing `test` split was its `train`;
- a resumed stream or tokenization on changed files went on without a word;
- a shard cut short, or a sample without an image, was met unnamed (or its images silently lost);
- FSQ levels whose K overflowed int64 gave ids of -1;
- metrics broadcast mismatched shapes, took a negative MSE or 0..255 images and answered;
- conversion and objectives failed late or without naming the file or option.
"""

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_journeys import QUICKSTART, TINY, image_folder
from tiny_data import tiny_tokenizer
from vqtok import FSQConfig, VQTokenizer, tokenize_stream
from vqtok.commands import run
from vqtok.data import load_image_splits, pixel_dataset, stack_pixel_values
from vqtok.data.tar_shards import check_shard
from vqtok.metrics import LPIPS, evaluate_tokenizer
from vqtok.metrics.frechet import frechet_distance
from vqtok.metrics.pixels import per_image_mse, psnr_from_mse

STREAMED = [*TINY, "data.streaming=true", "data.shuffle_buffer=4", "training.max_steps=2", "training.batch_size=4"]


def shard_images(path: Path) -> list[bytes]:
    with tarfile.open(path) as archive:
        return [archive.extractfile(member).read() for member in archive.getmembers()]


def pixels_of(images) -> list[bytes]:
    return [np.asarray(image.convert("RGB")).tobytes() for image in images]


# --- tar shards ----------------------------------------------------------------------------------

def test_shards_of_an_earlier_run_are_refused_and_overwrite_replaces_them(tmp_path, capsys):
    folder = image_folder(tmp_path / "images", 8)
    assert run("shards", ["--source", str(folder), "--output", str(tmp_path / "shards"), "--samples_per_shard", "2"]) == 0
    assert len(list((tmp_path / "shards").glob("train-*.tar"))) == 4
    capsys.readouterr()
    assert run("shards", ["--source", str(folder), "--output", str(tmp_path / "shards"), "--samples_per_shard", "4"]) == 2
    assert "already holds 4 shard(s) of 'train'" in capsys.readouterr().err
    assert len(list((tmp_path / "shards").glob("train-*.tar"))) == 4  # left as it was
    assert run("shards", ["--source", str(folder), "--output", str(tmp_path / "shards"), "--samples_per_shard", "4",
                          "--overwrite"]) == 0
    shards = sorted((tmp_path / "shards").glob("train-*.tar"))
    assert [path.name for path in shards] == ["train-000000.tar", "train-000001.tar"]
    assert sum(len(shard_images(path)) for path in shards) == 8  # not 12
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "test-000000.tar").write_bytes(shards[0].read_bytes())
    capsys.readouterr()
    assert run("shards", ["--source", str(folder), "--splits", "train", "test", "--output", str(tmp_path / "more")]) == 2
    assert "already holds 1 shard(s) of 'test'" in capsys.readouterr().err
    assert [path.name for path in (tmp_path / "more").iterdir()] == ["test-000000.tar"]  # no split written


def test_a_folder_without_a_test_split_holds_out_the_images_vqtok_train_holds_out(tmp_path, capsys):
    folder = image_folder(tmp_path / "images", 40)
    assert run("shards", ["--source", str(folder), "--splits", "train", "test", "--output", str(tmp_path / "shards")]) == 0
    assert "has no split 'test': holding out 4 of its 'train' images as it" in capsys.readouterr().out
    train, test = (shard_images(tmp_path / "shards" / f"{split}-000000.tar") for split in ("train", "test"))
    assert (len(train), len(test)) == (36, 4) and not set(train) & set(test)
    held_out = load_image_splits(str(folder), "train", "test").held_out
    assert pixels_of(Image.open(io.BytesIO(data)) for data in test) == pixels_of(held_out["image"])


def test_a_streamed_run_on_a_folder_evaluates_on_images_it_does_not_train_on(tmp_path, capsys):
    folder = image_folder(tmp_path / "images", 40)
    assert run("train", ["--config", QUICKSTART, f"data.source={folder}", *STREAMED,
                         f"training.output_dir={tmp_path / 'run'}"]) == 0
    assert "has no split 'test': holding out 4 of its 40 'train' images for evaluation" in capsys.readouterr().out
    metadata = json.loads((tmp_path / "run" / "tokenizer" / "config.json").read_text())["training_metadata"]
    assert metadata["dataset"]["held_out_from_train"] == {"images": 4, "fraction": 0.1}


def test_an_unreadable_image_is_named_and_no_shard_is_left(tmp_path, capsys):
    folder = image_folder(tmp_path / "images", 3)
    (folder / "broken.png").write_bytes(b"not a png")
    assert run("shards", ["--source", str(folder), "--output", str(tmp_path / "shards")]) == 2
    assert f"file {folder / 'broken.png'} cannot be read" in capsys.readouterr().err
    assert list((tmp_path / "shards").iterdir()) == []


def test_a_shard_cut_short_or_a_sample_without_an_image_is_named(tmp_path, capsys):
    folder = image_folder(tmp_path / "images", 6)
    assert run("shards", ["--source", str(folder), "--output", str(tmp_path / "shards"), "--samples_per_shard", "3"]) == 0
    data = (tmp_path / "shards" / "train-000001.tar").read_bytes()
    (tmp_path / "shards" / "train-000001.tar").write_bytes(data[:1600])  # inside its first image
    with pytest.raises(ValueError, match="shard .*train-000001.tar is (not a readable tar file|cut short)"):
        check_shard(str(tmp_path / "shards" / "train-000001.tar"))
    end = len(data) - 4096  # a later sample's header cut: tarfile itself stops there without a word
    with tarfile.open(tmp_path / "shards" / "train-000001.tar", "w") as archive:
        for member in tarfile.open(fileobj=io.BytesIO(data)).getmembers():
            archive.addfile(member, io.BytesIO(tarfile.open(fileobj=io.BytesIO(data)).extractfile(member).read()))
    (tmp_path / "shards" / "train-000001.tar").write_bytes((tmp_path / "shards" / "train-000001.tar").read_bytes()[:end])
    with pytest.raises(ValueError, match="train-000001.tar"):
        check_shard(str(tmp_path / "shards" / "train-000001.tar"))
    (tmp_path / "shards" / "train-000001.tar").write_bytes(data)
    with tarfile.open(tmp_path / "shards" / "train-000000.tar", "a") as archive:
        member = tarfile.TarInfo("000000100.txt")
        member.size = 5
        archive.addfile(member, io.BytesIO(b"hello"))
    source = str(tmp_path / "shards" / "train-*.tar")
    assert run("train", ["--config", QUICKSTART, f"data.source={source}", *STREAMED, "data.eval_split=null",
                         f"training.output_dir={tmp_path / 'run'}"]) == 2
    assert "sample '000000100' of shard " in capsys.readouterr().err


# --- streams that know what they read ------------------------------------------------------------

def test_a_streamed_run_resumed_on_other_shards_is_refused_naming_them(tmp_path, capsys):
    folder = image_folder(tmp_path / "images", 12)
    assert run("shards", ["--source", str(folder), "--output", str(tmp_path / "shards"), "--samples_per_shard", "4"]) == 0
    source = str(tmp_path / "shards" / "train-*.tar")
    options = ["--config", QUICKSTART, f"data.source={source}", *STREAMED, "data.eval_split=null",
               f"training.output_dir={tmp_path / 'run'}", "training.checkpoint_every=2"]
    assert run("train", options) == 0
    (tmp_path / "shards" / "train-000003.tar").write_bytes((tmp_path / "shards" / "train-000000.tar").read_bytes())
    capsys.readouterr()
    assert run("train", [*options, "training.max_steps=4", "--resume_from_checkpoint", "latest"]) == 2
    error = capsys.readouterr().err
    assert "the checkpoint's stream read other files than data.source" in error and "added: train-000003.tar" in error


def test_a_streamed_tokenization_rerun_on_other_files_is_refused_naming_them(tmp_path):
    folder = image_folder(tmp_path / "images", 9)
    assert run("shards", ["--source", str(folder), "--output", str(tmp_path / "shards"), "--samples_per_shard", "3"]) == 0
    tiny_tokenizer(tmp_path / "tokenizer")
    source = str(tmp_path / "shards" / "train-*.tar")
    done = tokenize_stream(source, tmp_path / "tokenizer", tmp_path / "tokens", rows_per_shard=4)
    assert done.rows == 9
    os.remove(tmp_path / "shards" / "train-000001.tar")
    with pytest.raises(ValueError, match=r"written from other files than the source holds now \(gone: train-000001.tar\)"):
        tokenize_stream(source, tmp_path / "tokenizer", tmp_path / "tokens", rows_per_shard=4)


# --- code spaces ----------------------------------------------------------------------------------

def test_a_code_space_beyond_what_ids_and_histograms_hold_is_refused_at_config_time():
    with pytest.raises(ValueError, match=r"`levels` .* give K = 18,446,744,073,709,551,616 codes; at most 16,777,216"):
        FSQConfig(levels=[2] * 64)
    from vqtok import VQConfig

    with pytest.raises(ValueError, match=r"token ids are int64, which hold at most 9,223,372,036,854,775,808"):
        VQConfig(codebook_size=2**64)
    largest = FSQConfig(levels=[2] * 24, image_size=16, backbone_config={"base_channels": 8})
    ids = VQTokenizer.from_config(largest).encode(torch.rand(2, 3, 16, 16) * 2 - 1)
    assert ids.min() >= 0 and ids.max() < 2**24


# --- metrics ----------------------------------------------------------------------------------------

def test_metric_functions_check_shapes_ranges_and_domains():
    with pytest.raises(ValueError, match=r"one shape, got \(2, 3, 4, 4\) and \(1, 3, 4, 4\)"):
        per_image_mse(torch.zeros(2, 3, 4, 4), torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="mean squared errors \\(>= 0\\), got values down to -0.5"):
        psnr_from_mse(torch.tensor([0.01, -0.5]))
    with pytest.raises(ValueError, match="mean squared errors"):
        psnr_from_mse(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match=r"got shapes \[\(3,\), \(3, 3\), \(4,\), \(4, 4\)\]"):
        frechet_distance(torch.zeros(3), torch.eye(3), torch.zeros(4), torch.eye(4))
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255
    with pytest.raises(ValueError, match=r"must lie in \[-1, 1\], got values in \[.*, 25\d\]; scale \[0, 255\]"):
        LPIPS()(images, images.flip(-1))
    with pytest.raises(ValueError, match="at least 16x16 pixels"):
        LPIPS()(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 8, 8))


def test_evaluation_names_what_its_input_lacks(tmp_path):
    tokenizer = tiny_tokenizer(tmp_path / "tokenizer")
    from tiny_data import tiny_images

    images = tiny_images(4, width=16, height=16)
    with pytest.raises(ValueError, match=r"no 'pixel_values' \(a row's columns: \['image'\]\): view images through "
                                         r"vqtok.data.pixel_dataset"):
        evaluate_tokenizer(tokenizer, images, progress=False)
    for batch_size in (0, -1):
        with pytest.raises(ValueError, match=f"batch_size must be a positive int, got {batch_size}"):
            evaluate_tokenizer(tokenizer, pixel_dataset(images, 16), batch_size=batch_size, progress=False)
    assert evaluate_tokenizer(tokenizer, pixel_dataset(images, 16), progress=False)["mse"] >= 0
    assert stack_pixel_values(pixel_dataset(images, 16)).shape == (4, 3, 16, 16)


# --- conversion and objectives -----------------------------------------------------------------------

def test_conversion_names_a_cut_safetensors_file_and_refuses_a_file_as_output(tmp_path):
    from safetensors.torch import save_file

    from test_convert_checkpoint import tiny_diffusers, write_taming_ckpt
    from vqtok.conversion import convert_checkpoint

    save_file({"weight": torch.zeros(64, 64)}, str(tmp_path / "vq.safetensors"))
    data = (tmp_path / "vq.safetensors").read_bytes()
    (tmp_path / "vq.safetensors").write_bytes(data[:1000])
    with pytest.raises(ValueError, match=r"vq.safetensors is not a readable safetensors file"):
        convert_checkpoint("llamagen", tmp_path / "vq.safetensors")
    write_taming_ckpt(tmp_path / "last.ckpt", tiny_diffusers())
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(OSError, match=r"output_dir .*a_file' is a file, not a folder"):
        convert_checkpoint("taming", tmp_path / "last.ckpt", tmp_path / "a_file", image_size=32)
    assert (tmp_path / "a_file").read_text() == "not a folder"


def test_a_perceptual_objective_on_images_too_small_for_vgg_fails_at_setup(tmp_path, capsys):
    assert run("train", ["--config", QUICKSTART, *TINY, "model.image_size=8", "model.backbone_config.downsampling_factor=2",
                         "objectives.perceptual.vgg_weights=random", f"training.output_dir={tmp_path / 'run'}"]) == 2
    assert ("objectives.perceptual: LPIPS's VGG16 takes images of at least 16 pixels; the tokenizer's are 8 "
            "(model.image_size)") in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()
