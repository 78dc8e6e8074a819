"""The paths a user walks, end to end, through the public commands only (`vqtok <command>`, run the
way the console script runs them; tiny models and a few steps):

- a folder of one's own images -> train (a held-out part split off, as the folder has no test split)
  -> evaluate (on the same held-out part) -> push to the Hub (the local test server) ->
  `AutoModel.from_pretrained` in a fresh process without `import vqtok` -> tokenize -> prior -> sample;
- a Hub dataset by name, streamed;
- a converted pretrained tokenizer -> evaluate -> publish.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download
from PIL import Image

from vqtok import VQTokenizer, load_tokenized
from vqtok.commands import main, run
from vqtok.data import load_sample_dataset

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "training" / "configs" / "quickstart.yaml")
TINY = ["model.image_size=16", "model.backbone_config.base_channels=8", "model.latent_dim=8",
        "model.codebook_size=16", "training.max_steps=3", "training.batch_size=8", "training.warmup_steps=1",
        "training.report_to=none"]


def image_folder(folder: Path, count: int, split: str = "test") -> Path:
    """`count` images of the bundled set's `split` as PNG files in `folder`, no sub-folders."""
    folder.mkdir(parents=True)
    for index, row in enumerate(load_sample_dataset()[split].select(range(count))):
        row["image"].save(folder / f"{index:03d}.png")
    return folder


def output_of(capsys) -> str:
    captured = capsys.readouterr()
    return captured.out + captured.err


def test_my_folder_to_a_published_tokenizer_tokens_a_prior_and_samples(local_hub, tmp_path, capsys):
    folder = image_folder(tmp_path / "my_images", 40)
    out = tmp_path / "run"
    assert run("train", ["--config", QUICKSTART, f"data.source={folder}", *TINY, f"training.output_dir={out}",
                         "--push_to_hub", "local-user/my-tokenizer"]) == 0
    log = output_of(capsys)
    assert "has no split 'test': holding out 4 of its 40 'train' images for evaluation" in log
    assert "36 training images" in log and "pushed to local-user/my-tokenizer" in log
    metadata = json.loads((out / "tokenizer" / "config.json").read_text())["training_metadata"]
    assert metadata["dataset"]["held_out_from_train"] == {"images": 4, "fraction": 0.1}

    assert run("evaluate", ["--tokenizer", str(out / "tokenizer"), "--source", str(folder), "--no_lpips", "--no_rfid"]) == 0
    assert "evaluating on the 4 of its 40 'train' images held out" in output_of(capsys)
    evaluated = json.loads((out / "tokenizer" / "config.json").read_text())["training_metadata"]["evaluation"]
    assert evaluated["num_images"] == 4
    assert evaluated["metrics"]["mse"] == pytest.approx(metadata["final_metrics"]["mse"], rel=1e-5)

    code = ("import sys, torch; from transformers import AutoModel; "
            "m = AutoModel.from_pretrained('local-user/my-tokenizer', trust_remote_code=True); "
            "print(type(m).__name__, tuple(m.encode(torch.zeros(1, 3, 16, 16)).shape))")
    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    assert fresh.stdout.strip().splitlines()[-1] == "VQModel (1, 4, 4)"

    tokens = tmp_path / "tokens"
    assert run("tokenize", ["--tokenizer", "local-user/my-tokenizer", "--source", str(folder),
                            "--output", str(tokens)]) == 0
    assert "has no split 'test': it is the 4 'train' images held out for evaluation" in output_of(capsys)
    splits, _ = load_tokenized(tokens)
    assert {name: len(split) for name, split in splits.items()} == {"train": 36, "test": 4}
    prior = tmp_path / "prior"
    assert run("prior", ["--config", str(REPO / "training" / "configs" / "prior.yaml"), f"data.tokens={tokens}",
                         f"training.output_dir={prior}", "training.max_steps=2", "training.batch_size=4",
                         "training.report_to=none", "model.hidden_size=16", "model.num_layers=1", "model.num_heads=2"]) == 0
    assert run("sample", ["--prior", str(prior), "--tokens", str(tokens), "--num_samples", "4", "--columns", "2",
                          "--output_dir", str(tmp_path / "samples")]) == 0
    for scheme in ("uniform", "histogram", "prior"):
        with Image.open(tmp_path / "samples" / f"samples_{scheme}.png") as picture:
            assert picture.size[0] > 16


