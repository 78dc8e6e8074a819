"""The contract every registered tokenizer type keeps, tested for each one with no test code of its
own: a new type registered in `vqtok/models/__init__.py` is picked up here automatically.

- save -> load gives identical ids, identical parameters and identical buffers;
- `encode` is deterministic and changes no state, in train and in eval mode; an eval forward changes
  no state;
- bad pixel values, bad token ids and bad config values raise clear errors naming what was wrong;
- outputs and gradients are finite under bf16 autocast with latents of magnitude 1e4;
- a stop-and-resume training run ends with the weights of an uninterrupted one;
- the quantizer is built from the config's own fields, each a real keyword of the quantizer;
- ids follow the id contract: `[B, h, w]`, or `[B, h, w, R]` with R codes per position, and
  round-trip through `TokenLayout` and the flattened form `decode` accepts;
- every type vqtok ships has a training YAML under `training/configs/`.

The test-only type of `example_extensions.py` (implicit codes, K derived from D, two codes per
position) runs through all of them.
"""

import math
from pathlib import Path

import pytest
import torch
from accelerate.utils import set_seed
from tiny_data import run_interrupted_after, tiny_images

from vqtok import VQConfig, VQTokenizer
from vqtok.quantizers import sampled_code_vectors
from vqtok.data import pixel_dataset
from vqtok import TokenLayout
from vqtok.auto import TOKENIZER_REGISTRY, registered_config_class, registered_model_class
from vqtok.training import TrainingArguments, load_run_config, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
TYPES = sorted(TOKENIZER_REGISTRY)
SHIPPED_TYPES = [name for name in TYPES if registered_model_class(name).__module__.startswith("vqtok.")]
TINY = dict(image_size=8, backbone_config=dict(base_channels=8, downsampling_factor=2, norm_groups=4), latent_dim=4, codebook_size=8)
# The behaviour tests run every type on each backbone vqtok ships (all at f = 2).
TINY_BACKBONES = {
    "conv": TINY["backbone_config"],
    "vqgan": dict(backbone_type="vqgan", base_channels=8, channel_multipliers=[1, 2], num_res_blocks=1, norm_groups=4,
                  z_channels=8),
    "vit": dict(backbone_type="vit", patch_size=2, hidden_size=8, num_layers=1, num_heads=2),
    "titok": dict(backbone_type="titok", patch_size=2, hidden_size=8, num_layers=1, num_heads=2, num_latent_tokens=6),
}
on_every_backbone = pytest.mark.parametrize("backbone", sorted(TINY_BACKBONES))


def tiny_values(model_type: str, **overrides) -> dict:
    """The tiny config of a type: `TINY`, without the codebook size where the type derives K."""
    values = {**TINY, **overrides}
    if derives_codebook_size(registered_config_class(model_type).quantizer_class):
        values.pop("codebook_size", None)
    return values


def derives_codebook_size(quantizer_class) -> bool:
    """Whether the quantizer's options fix K (its default ones refuse K = 2)."""
    try:
        quantizer_class.code_space(quantizer_class.options_with_defaults({}), 2, None, "")
    except ValueError:
        return True
    return False


def tiny_tokenizer(model_type: str, seed: int = 0, backbone: str = "conv", **overrides):
    set_seed(seed)
    overrides.setdefault("backbone_config", TINY_BACKBONES[backbone])
    return VQTokenizer.from_config(registered_config_class(model_type)(**tiny_values(model_type, **overrides)))


