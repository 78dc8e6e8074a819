"""VQModel / VQTokenizer: the public API, the Hugging Face round trip and every bad input."""

import json
import os

import pytest
import torch
from transformers import AutoConfig, AutoModel

from vqtok import VQConfig, VQModel, VQTokenizer


def tiny_config(**overrides):
    values = dict(image_size=16, backbone_config=dict(base_channels=8, downsampling_factor=4), latent_dim=4, codebook_size=16)
    values.update(overrides)
    return VQConfig(**values)


def images(batch=4, channels=3, size=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, size, size, generator=generator) * 2 - 1


@pytest.fixture
def trained_model():
    """A tiny model after a few training steps, so EMA buffers and the codebook are non-trivial."""
    torch.manual_seed(0)
    model = VQModel(tiny_config())
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for step in range(3):
        loss = model(images(8, seed=step)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


@pytest.mark.parametrize(
    "channels,size,factor", [(1, 28, 4), (3, 32, 4), (3, 64, 8), (1, 32, 16), (3, 32, 2)]
)
def test_encode_decode_shapes_for_supported_sizes(channels, size, factor):
    model = VQModel(tiny_config(in_channels=channels, image_size=size, backbone_config=dict(downsampling_factor=factor))).eval()
    x = images(2, channels, size)
    ids = model.encode(x)
    assert ids.dtype == torch.long and ids.shape == (2, size // factor, size // factor)
    assert int(ids.min()) >= 0 and int(ids.max()) < 16
    y = model.decode(ids)
    assert y.shape == x.shape
    assert float(y.min()) >= -1 and float(y.max()) <= 1


def test_decode_accepts_flat_ids_with_the_config_grid():
    model = VQModel(tiny_config()).eval()
    ids = model.encode(images())
    assert torch.equal(model.decode(ids), model.decode(ids.reshape(4, -1)))


def test_forward_returns_named_losses_and_stats():
    model = VQModel(tiny_config(use_ema=False))
    out = model(images())
    assert set(out.losses) == {"reconstruction_loss", "commitment_loss", "codebook_loss"}
    assert torch.allclose(out.loss, sum(out.losses.values()))
    assert out.reconstruction.shape == (4, 3, 16, 16)
    assert out.input_ids.shape == (4, 4, 4) and out.input_ids.dtype == torch.long
    assert 1.0 <= out.stats["perplexity"].item() <= 16.0
    assert 0.0 < out.stats["usage"].item() <= 1.0


def test_straight_through_gradient_reaches_the_encoder():
    model = VQModel(tiny_config(use_ema=True))
    model(images()).losses["reconstruction_loss"].backward()
    first_conv = model.encoder.conv_in
    assert first_conv.weight.grad is not None
    assert first_conv.weight.grad.abs().sum() > 0


def test_encode_is_deterministic_and_matches_forward_ids(trained_model):
    x = images(seed=5)
    first = trained_model.encode(x)
    assert torch.equal(first, trained_model.encode(x))
    assert torch.equal(first, trained_model(x).input_ids)  # eval forward uses the same nearest code


def test_save_load_gives_identical_ids_and_buffers(trained_model, tmp_path):
    trained_model.save_pretrained(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["config.json", "model.safetensors", "vqtok_loader.py"]
    loaded = VQTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is VQModel and not loaded.training
    x = images(seed=7)
    assert torch.equal(loaded.encode(x), trained_model.encode(x))
    for name in ("ema_cluster_size", "ema_embed_sum", "usage", "initialized"):
        assert torch.equal(getattr(loaded.quantizer.codebook, name), getattr(trained_model.quantizer.codebook, name)), name
    assert bool(loaded.quantizer.codebook.initialized)
    for key, value in trained_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_auto_classes_load_the_tokenizer(trained_model, tmp_path):
    trained_model.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is VQConfig
    auto = AutoModel.from_pretrained(tmp_path)
    assert type(auto) is VQModel
    x = images(seed=3)
    assert torch.equal(auto.encode(x), trained_model.encode(x))


def test_from_config_builds_the_registered_class():
    assert type(VQTokenizer.from_config(tiny_config())) is VQModel
    with pytest.raises(TypeError, match="auto class"):
        VQTokenizer()


# --- bad input -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    return VQModel(tiny_config()).eval()


@pytest.mark.parametrize(
    "pixel_values,error,message",
    [
        (torch.zeros(2, 1, 16, 16), ValueError, "3 channel"),
        (torch.zeros(2, 3, 2, 2), ValueError, "height must be a positive multiple"),
        (torch.zeros(2, 3, 18, 16), ValueError, "height must be a positive multiple of the downsampling factor 4, got 18"),
        (torch.zeros(2, 3, 16, 14), ValueError, "width must be a positive multiple"),
        (torch.zeros(2, 3, 16, 16, dtype=torch.uint8), TypeError, "floating point"),
        (torch.zeros(3, 16, 16), ValueError, r"\[B, C, H, W\]"),
        (torch.full((1, 3, 16, 16), float("nan")), ValueError, "NaN"),
        (torch.full((1, 3, 16, 16), float("inf")), ValueError, "NaN or infinite"),
        (torch.full((1, 3, 16, 16), 255.0), ValueError, r"\[-1, 1\]"),
        ([[0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_pixel_values_are_rejected(model, pixel_values, error, message):
    with pytest.raises(error, match=message):
        model.encode(pixel_values)
    with pytest.raises(error, match=message):
        model(pixel_values)


@pytest.mark.parametrize(
    "input_ids,error,message",
    [
        (torch.full((1, 4, 4), 16), ValueError, r"\[0, 16\)"),
        (torch.full((1, 4, 4), -1), ValueError, r"\[0, 16\)"),
        (torch.zeros(1, 4, 4), TypeError, "integer dtype"),
        (torch.zeros(1, 4, 4, dtype=torch.bool), TypeError, "integer dtype"),
        (torch.zeros(1, 15, dtype=torch.long), ValueError, "16 = 4x4 tokens"),
        (torch.zeros(4, dtype=torch.long), ValueError, r"\[B, h, w\] or \[B, h\*w\]"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.long), ValueError, r"\[B, h, w\] or \[B, h\*w\]"),
        ([[1, 2]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_token_ids_are_rejected(model, input_ids, error, message):
    with pytest.raises(error, match=message):
        model.decode(input_ids)


@pytest.mark.parametrize(
    "overrides,error,message",
    [
        (dict(colour_mode="rgb"), ValueError, r"unknown config key\(s\) \['colour_mode'\]"),
        (dict(backbone_config=dict(downsampling_factor=3)), ValueError, "downsampling_factor"),
        (dict(in_channels=4), ValueError, "in_channels"),
        (dict(codebook_size=1), ValueError, "codebook_size"),
        (dict(codebook_size=16.0), TypeError, "codebook_size"),
        (dict(ema_decay=1.0), ValueError, "ema_decay"),
        (dict(use_ema="yes"), TypeError, "use_ema"),
        (dict(image_size=18), ValueError, "multiple of the backbone.s `downsampling_factor`"),
        (dict(backbone_config=dict(channel_multipliers=[1, 2, 4])), ValueError, "one entry per downsampling level"),
        (dict(commitment_cost=-0.1), ValueError, "commitment_cost"),
    ],
)
def test_bad_config_values_are_rejected(overrides, error, message):
    with pytest.raises(error, match=message):
        tiny_config(**overrides)


def test_unknown_key_in_saved_config_is_rejected(trained_model, tmp_path):
    trained_model.save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    values = json.loads(config_path.read_text())
    values["colour_mode"] = "rgb"
    config_path.write_text(json.dumps(values))
    with pytest.raises(ValueError, match="colour_mode"):
        VQTokenizer.from_pretrained(tmp_path)


def test_missing_weights_file_is_a_clear_error(trained_model, tmp_path):
    trained_model.save_pretrained(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    with pytest.raises(OSError, match="model.safetensors"):
        VQTokenizer.from_pretrained(tmp_path)


def test_missing_directory_is_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(OSError, match="the local folder .*nowhere' does not exist"):
        VQTokenizer.from_pretrained(tmp_path / "nowhere")
    monkeypatch.chdir(tmp_path)
    from vqtok.prior import TokenPrior

    # relative paths that cannot be Hub repo ids (two slashes): a missing folder, not a malformed repo id
    for load, name in ((VQTokenizer.from_pretrained, "outputs/nope/tokenizer"), (TokenPrior.from_pretrained, "outputs/nope/prior"),
                       (VQModel.from_pretrained, "outputs/nope/tokenizer")):
        with pytest.raises(OSError, match=f"the local folder '{name}' does not exist") as raised:
            load(name)
        assert "Repo id must be" not in str(raised.value)


def test_corrupt_weights_file_is_a_clear_error(trained_model, tmp_path):
    trained_model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(OSError, match="corrupt"):
        VQTokenizer.from_pretrained(tmp_path)
