"""What plugs in without touching the model base, the loader, the Hub code or the trainer: a type's
reconstruction objective and optimizer, regularisers switched on through the shared config, the
trainer's logging of every named loss and statistic, and (with the test-only extensions of
`example_extensions.py`) a quantizer with implicit codes and several codes per position, a backbone
and a training objective with a network and an optimizer of its own."""

import json
import math

import pytest
import torch
import vqtok.training.trainer as trainer
from accelerate.utils import set_seed
from example_extensions import (
    CriticObjective,
    PixelShuffleBackboneConfig,
    PixelShuffleEncoder,
    ResidualSignConfig,
    ResidualSignQuantizer,
)
from tiny_data import run_interrupted_after, tiny_images

from vqtok import (
    PriorConfig,
    TokenLayout,
    TokenPrior,
    VQConfig,
    VQImageProcessor,
    VQModel,
    VQTokenizer,
    codes_from_dataset,
    decode_samples,
    tokenize_dataset,
)
from vqtok.data import pixel_dataset
from vqtok.losses import build_objectives
from vqtok.options import NON_NEGATIVE
from vqtok.regularizers import REGULARIZERS, Regularizer, RegularizerOutput, register_regularizer
from vqtok.training import TrainingArguments, load_run_config, make_accelerator, train_prior, train_tokenizer
from vqtok.training.loop import Update, optimization_step, start_training

TINY = dict(image_size=8, backbone_config=dict(base_channels=8, downsampling_factor=2, norm_groups=4), latent_dim=4, codebook_size=8)


def images(batch: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


class CodebookNormPenalty(Regularizer):
    """weight x mean(code vectors^2); counts its training forwards in a buffer."""

    name = "codebook_norm"
    options = {"weight": NON_NEGATIVE(1.0, "Weight of the penalty.")}

    def __init__(self, **options):
        super().__init__()
        self.set_options(options)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, inputs):
        if self.training:
            self.calls.add_(1)
        loss = self.weight * inputs.quantizer.code_vectors().pow(2).mean()
        return RegularizerOutput({"codebook_norm_loss": loss}, {"codebook_norm_calls": self.calls.float()})


class ClashingRegularizer(Regularizer):
    name = "clashing"

    def forward(self, inputs):
        return RegularizerOutput({"commitment_loss": inputs.latents.sum()})


@pytest.fixture
def regularizers():
    for regularizer in (CodebookNormPenalty, ClashingRegularizer):
        register_regularizer(regularizer)
    yield
    for name in ("codebook_norm", "clashing"):
        REGULARIZERS.classes.pop(name)


def test_a_regulariser_switched_on_in_the_config_adds_its_named_term_and_gradient(regularizers):
    torch.manual_seed(0)
    model = VQModel(VQConfig(**TINY, use_ema=False, regularizers={"codebook_norm": {"weight": 0.5}})).train()
    out = model(images())
    assert set(out.losses) == {"reconstruction_loss", "commitment_loss", "codebook_loss", "codebook_norm_loss"}
    codebook = model.quantizer.codebook.weight
    assert out.losses["codebook_norm_loss"].item() == pytest.approx(0.5 * codebook.detach().pow(2).mean().item())
    assert torch.allclose(out.loss, sum(out.losses.values()))
    assert out.stats["codebook_norm_calls"].item() == 1
    out.losses["codebook_norm_loss"].backward()
    assert torch.allclose(codebook.grad, 0.5 * 2 * codebook.detach() / codebook.numel())


def test_nothing_changes_when_no_regulariser_is_on(regularizers):
    model = VQModel(VQConfig(**TINY, use_ema=False))
    assert len(model.regularizers) == 0
    assert not [name for name in model.state_dict() if name.startswith("regularizers.")]
    assert set(model(images()).losses) == {"reconstruction_loss", "commitment_loss", "codebook_loss"}


def test_regulariser_state_is_saved_and_eval_leaves_it_alone(regularizers, tmp_path):
    model = VQModel(VQConfig(**TINY, regularizers={"codebook_norm": {"weight": 0.1}})).train()
    model(images())
    model(images(seed=1))
    model.eval()(images())
    assert int(model.regularizers["codebook_norm"].calls) == 2
    model.save_pretrained(tmp_path)
    loaded = VQTokenizer.from_pretrained(tmp_path)
    assert loaded.config.regularizers == {"codebook_norm": {"weight": 0.1}}
    assert int(loaded.regularizers["codebook_norm"].calls) == 2


