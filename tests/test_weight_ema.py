"""Weight EMA (`training.ema_decay`): the averages follow the documented update by hand, frozen
parameters and buffers are not averaged, evaluation and the published tokenizer use the averages
while the raw weights are kept beside them, training itself is unchanged, and a stopped run resumes
with the same averages. (Two processes: tests/test_distributed.py.)"""

import json
from pathlib import Path

import pytest
import torch
from accelerate.utils import set_seed
from torch import nn

from test_training import tiny_args, tiny_config
from tiny_data import run_interrupted_after, tiny_images
from vqtok import VQTokenizer
from vqtok.data import pixel_dataset
from vqtok.metrics import evaluate_tokenizer
from vqtok.training import train_tokenizer
from vqtok.training.checkpoints import list_checkpoints
from vqtok.training.weight_ema import WeightEMA


def test_the_averages_follow_the_update_by_hand():
    module = nn.Linear(1, 1)
    module.bias.requires_grad_(False)  # frozen: not averaged
    with torch.no_grad():
        module.weight.fill_(1.0)
    ema = WeightEMA(module, decay=0.2)
    expected = 1.0
    for n, value in enumerate([3.0, -1.0, 5.0, 2.0]):
        with torch.no_grad():
            module.weight.fill_(value)
        ema.update(module)
        decay = min(0.2, (1 + n) / (10 + n))  # 0.1, 0.1818..., then 0.2
        expected = decay * expected + (1 - decay) * value
    assert list(ema.averages) == ["weight"]
    assert ema.averages["weight"].item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.2 * (0.2 * (2 / 11 * (0.1 + 2.7) + 9 / 11 * -1.0) + 0.8 * 5.0) + 0.8 * 2.0)

    bias = module.bias.detach().clone()
    with ema.averaged(module):
        assert module.weight.item() == pytest.approx(expected, rel=1e-6) and torch.equal(module.bias, bias)
    assert module.weight.item() == 2.0  # the live weight is back
    with pytest.raises(ValueError, match="must lie in"):
        WeightEMA(module, decay=1.0)


def run(output_dir, init_seed=0, **overrides):
    set_seed(init_seed)
    model = VQTokenizer.from_config(tiny_config(dead_code_threshold=5.0))
    images = tiny_images(count=24)
    results = train_tokenizer(model, pixel_dataset(images, 16, 3, augment=True), pixel_dataset(images.select(range(8)), 16, 3),
                              tiny_args(output_dir, max_steps=8, **overrides))
    return model, results


def test_evaluation_and_the_model_use_the_averages_and_the_raw_weights_are_those_of_a_run_without(tmp_path):
    plain, _ = run(tmp_path / "plain")
    averaged, results = run(tmp_path / "ema", ema_decay=0.9)
    raw = VQTokenizer.from_pretrained(tmp_path / "ema" / "tokenizer_raw")
    assert json.loads((tmp_path / "ema" / "tokenizer_raw" / "preprocessor_config.json").read_text())["size"]
    expected, got = plain.state_dict(), raw.state_dict()
    assert [name for name in expected if not torch.equal(expected[name], got[name])] == []  # training is unchanged
    # The model ends holding the averages: its parameters differ from the raw ones, its buffers do not.
    parameters = dict(averaged.named_parameters())
    assert not torch.equal(parameters["encoder.conv_in.weight"], got["encoder.conv_in.weight"])
    assert torch.equal(averaged.state_dict()["quantizer.codebook.ema_embed_sum"], got["quantizer.codebook.ema_embed_sum"])
    # The final evaluation measured the averaged model.
    images = tiny_images(count=24)
    evaluated = evaluate_tokenizer(averaged.eval(), pixel_dataset(images.select(range(8)), 16, 3), progress=False)
    assert evaluated["mse"] == pytest.approx(results["mse"], rel=1e-6)
    assert evaluate_tokenizer(raw.eval(), pixel_dataset(images.select(range(8)), 16, 3), progress=False)["mse"] != results["mse"]


def test_a_stopped_run_resumes_with_the_same_averages(tmp_path, monkeypatch):
    straight, _ = run(tmp_path / "straight", ema_decay=0.9)
    interrupted = lambda: run(tmp_path / "resumed", ema_decay=0.9, checkpoint_every=3)  # noqa: E731
    run_interrupted_after(3, monkeypatch, interrupted)
    assert [Path(p).name for p in list_checkpoints(tmp_path / "resumed")] == ["step_3"]
    resumed, _ = run(tmp_path / "resumed", 123, ema_decay=0.9, checkpoint_every=3, resume_from_checkpoint="latest")
    expected, got = straight.state_dict(), resumed.state_dict()
    assert [name for name in expected if not torch.equal(expected[name], got[name])] == []
    raw = [VQTokenizer.from_pretrained(tmp_path / name / "tokenizer_raw").state_dict() for name in ("straight", "resumed")]
    assert [name for name in raw[0] if not torch.equal(raw[0][name], raw[1][name])] == []

    # A run without the EMA cannot resume from its checkpoints, and says why.
    with pytest.raises(ValueError, match="weight EMA"):
        run(tmp_path / "resumed", ema_decay=None, checkpoint_every=3, resume_from_checkpoint="latest")


def test_the_prior_run_config_does_not_take_the_tokenizers_training_options():
    from vqtok.training import load_prior_run_config

    for override in ("training.ema_decay=0.9", "training.freeze=[decoder]", "training.compile=true"):
        with pytest.raises(ValueError, match=r"unknown key\(s\) \['(ema_decay|freeze|compile)'\] in section `training`"):
            load_prior_run_config(None, [override])


def test_the_saved_tokenizer_records_the_average_and_where_the_raw_weights_are():
    from vqtok.training import load_run_config

    run_config = load_run_config(None, ["training.ema_decay=0.99", "training.output_dir=runs/a"])
    recorded = run_config.training_metadata(10, 1, {})["weight_ema"]
    assert recorded == {"decay": 0.99, "raw_weights": str(Path("runs/a") / "tokenizer_raw")}
    assert "weight_ema" not in load_run_config(None, []).training_metadata(10, 1, {})
