"""What a tokenizer type or a regulariser plugs in without touching the model base or the trainer:
the reconstruction objective, the optimizer, regularisers switched on through the shared config,
and the trainer's logging of every named loss and statistic."""

import pytest
import torch
from tiny_data import tiny_images

from vqtok import VQConfig, VQModel, VQTokenizer
from vqtok.data import pixel_dataset
from vqtok.options import NON_NEGATIVE
from vqtok.regularizers import REGULARIZERS, Regularizer, RegularizerOutput, register_regularizer
from vqtok.training import TrainingArguments, make_accelerator, train_tokenizer

TINY = dict(image_size=8, backbone_config=dict(base_channels=8, downsampling_factor=2, norm_groups=4), latent_dim=4, codebook_size=8)


def images(batch: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


class CodebookNormPenalty(Regularizer):
    """weight x mean(code vectors^2); counts its training forwards in a buffer."""

    name = "codebook_norm"
    options = {"weight": NON_NEGATIVE}

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.check_options({"weight": weight})
        self.weight = float(weight)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, inputs):
        if self.training:
            self.calls.add_(1)
        loss = self.weight * inputs.quantizer.code_sample(None).pow(2).mean()
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
        REGULARIZERS.pop(name)


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

    def build_optimizer(self, learning_rate, weight_decay=0.0):
        self.optimizer_requests.append((learning_rate, weight_decay))
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
                             weight_decay=0.01, warmup_steps=0, log_every=1, report_to="none")
    accelerator = make_accelerator(args)
    records = []
    accelerator.log = lambda values, step=None, **kwargs: records.append(values)
    train_tokenizer(model, pixel_dataset(tiny_images(8, width=8, height=8), 8), None, args, accelerator)

    assert LikelihoodVQModel.optimizer_requests[-1] == (0.05, 0.01)
    assert not torch.equal(model.encoder.conv_in.weight, encoder_before)
    assert len(records) == 2
    for name in ("loss", "nll_loss", "commitment_loss", "codebook_norm_loss", "perplexity", "usage",
                 "restarted_codes", "codebook_norm_calls", "lr"):
        assert f"train/{name}" in records[-1], name
    assert records[-1]["train/codebook_norm_calls"] == 2


class WeightedLikelihoodConfig(VQConfig):
    """A type with a field its model reads (declared in `model_options`), not its quantizer."""

    model_type = "vqtok-test-likelihood"
    model_options = {"likelihood_weight": NON_NEGATIVE}
    likelihood_weight: float = 0.5


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
    with pytest.raises(TypeError, match=r"fields \['mystery'\] are declared neither in the options of VectorQuantizer"):
        UndeclaredFieldConfig(**TINY)
