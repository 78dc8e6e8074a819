"""The perceptual and adversarial training objectives: the GAN losses, VQGAN's adaptive weight and
LeCam's regulariser against hand-computed values, the PatchGAN's shape, and both objectives in the
training loop: with every tokenizer type, resumed exactly (tokenizer and discriminator), and never
published with the tokenizer."""

import pytest
import torch
from accelerate.utils import set_seed

from test_contract import SHIPPED_TYPES, tiny_values
from tiny_data import run_interrupted_after, tiny_images
from vqtok import VQTokenizer
from vqtok.auto import registered_config_class
from vqtok.data import pixel_dataset
from vqtok.losses import AdversarialObjective, PatchDiscriminator, PerceptualObjective, build_objectives
from vqtok.losses.adversarial import adaptive_weight, discriminator_loss, generator_loss, lecam_penalty
from vqtok.metrics import MissingWeightsError
from vqtok.training import trainer
from vqtok.training.arguments import TrainingArguments
from vqtok.training.run_config import load_run_config
from vqtok.training.trainer import make_accelerator, train_tokenizer


def test_gan_losses_by_hand():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    # hinge: 1/2 [mean(0, 0.5) + mean(0, 1.5)] = 1/2 (0.25 + 0.75)
    assert discriminator_loss("hinge", real, fake).item() == pytest.approx(0.5)
    softplus = lambda x: torch.log1p(torch.exp(torch.tensor(x))).item()  # noqa: E731
    expected = 0.5 * ((softplus(-2.0) + softplus(-0.5)) / 2 + (softplus(-2.0) + softplus(0.5)) / 2)
    assert discriminator_loss("non-saturating", real, fake).item() == pytest.approx(expected)
    assert generator_loss("hinge", fake).item() == pytest.approx(0.75)
    assert generator_loss("non-saturating", fake).item() == pytest.approx((softplus(2.0) + softplus(-0.5)) / 2)


def test_adaptive_weight_is_the_ratio_of_gradient_norms_at_the_last_layer():
    weight = torch.tensor([1.0, 2.0], requires_grad=True)
    reconstruction = 3 * weight.sum()  # gradient (3, 3): norm 3 sqrt 2
    generator = 0.5 * (weight * torch.tensor([1.0, -1.0])).sum()  # gradient (0.5, -0.5): norm sqrt(2) / 2
    expected = 3 * 2**0.5 / (2**0.5 / 2 + 1e-4)
    assert adaptive_weight(reconstruction, generator, weight).item() == pytest.approx(expected, rel=1e-6)
    assert adaptive_weight(reconstruction, 0 * weight.sum(), weight).item() == pytest.approx(1e4)  # clipped


def test_lecam_penalty_by_hand():
    real, fake = torch.tensor([1.0, -1.0]), torch.tensor([0.5, 2.0])
    # mean relu(real - 0.25)^2 = (0.75^2 + 0) / 2; mean relu(0.75 - fake)^2 = (0.25^2 + 0) / 2
    expected = 0.75**2 / 2 + 0.25**2 / 2
    assert lecam_penalty(real, fake, torch.tensor(0.75), torch.tensor(0.25)).item() == pytest.approx(expected)


def test_the_patchgan_gives_one_logit_per_patch_and_starts_as_vqgans():
    discriminator = PatchDiscriminator(3, base_channels=8, num_layers=3)
    assert discriminator(torch.zeros(2, 3, 32, 32)).shape == (2, 1, 2, 2)  # 32 -> 4 by three stride-2 convs, -1 -1
    assert discriminator.smallest_image() == 24
    first = discriminator.layers[0]
    assert first.weight.std().item() == pytest.approx(0.02, rel=0.2) and torch.equal(first.bias, torch.zeros(8))
    grouped = PatchDiscriminator(1, base_channels=8, num_layers=2, norm="group")
    assert grouped(torch.zeros(1, 1, 16, 16)).shape == (1, 1, 2, 2)


def test_the_adversarial_objective_is_built_after_the_terms_it_reads():
    built = build_objectives({"adversarial": {}, "perceptual": {"vgg_weights": "random"}})
    assert list(built) == ["perceptual", "adversarial"]
    with pytest.raises(ValueError, match="must be one of \\['hinge', 'non-saturating'\\]"):
        AdversarialObjective(loss="wasserstein")
    run = load_run_config("training/configs/vqgan.yaml")
    assert list(run.objectives) == ["perceptual", "adversarial"] and run.model.backbone_config.backbone_type == "vqgan"
    assert run.objectives["adversarial"]["start_step"] == 20000


def test_a_run_without_vgg_weights_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="vgg16-397923af.pth"):
        PerceptualObjective()


def test_a_discriminator_too_deep_for_the_images_is_refused():
    objective = AdversarialObjective(num_layers=3)
    with pytest.raises(ValueError, match="needs images of at least 24 pixels; the tokenizer's are 16"):
        objective.setup(tiny_model("vqtok-vq"))


def tiny_model(model_type: str, seed: int = 0):
    set_seed(seed)
    config = registered_config_class(model_type)(**tiny_values(model_type, image_size=16))
    return VQTokenizer.from_config(config)


