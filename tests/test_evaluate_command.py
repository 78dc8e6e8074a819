"""`training/evaluate_tokenizer.py`: the field's metrics on a tokenizer folder, recorded in its
config, model card and TensorBoard; random judging weights print only; the defaults it used are
said; missing weights fail before any work with the file's name."""

import json

import pytest
from huggingface_hub import ModelCard

from test_sampling import load_script
from tiny_data import tiny_images, tiny_tokenizer
from vqtok import VQTokenizer
from vqtok.metrics import MissingWeightsError


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images" / "test"
    folder.mkdir(parents=True)
    for index, row in enumerate(tiny_images(count=6, seed=3, width=20, height=16)):
        row["image"].save(folder / f"{index}.png")
    return tmp_path / "images"


def test_the_metrics_go_into_the_config_the_card_and_tensorboard(tmp_path, image_folder):
    tiny_tokenizer(tmp_path / "tokenizer")
    results = load_script("evaluate_tokenizer").main([
        "--tokenizer", str(tmp_path / "tokenizer"), "--source", str(image_folder), "--batch_size", "4",
        "--no_lpips", "--no_rfid", "--output", str(tmp_path / "results.json"),
    ])
    assert {"mse", "psnr", "ssim", "high_frequency_energy_ratio", "perplexity", "code_entropy", "codes_used"} <= set(results)
    assert 0 < results["codes_used"] <= 1 and results["code_entropy"] <= 4 + 1e-9  # K = 16: at most 4 bits
    assert json.loads((tmp_path / "results.json").read_text()) == pytest.approx(results)

    evaluation = VQTokenizer.from_pretrained(tmp_path / "tokenizer").config.training_metadata["evaluation"]
    assert evaluation["num_images"] == 6 and evaluation["metrics"] == pytest.approx(results)
    card = ModelCard.load(tmp_path / "tokenizer" / "README.md")
    reported = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert reported["psnr"] == pytest.approx(results["psnr"], rel=1e-3) and "ssim" in reported
    assert list((tmp_path / "logs").glob("events.out.tfevents.*"))


def test_random_judging_weights_are_printed_only(tmp_path, image_folder, capsys):
    tiny_tokenizer(tmp_path / "tokenizer")
    before = (tmp_path / "tokenizer" / "config.json").read_text()
    results = load_script("evaluate_tokenizer").main([
        "--tokenizer", str(tmp_path / "tokenizer"), "--source", str(image_folder), "--max_images", "4",
        "--vgg_weights", "random", "--inception_weights", "random",
    ])
    assert results["lpips"] > 0 and results["rfid"] >= 0
    printed = capsys.readouterr().out
    assert "plumbing check" in printed
    assert printed.splitlines()[0] == "defaults in use: --split test"  # what it assumed, in one line
    assert (tmp_path / "tokenizer" / "config.json").read_text() == before and not (tmp_path / "logs").exists()


def test_missing_weights_fail_before_any_work_naming_the_file(tmp_path, image_folder, monkeypatch):
    tiny_tokenizer(tmp_path / "tokenizer")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("VQTOK_OFFLINE", "1")
    script = load_script("evaluate_tokenizer")
    monkeypatch.setattr(script, "evaluate_tokenizer", lambda *args, **kwargs: pytest.fail("evaluated without weights"))
    with pytest.raises(MissingWeightsError, match="vgg16-397923af.pth.*--vgg_weights"):
        script.main(["--tokenizer", str(tmp_path / "tokenizer"), "--source", str(image_folder)])
    with pytest.raises(MissingWeightsError, match="weights-inception-2015-12-05-6726825d.pth.*--inception_weights"):
        script.main(["--tokenizer", str(tmp_path / "tokenizer"), "--source", str(image_folder), "--no_lpips"])