def test_a_hub_dataset_by_name_streamed(local_hub, tmp_path, capsys):
    pictures = tmp_path / "pictures"
    image_folder(pictures / "train", 24, split="train")
    image_folder(pictures / "test", 8)
    HfApi().create_repo("local-user/pictures", repo_type="dataset")
    HfApi().upload_folder(folder_path=str(pictures), repo_id="local-user/pictures", repo_type="dataset")
    out = tmp_path / "run"
    assert run("train", ["--config", QUICKSTART, "data.source=local-user/pictures", "data.streaming=true",
                         "data.shuffle_buffer=8", *TINY, f"training.output_dir={out}"]) == 0
    assert "streaming 'local-user/pictures'" in output_of(capsys)
    dataset = json.loads((out / "tokenizer" / "config.json").read_text())["training_metadata"]["dataset"]
    assert dataset["source"] == "local-user/pictures" and dataset["streaming"] is True
    assert json.loads((out / "metrics.json").read_text())["codes_used"] > 0


def test_a_converted_tokenizer_is_evaluated_and_published(local_hub, tmp_path, capsys):
    from test_convert_checkpoint import tiny_diffusers, write_taming_ckpt

    write_taming_ckpt(tmp_path / "last.ckpt", tiny_diffusers())
    converted = tmp_path / "converted"
    assert run("convert", ["--source", "taming", "--input", str(tmp_path / "last.ckpt"), "--output", str(converted),
                           "--image_size", "32"]) == 0
    assert run("evaluate", ["--tokenizer", str(converted), "--no_lpips", "--no_rfid", "--max_images", "16",
                            "--push_to_hub", "local-user/converted"]) == 0
    assert "pushed to local-user/converted" in output_of(capsys)
    card = Path(hf_hub_download("local-user/converted", "README.md")).read_text()
    assert "taming-transformers" in card and "psnr" in card.lower()
    published = VQTokenizer.from_pretrained("local-user/converted")
    assert published.config.training_metadata["evaluation"]["num_images"] == 16


def test_a_user_error_is_one_line_with_status_2_and_debug_shows_the_traceback(tmp_path, capsys):
    command = [sys.executable, "-m", "vqtok", "train", "--config", QUICKSTART, f"data.source={tmp_path / 'nowhere'}"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"vqtok train: error: data.source {str(tmp_path / 'nowhere')!r} does not exist: give a folder of images, tar "
        "shards ('folder/train-*.tar'), 'sample' (the bundled set) or a Hub dataset name ('namespace/name')"]
    with pytest.raises(FileNotFoundError):  # --debug: the error itself, with its traceback
        run("train", [*command[4:], "--debug"])
    with pytest.raises(SystemExit) as usage:  # no run config: the usage, not a default run
        run("train", [])
    assert usage.value.code == 2 and "the following arguments are required: --config" in capsys.readouterr().err


def test_every_script_in_training_runs_a_command_and_the_console_lists_them_all(capsys):
    import re

    from vqtok.commands import COMMANDS

    scripts = {path.stem: re.findall(r'script\("(\w+)"\)', path.read_text()) for path in (REPO / "training").glob("*.py")}
    assert sorted(command for found in scripts.values() for command in found) == sorted(COMMANDS)
    helped = subprocess.run([sys.executable, str(REPO / "training" / "sample.py"), "--help"], capture_output=True,
                            text=True, timeout=120)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: vqtok sample")
    with pytest.raises(SystemExit) as listed:
        main(["--help"])
    usage = capsys.readouterr().out
    assert listed.value.code == 0 and all(command in usage for command in COMMANDS)