@pytest.mark.parametrize(
    "settings,error,message",
    [
        ({"nope": {}}, ValueError, r"unknown regulariser 'nope'; registered: \[.*'codebook_norm'"),
        ({"codebook_norm": {"weight": -1.0}}, ValueError, r"`regularizers.codebook_norm` option `weight` must lie"),
        ({"codebook_norm": {"weight": float("nan")}}, ValueError, "`weight` must be a finite number"),
        ({"codebook_norm": {"wieght": 1.0}}, ValueError,
         "unknown config field `regularizers.codebook_norm` option `wieght`"),
        ({"codebook_norm": 1.0}, TypeError, "must map option names to values"),
        (["codebook_norm"], TypeError, "`regularizers` must be dict"),
    ],
)
def test_bad_regulariser_settings_are_rejected(regularizers, settings, error, message):
    with pytest.raises(error, match=message):
        VQConfig(**TINY, regularizers=settings)


def test_a_term_reported_twice_is_an_error(regularizers):
    model = VQModel(VQConfig(**TINY, regularizers={"clashing": {}}))
    with pytest.raises(ValueError, match=r"regulariser 'clashing' reports \['commitment_loss'\]"):
        model(images())


class LikelihoodVQModel(VQModel):
    """A type that trains with its own reconstruction objective and its own optimizer."""

    optimizer_requests: list = []

    def reconstruction_losses(self, reconstruction, pixel_values, quantized):
        sse = (reconstruction.float() - pixel_values.float()).pow(2).flatten(1).sum(dim=1)
        return {"nll_loss": 0.5 * pixel_values[0].numel() * torch.log(sse.mean().clamp_min(1e-12))}

    def build_optimizer(self, learning_rate, weight_decay=0.0, betas=(0.9, 0.999)):
        self.optimizer_requests.append((learning_rate, weight_decay, betas))
        return torch.optim.SGD(
            [{"params": self.encoder.parameters()}, {"params": self.decoder.parameters(), "lr": learning_rate / 2}],
            lr=learning_rate,
        )


def test_a_type_replaces_the_reconstruction_objective():
    out = LikelihoodVQModel(VQConfig(**TINY))(images())
    assert set(out.losses) == {"nll_loss", "commitment_loss"}
    assert torch.allclose(out.loss, out.losses["nll_loss"] + out.losses["commitment_loss"])


def test_the_trainer_uses_the_types_optimizer_and_logs_every_term_by_name(regularizers, tmp_path):
    torch.manual_seed(0)
    model = LikelihoodVQModel(VQConfig(**TINY, regularizers={"codebook_norm": {"weight": 0.1}}))
    encoder_before = model.encoder.conv_in.weight.detach().clone()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, batch_size=4, learning_rate=0.05,
                             weight_decay=0.01, betas=[0.8, 0.9], warmup_steps=0, log_every=1, report_to="none")
    accelerator = make_accelerator(args)
    records = []
    accelerator.log = lambda values, step=None, **kwargs: records.append(values)
    train_tokenizer(model, pixel_dataset(tiny_images(8, width=8, height=8), 8), None, args, accelerator)

    assert LikelihoodVQModel.optimizer_requests[-1] == (0.05, 0.01, (0.8, 0.9))
    assert not torch.equal(model.encoder.conv_in.weight, encoder_before)
    assert len(records) == 2
    for name in ("loss", "nll_loss", "commitment_loss", "codebook_norm_loss", "perplexity", "usage",
                 "restarted_codes", "codebook_norm_calls", "lr"):
        assert f"train/{name}" in records[-1], name
    assert records[-1]["train/codebook_norm_calls"] == 2


class WeightedLikelihoodConfig(VQConfig):
    """A type with a field its model reads (declared in its own `options`), not its quantizer."""

    model_type = "vqtok-test-likelihood"
    options = {"likelihood_weight": NON_NEGATIVE(0.5, "Weight of the likelihood.")}