def images(batch: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def trained(model_type: str, steps: int = 3, backbone: str = "conv"):
    """A tiny tokenizer after a few training steps (so codebooks, statistics and schedules moved)."""
    model = tiny_tokenizer(model_type, backbone=backbone).train()
    optimizer = model.build_optimizer(learning_rate=1e-2)
    for step in range(steps):
        optimizer.zero_grad()
        model(images(8, seed=step)).loss.backward()
        optimizer.step()
    return model.eval()


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_same_state(expected: dict, model) -> None:
    got = model.state_dict()
    assert expected.keys() == got.keys()
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"tensors differ: {different}"


@pytest.mark.parametrize("model_type", TYPES)
@on_every_backbone
def test_save_then_load_gives_identical_ids_parameters_and_buffers(model_type, backbone, tmp_path):
    model = trained(model_type, backbone=backbone)
    unsaved = set(dict(model.named_buffers())) - set(model.state_dict())
    assert not unsaved, f"buffers left out of the checkpoint (persistent=False): {sorted(unsaved)}"
    model.save_pretrained(tmp_path)
    loaded = VQTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is type(model)
    assert_same_state(snapshot(model), loaded)
    x = images(seed=9)
    assert torch.equal(loaded.encode(x), model.encode(x))
    assert torch.equal(loaded.decode(model.encode(x)), model.decode(model.encode(x)))


@pytest.mark.parametrize("model_type", TYPES)
@pytest.mark.parametrize("mode", ["train", "eval"])
@on_every_backbone
def test_encode_is_deterministic_and_changes_no_state(model_type, backbone, mode):
    model = trained(model_type, backbone=backbone).train(mode == "train")
    before, x = snapshot(model), images(seed=4)
    first = model.encode(x)
    assert torch.equal(first, model.encode(x))
    assert first.dtype == torch.long and first.shape == (4, *model.config.token_shape)
    assert int(first.min()) >= 0 and int(first.max()) < model.config.codebook_size
    assert_same_state(before, model)


@pytest.mark.parametrize("model_type", TYPES)
@on_every_backbone
def test_ids_follow_the_id_contract_through_the_token_layout(model_type, backbone):
    model = trained(model_type, backbone=backbone)
    config, quantizer = model.config, model.quantizer
    x = images(seed=6)
    ids = model.encode(x)
    depth = quantizer.codes_per_position
    grid = (6,) if backbone == "titok" else (4, 4)  # a 1-D sequence of L = 6, or the 4x4 grid of f = 2
    assert config.codes_per_position == depth and config.token_shape == grid + ((depth,) if depth > 1 else ())
    assert ids.shape == (4, *grid) + ((depth,) if depth > 1 else ())
    layout = TokenLayout.for_tokenizer(model, bos_token_id=config.codebook_size)
    sequences = layout.to_sequences(ids)
    assert sequences.shape == (4, 1 + math.prod(grid) * depth)
    # row-major positions, a position's codes consecutive (level 0 first)
    assert torch.equal(sequences[:, 1:], ids.reshape(4, -1))
    assert torch.equal(layout.to_codes(sequences), ids)
    assert torch.equal(model.decode(ids.reshape(4, -1)), model.decode(ids))
    vectors = quantizer.code_vectors(torch.arange(config.codebook_size))
    assert vectors.shape[0] == config.codebook_size and torch.isfinite(vectors).all()
    assert torch.equal(sampled_code_vectors(quantizer, 3, seed=1), sampled_code_vectors(quantizer, 3, seed=1))


@pytest.mark.parametrize("model_type", TYPES)
@on_every_backbone
def test_eval_forward_changes_no_state(model_type, backbone):
    model = trained(model_type, backbone=backbone)
    before = snapshot(model)
    with torch.no_grad():
        model(images(seed=5))
    assert_same_state(before, model)


BAD_PIXELS = [
    (torch.zeros(2, 1, 8, 8), ValueError, "3 channel"),
    (torch.zeros(2, 3, 7, 8), ValueError, "height must be a positive multiple"),
    (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), TypeError, "floating point"),
    (torch.full((1, 3, 8, 8), float("nan")), ValueError, "NaN"),
    (torch.full((1, 3, 8, 8), 255.0), ValueError, r"\[-1, 1\]"),
]
def bad_ids(config) -> list:
    """Ids `decode` must refuse, for a config's K and token shape."""
    shape, k = config.token_shape, config.codebook_size
    count = math.prod(shape)
    return [
        (torch.full((1, *shape), k), ValueError, rf"\[0, {k}\)"),
        (torch.full((1, *shape), -1), ValueError, rf"\[0, {k}\)"),
        (torch.zeros(1, *shape), TypeError, "integer dtype"),
        (torch.zeros(1, count - 1, dtype=torch.long), ValueError,
         f"{count} = {'x'.join(map(str, shape))} tokens" if len(shape) > 1 else f"must have {count} tokens"),
    ]


@pytest.mark.parametrize("model_type", TYPES)
@on_every_backbone
def test_bad_inputs_raise_errors_naming_what_was_wrong(model_type, backbone):
    model = tiny_tokenizer(model_type, backbone=backbone)
    for pixel_values, error, message in BAD_PIXELS:
        with pytest.raises(error, match=message):
            model.encode(pixel_values)
        with pytest.raises(error, match=message):
            model(pixel_values)
    for input_ids, error, message in bad_ids(model.config):
        with pytest.raises(error, match=message):
            model.decode(input_ids)


@pytest.mark.parametrize("model_type", TYPES)
def test_every_numeric_field_rejects_non_finite_values_and_unknown_keys(model_type):
    config_class = registered_config_class(model_type)
    config = config_class(**tiny_values(model_type))
    numeric = [name for name, value in config.to_dict().items()
               if isinstance(value, float) and not isinstance(value, bool)]
    assert "reconstruction_loss_weight" in numeric
    for name in numeric:
        for bad in (math.nan, math.inf):
            with pytest.raises(ValueError, match=f"`{name}` must be a finite number"):
                config_class(**tiny_values(model_type, **{name: bad}))
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['colour_mode'\]"):
        config_class(**tiny_values(model_type), colour_mode="rgb")