def sharp_run(output_dir, model_type: str = "vqtok-vq", seed: int = 0, steps: int = 4, **overrides):
    """A tiny tokenizer trained `steps` steps with LPIPS (random VGG16) and a PatchGAN with LeCam."""
    model = tiny_model(model_type, seed)
    objectives = build_objectives({
        "perceptual": {"weight": 0.5, "vgg_weights": "random"},
        "adversarial": {"weight": 0.5, "start_step": 1, "num_layers": 2, "base_channels": 8, "learning_rate": 1e-3,
                        "lecam_weight": 0.01, "lecam_decay": 0.9},
    })
    arguments = {"checkpoint_every": 2, **overrides}
    args = TrainingArguments(output_dir=str(output_dir), max_steps=steps, batch_size=4, learning_rate=1e-2,
                             warmup_steps=0, log_every=1, report_to="none", seed=0, **arguments)
    accelerator = make_accelerator(args)
    records = []
    accelerator.log = lambda values, step=None, **kwargs: records.append((step, values))
    train_tokenizer(model, pixel_dataset(tiny_images(8, width=18, height=16), 16, augment=True), None, args, accelerator,
                    objectives=objectives)
    return model, objectives["adversarial"], records


def test_a_stopped_and_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch):
    model, adversarial, records = sharp_run(tmp_path / "straight")
    assert records[0][1]["train/adversarial_loss"] == 0.0 and "train/discriminator_loss" not in records[0][1]
    later = records[-1][1]
    assert later["train/adversarial_loss"] != 0.0 and "train/discriminator_loss" in later and "train/lecam_loss" in later
    assert later["train/perceptual_loss"] > 0
    assert adversarial.ema_real_logit.item() != 0.0  # LeCam's averages moved
    assert not [name for name in model.state_dict() if "discriminator" in name or "lpips" in name or "vgg" in name]

    run_interrupted_after(2, monkeypatch, lambda: sharp_run(tmp_path / "resumed"), loop=trainer)
    resumed, resumed_adversarial, _ = sharp_run(tmp_path / "resumed", seed=7, resume_from_checkpoint="latest")
    for reference, other in ((model, resumed), (adversarial, resumed_adversarial)):
        expected = reference.state_dict()
        assert expected.keys() == other.state_dict().keys()
        assert all(torch.equal(expected[name], tensor) for name, tensor in other.state_dict().items()), type(reference)
    checkpoint = tmp_path / "straight" / "checkpoints" / "step_4"
    assert (checkpoint / "model_1.safetensors").is_file() and (checkpoint / "optimizer_1.bin").is_file()


@pytest.mark.parametrize("model_type", SHIPPED_TYPES)
def test_every_type_trains_finite_with_both_objectives(model_type, tmp_path):
    model, _, records = sharp_run(tmp_path, model_type, steps=2, checkpoint_every=0)
    values = records[-1][1]
    assert all(torch.isfinite(torch.tensor(value)) for name, value in values.items() if name.startswith("train/"))
    assert values["train/adversarial_loss"] != 0.0 and values["train/skipped_steps"] == 0
    assert all(torch.isfinite(tensor).all() for tensor in model.state_dict().values() if tensor.is_floating_point())


def test_before_its_start_step_the_adversarial_objective_leaves_the_tokenizers_training_unchanged(tmp_path):
    """The discriminator draws its start from a copy of the seeded random state: the tokenizer's
    k-means start and codebook restarts draw the same numbers with or without it."""
    def trained(objectives):
        model = tiny_model("vqtok-vq", 0)
        args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, batch_size=4, learning_rate=1e-2, warmup_steps=0,
                                 report_to="none", seed=0)
        train_tokenizer(model, pixel_dataset(tiny_images(8, width=18, height=16), 16, augment=True), None, args,
                        objectives=build_objectives(objectives))
        return model.state_dict()

    dry = trained({})
    waiting = trained({"adversarial": {"start_step": 10, "num_layers": 2, "base_channels": 8}})
    assert all(torch.equal(dry[name], tensor) for name, tensor in waiting.items())
    started = trained({"adversarial": {"start_step": 0, "num_layers": 2, "base_channels": 8}})
    assert not all(torch.equal(dry[name], tensor) for name, tensor in started.items())


def test_the_cpu_recipe_trains_from_the_command_line_with_both_objectives(tmp_path):
    """vqgan_cpu.yaml through train_tokenizer.py, LPIPS (random VGG16) added from the command line;
    the published tokenizer holds neither the discriminator nor LPIPS."""
    from safetensors import safe_open

    from test_sampling import load_script

    results = load_script("train_tokenizer").main([
        "--config", "training/configs/vqgan_cpu.yaml", f"training.output_dir={tmp_path}", "training.max_steps=2",
        "training.batch_size=8", "training.warmup_steps=0", "training.report_to=none",
        "objectives.adversarial.start_step=0", "objectives.perceptual.weight=1.0", "objectives.perceptual.vgg_weights=random",
    ])
    assert results["skipped_steps"] == 0 and {"psnr", "ssim", "high_frequency_energy_ratio", "code_entropy"} <= set(results)
    with safe_open(tmp_path / "tokenizer" / "model.safetensors", "pt") as weights:
        names = list(weights.keys())
    assert names and not [name for name in names if "discriminator" in name or "vgg" in name or "lpips" in name]
    recorded = VQTokenizer.from_pretrained(tmp_path / "tokenizer").config.training_metadata
    assert set(recorded["objectives"]) == {"adversarial", "perceptual"}
