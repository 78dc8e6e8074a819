"""Fine-tuning a tokenizer: a run that starts from one (`model.init_from`: trained, converted or on the
Hub) may change only what shapes training, and `training.freeze` keeps parts of it exactly as they
were. The recipe, run from the command line on a converted reference tokenizer, sharpens the decoder
while every image keeps its ids."""

import pytest
import torch

from test_convert_checkpoint import tiny_diffusers, write_taming_ckpt
from tiny_data import tiny_images, tiny_tokenizer
from vqtok import VQConfig, VQTokenizer
from vqtok.commands import run
from vqtok.data import load_sample_dataset, pixel_dataset, stack_pixel_values
from vqtok.metrics import evaluate_tokenizer
from vqtok.training import TrainingArguments, load_run_config, train_tokenizer

from test_journeys import REPO

RECIPE = str(REPO / "training" / "configs" / "finetune_decoder.yaml")
SMALL = ["training.max_steps=30", "training.batch_size=16", "training.learning_rate=0.003", "training.warmup_steps=2",
         "training.ema_decay=null", "training.eval_every=0", "training.checkpoint_every=0", "training.report_to=none"]


def state_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}


def assert_same_state(before: dict, module: torch.nn.Module, what: str) -> None:
    after = module.state_dict()
    changed = [name for name in before if not torch.equal(before[name], after[name])]
    assert not changed, f"{what} changed: {changed}"


@pytest.fixture
def converted(tmp_path):
    """A taming VQGAN (small, randomly initialised) converted to vqtok at 32 px."""
    write_taming_ckpt(tmp_path / "last.ckpt", tiny_diffusers())
    assert run("convert", ["--source", "taming", "--input", str(tmp_path / "last.ckpt"), "--image_size", "32",
                           "--output", str(tmp_path / "converted")]) == 0
    return tmp_path / "converted"


def test_the_recipe_sharpens_the_decoder_of_a_converted_tokenizer_and_every_image_keeps_its_ids(converted, tmp_path, capsys):
    held_out = pixel_dataset(load_sample_dataset()["test"], 32)
    start = VQTokenizer.from_pretrained(converted).eval()
    ids_before = start.encode(stack_pixel_values(held_out))
    mse_before = evaluate_tokenizer(start, held_out, progress=False)["mse"]

    out = tmp_path / "run"
    assert run("train", ["--config", RECIPE, f"model.init_from={converted}", f"training.output_dir={out}", *SMALL]) == 0
    assert f"fine-tuning {converted} with its encoder and quantizer frozen" in capsys.readouterr().out

    tuned = VQTokenizer.from_pretrained(out / "tokenizer").eval()
    assert torch.equal(tuned.encode(stack_pixel_values(held_out)), ids_before)  # all 276 held-out images
    for part in ("encoder", "quantizer"):
        assert_same_state(state_of(getattr(start, part)), getattr(tuned, part), part)
    assert not torch.equal(tuned.decoder.last_layer, start.decoder.last_layer)
    mse_after = evaluate_tokenizer(tuned, held_out, progress=False)["mse"]
    assert mse_after < 0.5 * mse_before, (mse_before, mse_after)

    metadata = tuned.config.training_metadata
    assert metadata["fine_tuned_from"] == {"tokenizer": str(converted), "frozen": ["encoder", "quantizer"]}
    assert metadata["converted_from"]["source"] == "taming"  # the card keeps naming the project and its license
    assert "taming-transformers" in (out / "tokenizer" / "README.md").read_text()


def test_what_the_weights_depend_on_cannot_change_and_training_settings_can(converted, capsys):
    for override, field in [("model.codebook_size=128", "codebook_size"),
                            ("model.backbone_config.base_channels=64", "backbone_config.base_channels"),
                            ("model.use_cosine=true", "use_cosine")]:
        assert run("train", ["--config", RECIPE, f"model.init_from={converted}", override]) == 2
        error = capsys.readouterr().err.strip()
        assert len(error.splitlines()) == 1
        assert f"model `{field}` cannot change when fine-tuning: the tokenizer has {field}=" in error
    assert run("train", ["--config", RECIPE, f"model.init_from={converted}", "model.model_type=vqtok-fsq"]) == 2
    assert "a fine-tuning run keeps its type" in capsys.readouterr().err

    changed = load_run_config(RECIPE, [f"model.init_from={converted}", "model.commitment_cost=0.5",
                                       "model.dead_code_threshold=0", "model.backbone_config.gradient_checkpointing=true"])
    config = changed.model
    assert (config.commitment_cost, config.dead_code_threshold, config.backbone_config.gradient_checkpointing) == (0.5, 0.0, True)
    assert config.backbone_config.to_dict() == {**VQTokenizer.config_from_pretrained(converted).backbone_config.to_dict(),
                                                "gradient_checkpointing": True}
    model = changed.build_model()
    start = VQTokenizer.from_pretrained(converted)
    assert_same_state(state_of(start), model, "the tokenizer loaded for fine-tuning")


def test_a_tokenizer_on_the_hub_is_a_start_too(local_hub, tmp_path):
    start = tiny_tokenizer(tmp_path / "tiny")
    start.push_to_hub("local-user/start")
    run_config = load_run_config(None, ["model.init_from=local-user/start", "model.kmeans_init=false"])
    assert run_config.model.kmeans_init is False and run_config.model.codebook_size == 16
    assert_same_state(state_of(start), run_config.build_model(), "the tokenizer from the Hub")


@pytest.mark.parametrize("frozen", [["quantizer"], ["encoder", "quantizer"], ["decoder"]])
def test_frozen_parts_and_the_quantizer_state_stay_bit_identical(frozen, tmp_path):
    torch.manual_seed(0)
    # An EMA codebook with restarts: a quantizer that is not frozen changes its buffers every step.
    model = VQTokenizer.from_config(VQConfig(image_size=16, latent_dim=8, codebook_size=16, dead_code_threshold=5.0,
                                             backbone_config={"base_channels": 8}))
    model(torch.rand(8, 3, 16, 16) * 2 - 1)  # k-means initialisation, before the run
    before = {part: state_of(getattr(model, part)) for part in ("encoder", "quantizer", "decoder")}
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, batch_size=8, learning_rate=3e-3, warmup_steps=0,
                             report_to="none", freeze=frozen)
    train_tokenizer(model, pixel_dataset(tiny_images(16), 16, augment=True), None, args)
    for part, state in before.items():
        if part in frozen:
            assert_same_state(state, getattr(model, part), part)
        else:
            assert any(not torch.equal(state[name], tensor) for name, tensor in getattr(model, part).state_dict().items())
    assert model.train().quantizer.training is ("quantizer" not in frozen)


def test_freezing_is_checked():
    with pytest.raises(ValueError, match=r"`freeze` takes distinct parts among \['encoder', 'quantizer', 'decoder'\]"):
        TrainingArguments(freeze=["codebook"])
    with pytest.raises(ValueError, match="nothing is left to train"):
        TrainingArguments(freeze=["encoder", "quantizer", "decoder"])
    with pytest.raises(ValueError, match="adaptive weight balances the gradients at the decoder's last layer"):
        model = VQTokenizer.from_config(VQConfig(image_size=16, latent_dim=8, codebook_size=16,
                                                 backbone_config={"base_channels": 8}))
        args = TrainingArguments(output_dir="unused", max_steps=1, report_to="none", freeze=["decoder"])
        from vqtok.losses import build_objectives

        train_tokenizer(model, pixel_dataset(tiny_images(8), 16), None, args,
                        objectives=build_objectives({"adversarial": {"num_layers": 1}}))