class UndeclaredFieldConfig(VQConfig):
    model_type = "vqtok-test-undeclared"
    mystery: float = 1.0


def test_fields_for_the_model_are_checked_and_kept_from_the_quantizer():
    config = WeightedLikelihoodConfig(**TINY, likelihood_weight=2.0)
    assert "likelihood_weight" not in config.quantizer_kwargs()
    assert set(config.quantizer_kwargs()) == set(VQConfig(**TINY).quantizer_kwargs())
    assert VQModel(config).config.likelihood_weight == 2.0
    with pytest.raises(ValueError, match="config field `likelihood_weight` must be a finite number"):
        WeightedLikelihoodConfig(**TINY, likelihood_weight=float("nan"))
    with pytest.raises(TypeError, match=r"field\(s\) \['mystery'\] are not declared"):
        UndeclaredFieldConfig(**TINY)


# --- the test-only extensions of example_extensions.py: each is its own code plus one registration --
def test_implicit_residual_codes_follow_the_hand_computed_levels():
    quantizer = ResidualSignQuantizer(dim=4, depth=2)
    assert quantizer.codebook_size == 16 and quantizer.codes_per_position == 2 and not list(quantizer.parameters())
    z = torch.tensor([0.7, -0.2, 0.1, -0.9]).reshape(1, 4, 1, 1)
    # level 0: signs [+, -, +, -] -> id 1 + 4 = 5; residual [-0.3, 0.8, -0.9, 0.1] -> [-, +, -, +] -> id 2 + 8 = 10
    ids = quantizer.select(z)
    assert ids.tolist() == [[[[5, 10]]]]
    assert torch.allclose(quantizer.embed(ids).flatten(), torch.tensor([0.5, -0.5, 0.5, -0.5]))
    assert torch.equal(quantizer(z).indices, ids)
    with pytest.raises(ValueError, match=r"must end with its 2 codes per position, \[B, \.\.\., 2\]"):
        quantizer.embed(torch.zeros(1, 1, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="must equal the 16 codes"):
        ResidualSignConfig(**{**TINY, "codebook_size": 8})


def test_a_type_with_implicit_codes_and_two_codes_per_position_goes_through_tokens_and_the_prior(tmp_path):
    config = ResidualSignConfig(**{k: v for k, v in TINY.items() if k != "codebook_size"})
    assert (config.codebook_size, config.codes_per_position, config.token_shape) == (16, 2, (4, 4, 2))
    torch.manual_seed(0)
    model = VQTokenizer.from_config(config).eval()
    model.save_pretrained(tmp_path / "tokenizer")
    VQImageProcessor.for_tokenizer(config).save_pretrained(tmp_path / "tokenizer")
    loaded = VQTokenizer.from_pretrained(tmp_path / "tokenizer")
    assert type(loaded.quantizer) is ResidualSignQuantizer and loaded.config.codebook_size == 16

    images = tiny_images(6, width=8, height=8)
    tokens = tokenize_dataset(images, str(tmp_path / "tokenizer"), bos_token_id=16)
    assert len(tokens[0]["input_ids"]) == 1 + 4 * 4 * 2
    layout = TokenLayout.for_tokenizer(model, bos_token_id=16)
    codes = codes_from_dataset(tokens, layout)
    pixels = VQImageProcessor.for_tokenizer(config)(list(images["image"]), return_tensors="pt")["pixel_values"]
    assert codes.shape == (6, 4, 4, 2) and torch.equal(codes, model.encode(pixels))

    prior = TokenPrior(PriorConfig.for_tokenizer(model, hidden_size=16, num_layers=1, num_heads=2))
    assert prior.config.codes_per_position == 2 and prior.layout.sequence_length == 1 + 32
    args = TrainingArguments(output_dir=str(tmp_path / "prior"), max_steps=2, batch_size=3, warmup_steps=0,
                             report_to="none", eval_batch_size=6)
    results = train_prior(prior, codes, codes, args)
    assert math.isfinite(results["bits_per_token"])
    samples = prior.generate_codes(3, seed=0)
    assert samples.shape == (3, 4, 4, 2) and int(samples.max()) < 16
    assert decode_samples(model, samples).shape == (3, 3, 8, 8)


def test_a_registered_backbone_is_built_from_backbone_config_and_round_trips(tmp_path):
    backbone = {"backbone_type": "test-pixel-shuffle", "downsampling_factor": 4}
    config = VQConfig(image_size=8, latent_dim=4, codebook_size=8, backbone_config=backbone)
    assert isinstance(config.backbone_config, PixelShuffleBackboneConfig)
    assert config.downsampling_factor == 4 and config.token_grid == (2, 2)
    model = VQModel(config).train()
    assert isinstance(model.encoder, PixelShuffleEncoder) and isinstance(model.decoder.conv_out, torch.nn.Conv2d)
    model(images(8, seed=1)).loss.backward()
    model.eval()
    ids = model.encode(images(seed=2))
    assert ids.shape == (4, 2, 2) and model.decode(ids).shape == (4, 3, 8, 8)
    with pytest.raises(ValueError, match="positive multiple of the downsampling factor 4"):
        model.encode(torch.zeros(1, 3, 6, 8))
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["backbone_config"] == backbone
    loaded = VQTokenizer.from_pretrained(tmp_path)
    assert isinstance(loaded.encoder, PixelShuffleEncoder) and torch.equal(loaded.encode(images(seed=2)), ids)
    run = load_run_config(None, ["model.backbone_config.backbone_type=test-pixel-shuffle",
                                 "model.backbone_config.downsampling_factor=2.0", "model.image_size=8"])
    assert run.model.backbone_config == PixelShuffleBackboneConfig(downsampling_factor=2)
    with pytest.raises(ValueError, match=r"unknown backbone_type 'nope'; registered: \[.*'test-pixel-shuffle'"):
        VQConfig(backbone_config={"backbone_type": "nope"})
    with pytest.raises(ValueError, match=r"unknown backbone_config field\(s\) \['base_channels'\]"):
        VQConfig(backbone_config={"backbone_type": "test-pixel-shuffle", "base_channels": 8})
    with pytest.raises(ValueError, match=r"backbone_config field `downsampling_factor` must be one of \[1, 2, 4\]"):
        VQConfig(image_size=8, backbone_config={"backbone_type": "test-pixel-shuffle", "downsampling_factor": 3})


def critic_run(output_dir, seed: int = 0, **overrides):
    """A tiny tokenizer trained 4 steps with the test-only critic objective; returns (tokenizer,
    critic objective, logged records)."""
    torch.manual_seed(seed)
    model = VQModel(VQConfig(**TINY))
    critic = CriticObjective(weight=0.5, learning_rate=0.05, start_step=1)
    args = TrainingArguments(output_dir=str(output_dir), max_steps=4, batch_size=4, learning_rate=1e-2, warmup_steps=0,
                             log_every=1, report_to="none", checkpoint_every=2, seed=0, **overrides)
    accelerator = make_accelerator(args)
    records = []
    accelerator.log = lambda values, step=None, **kwargs: records.append((step, values))
    train_tokenizer(model, pixel_dataset(tiny_images(8, width=10, height=8), 8, augment=True), None, args, accelerator,
                    objectives={"test-critic": critic})
    return model, critic, records


def test_an_objective_trains_its_own_network_beside_the_tokenizer_and_is_never_published(tmp_path, monkeypatch):
    model, critic, records = critic_run(tmp_path / "straight")
    set_seed(0)  # what train_tokenizer does before the objective's setup
    untrained = CriticObjective()
    untrained.setup(model)
    assert any(not torch.equal(untrained.critic.state_dict()[k], v) for k, v in critic.critic.state_dict().items())
    assert int(critic.critic_updates) == 3  # steps 1, 2, 3
    assert "train/critic_generator_loss" in records[0][1] and "train/critic_loss" not in records[0][1]  # starts at step 1
    assert "train/critic_loss" in records[-1][1]
    assert not [name for name in model.state_dict() if "critic" in name]
    checkpoint = tmp_path / "straight" / "checkpoints" / "step_4"
    assert (checkpoint / "model_1.safetensors").is_file() and (checkpoint / "optimizer_1.bin").is_file()

    run_interrupted_after(2, monkeypatch, lambda: critic_run(tmp_path / "resumed"), loop=trainer)
    resumed, resumed_critic, _ = critic_run(tmp_path / "resumed", seed=7, resume_from_checkpoint="latest")
    for reference, other in ((model, resumed), (critic, resumed_critic)):
        expected = reference.state_dict()
        assert all(torch.equal(expected[k], v) for k, v in other.state_dict().items())
    assert int(resumed_critic.critic_updates) == 3  # the buffer came back from the checkpoint


def test_each_update_backpropagates_into_its_own_parameters_only(tmp_path):
    """Two updates whose first loss also runs through the second's module: the second module's
    gradient is that of its own loss, as computed by hand."""
    first, second = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        first.weight.fill_(2.0)
        second.weight.fill_(3.0)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to="none", warmup_steps=0,
                             lr_scheduler="constant", max_grad_norm=0.0)
    accelerator = make_accelerator(args)
    seen = {}

    def first_loss(module, context):  # (w2 * w1 * x)^2: would give w2 a gradient if it were not held back
        return LossOnly((second(module(context.batch)) ** 2).sum())

    def second_loss(module, context):  # w2 * x -> d/dw2 = x
        seen["first_grad_of_second"] = second.weight.grad
        return LossOnly(module(context.batch).sum())

    updates = [Update("first", first, torch.optim.SGD(first.parameters(), lr=0.1), first_loss),
               Update("second", second, torch.optim.SGD(second.parameters(), lr=0.1), second_loss)]
    start_training(accelerator, updates, args, {})
    optimization_step(accelerator, updates, iter([torch.ones(1, 1)]), args, 0, lambda outputs: None)
    assert seen["first_grad_of_second"] is None
    # first: d/dw1 (w2 w1)^2 = 2 w2^2 w1 = 36 -> 2 - 3.6; second: d/dw2 (w2) = 1 -> 3 - 0.1
    assert first.weight.item() == pytest.approx(2.0 - 3.6)
    assert second.weight.item() == pytest.approx(3.0 - 0.1)