@pytest.mark.parametrize("model_type", TYPES)
@on_every_backbone
def test_outputs_and_gradients_are_finite_under_bf16_with_latents_of_magnitude_1e4(model_type, backbone):
    model = tiny_tokenizer(model_type, backbone=backbone).train()
    model.encoder.register_forward_hook(lambda module, inputs, output: output * 1e4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(images(8))
        output.loss.backward()
    for name, value in {**output.losses, **output.stats, "loss": output.loss}.items():
        assert torch.isfinite(value).all(), f"{name} is not finite"
    assert torch.isfinite(output.reconstruction).all()
    for name, parameter in model.named_parameters():
        assert parameter.grad is None or torch.isfinite(parameter.grad).all(), f"gradient of {name} is not finite"
    for name, buffer in model.named_buffers():
        assert not buffer.is_floating_point() or torch.isfinite(buffer).all(), f"buffer {name} is not finite"


@pytest.mark.parametrize("model_type", TYPES)
@on_every_backbone
def test_stop_and_resume_ends_with_the_weights_of_an_uninterrupted_run(model_type, backbone, tmp_path, monkeypatch):
    train_set = pixel_dataset(tiny_images(count=12, width=10, height=8), 8, 3, augment=True)

    def run(output_dir, init_seed, **overrides):
        model = tiny_tokenizer(model_type, seed=init_seed, backbone=backbone)
        args = TrainingArguments(
            output_dir=str(output_dir), max_steps=4, batch_size=4, learning_rate=1e-2, warmup_steps=1,
            log_every=2, report_to="none", seed=0, checkpoint_every=2, **overrides,
        )
        train_tokenizer(model, train_set, None, args)
        return model

    reference = run(tmp_path / "straight", 0)
    run_interrupted_after(2, monkeypatch, lambda: run(tmp_path / "resumed", 0))
    # Another initialisation: everything must come from the checkpoint.
    resumed = run(tmp_path / "resumed", 123, resume_from_checkpoint="latest")
    assert_same_state(snapshot(reference), resumed)


@pytest.mark.parametrize("model_type", TYPES)
def test_quantizer_is_built_from_the_config_fields(model_type, monkeypatch):
    config_class = registered_config_class(model_type)
    config = config_class(**tiny_values(model_type))
    quantizer_class = config.quantizer_class
    kwargs = config.quantizer_kwargs()
    assert kwargs, f"{model_type} passes no option to its quantizer"
    assert set(kwargs) == set(quantizer_class.options) <= set(config.type_fields())

    received = {}

    class RecordingQuantizer(quantizer_class):
        def __init__(self, *args, **options):
            received.update(options)
            super().__init__(*args, **options)

    monkeypatch.setattr(config_class, "quantizer_class", RecordingQuantizer)
    model = VQTokenizer.from_config(config)
    assert type(model.quantizer) is RecordingQuantizer
    assert received == {"codebook_size": config.codebook_size, "dim": TINY["latent_dim"], **kwargs}


@pytest.mark.parametrize("model_type", TYPES)
def test_a_types_config_defaults_are_its_quantizers(model_type):
    """The config takes its quantizer's declarations: with no arguments, both give the same options, K, D and R."""
    config_class = registered_config_class(model_type)
    config, quantizer = config_class(), config_class.quantizer_class()
    assert config.quantizer_kwargs() == quantizer.option_values()
    assert (config.codebook_size, config.latent_dim, config.codes_per_position) == (
        quantizer.codebook_size, quantizer.dim, quantizer.codes_per_position)


def test_a_type_config_that_restates_a_quantizer_option_is_refused():
    from vqtok import VQTokenizerConfig
    from vqtok.quantizers import LFQuantizer

    with pytest.raises(TypeError, match=r"restates option\(s\) \['entropy_weight'\] of LFQuantizer"):
        class RestatingConfig(VQTokenizerConfig, quantizer=LFQuantizer):
            model_type = "vqtok-test-restating"
            entropy_weight: float = 0.1


def test_every_type_has_a_training_config_and_every_config_loads(tmp_path):
    folder = Path(__file__).resolve().parents[1] / "training" / "configs"
    # prior*.yaml configure the token prior (training/train_prior.py; tests/test_prior.py loads them).
    tokenizer_configs = [path for path in sorted(folder.glob("*.yaml")) if not path.name.startswith("prior")]
    # A fine-tuning recipe names a tokenizer to start from: a small one stands in for it here.
    VQTokenizer.from_config(VQConfig(image_size=16, latent_dim=4, codebook_size=8,
                                     backbone_config={"base_channels": 8})).save_pretrained(tmp_path / "start")
    loaded = {path.name: load_run_config(str(path), [f"model.init_from={tmp_path / 'start'}"]
                                         if "init_from" in path.read_text() else [])
              for path in tokenizer_configs}
    assert loaded["finetune_decoder.yaml"].init_from == str(tmp_path / "start")
    covered = {run.model.model_type for run in loaded.values()}
    missing = set(SHIPPED_TYPES) - covered
    assert not missing, f"types without a YAML in training/configs: {sorted(missing)}"