class LossOnly:
    def __init__(self, loss):
        self.loss = loss


def test_the_objectives_section_of_a_run_config_is_parsed_and_checked():
    run = load_run_config(None, ["objectives.test-critic.weight=0.25", "objectives.test-critic.start_step=2.0"])
    assert run.objectives == {"test-critic": {"weight": 0.25, "start_step": 2}}
    assert run.to_dict()["objectives"] == run.objectives
    with pytest.raises(ValueError, match=r"run config section `objectives` names an unknown training objective 'nope'"):
        load_run_config(None, ["objectives.nope.weight=1"])
    with pytest.raises(ValueError, match=r"unknown run config section `objectives.test-critic` option `wieght`"):
        load_run_config(None, ["objectives.test-critic.wieght=1"])
    with pytest.raises(ValueError, match="`weight` must lie in"):
        load_run_config(None, ["objectives.test-critic.weight=-1"])
    assert build_objectives(run.objectives)["test-critic"].weight == 0.25


def test_fp16_is_refused_with_several_updates_and_an_update_checks_its_cadence(tmp_path):
    """Accelerate's one fp16 loss scaler would unscale and update for every optimizer at each step."""

    class Fp16Accelerator:  # what start_training reads before preparing anything
        scaler = object()

    args = TrainingArguments(output_dir=str(tmp_path), max_steps=1, report_to="none")
    model, other = VQModel(VQConfig(**TINY)), torch.nn.Linear(1, 1)
    updates = [Update("tokenizer", model, torch.optim.SGD(model.parameters(), lr=0.1), None),
               Update("critic", other, torch.optim.SGD(other.parameters(), lr=0.1), None)]
    with pytest.raises(ValueError, match=r"fp16 supports one optimizer, but this run has 2 updates \(tokenizer, critic\)"):
        start_training(Fp16Accelerator(), updates, args, {})
    with pytest.raises(ValueError, match="`every` must be an int >= 1, got 0"):
        Update("x", model, torch.optim.SGD(model.parameters(), lr=0.1), None, every=0)
    assert Update("x", model, torch.optim.SGD(model.parameters(), lr=0.1), None, every=3, start_step=2).due_steps(10) == 3
