"""Bad inputs raise clear errors that name what is wrong, before any harm is done.

- every numeric field of every registered config type, and every numeric quantizer keyword argument,
  rejects NaN and infinities, naming the field; so does loading a config.json that holds one;
- loading weights that hold NaN or an infinity names each such tensor and the weights file;
- `VQImageProcessor` refuses float images already scaled to [0, 1] unless `do_rescale=False`, and an
  empty list of images;
- a config.json that is valid JSON but not an object names the file; tensors on the meta device and
  empty token grids are refused by encode / forward / decode; a license that is not a Hub license
  identifier fails `push_to_hub` before any network call.
"""

import dataclasses
import json
import math
import re
import socket

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_contract import TINY, TYPES, images, tiny_tokenizer
from transformers import AutoModel

from vqtok import VQImageProcessor, VQModel, VQTokenizer
from vqtok.backbones import ConvBackboneConfig
from vqtok.hub import render_model_card
from vqtok.hub.card_fields import HUB_LICENSES
from vqtok.quantizers import TemperatureSchedule
from vqtok.auto import registered_config_class, registered_model_class

try:
    from hub_server import patch_hf_environment, reset_cached_clients
except ImportError:  # if tests/ ever becomes a package
    from tests.hub_server import patch_hf_environment, reset_cached_clients

pytestmark = pytest.mark.usefixtures("one_thread")
NON_FINITE = (math.nan, math.inf, -math.inf)
# Fields named in the reliability table; the test below covers every numeric field of each type.
NAMED_FIELDS = {
    "vqtok-vq": {"commitment_cost", "ema_decay", "reconstruction_loss_weight"},
    "vqtok-softvq": {"temperature"},
    "vqtok-gumbel": {"tau_decay"},
    "vqtok-sqvae": {"tau_decay"},
}


def numeric_fields(config_class) -> list[str]:
    """Every int or float field of a config type."""
    options = config_class.declared_options()
    return [f.name for f in dataclasses.fields(config_class) if f.name in options and options[f.name].kind in (int, float)]


def numeric_backbone_fields() -> list[str]:
    """Every int or float field of the conv backbone."""
    return [name for name, option in ConvBackboneConfig.options.items() if option.kind in (int, float)]


def saved(model, folder):
    model.save_pretrained(folder)
    return folder


def rewrite_config(folder, **fields) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))  # NaN / inf as JSON NaN / Infinity


def corrupt_weights(folder, counts: dict[str, int], bad: float) -> None:
    """Set the first `counts[name]` values of each named tensor of `folder`'s weights to `bad`."""
    path = folder / "model.safetensors"
    tensors = load_file(path)
    for name, count in counts.items():
        tensors[name].view(-1)[:count] = bad
    save_file(tensors, path, metadata={"format": "pt"})


# 1. NaN and infinities in configs and quantizer arguments


@pytest.mark.parametrize("model_type", TYPES)
def test_every_numeric_config_field_rejects_nan_and_infinities_naming_the_field(model_type):
    config_class = registered_config_class(model_type)
    fields = numeric_fields(config_class)
    assert NAMED_FIELDS.get(model_type, set()) <= set(fields)
    assert {"codebook_size", "reconstruction_loss_weight"} <= set(fields)
    for name in fields:
        for bad in NON_FINITE:
            with pytest.raises((TypeError, ValueError), match=f"config field `{re.escape(name)}` must be"):
                config_class(**{**TINY, name: bad})
    assert {"downsampling_factor", "base_channels"} <= set(numeric_backbone_fields())
    for name in numeric_backbone_fields():
        for bad in NON_FINITE:
            with pytest.raises((TypeError, ValueError), match=f"backbone_config field `{re.escape(name)}` must be"):
                config_class(**{**TINY, "backbone_config": {**TINY["backbone_config"], name: bad}})


@pytest.mark.parametrize("model_type", TYPES)
def test_every_float_config_field_rejects_values_beyond_float32(model_type):
    """Checked in float64, used in float32: 1e39 would become an infinity in the codebook or a loss."""
    config_class = registered_config_class(model_type)
    options = config_class.declared_options()
    floats = [name for name in numeric_fields(config_class) if options[name].kind is float]
    assert "reconstruction_loss_weight" in floats
    for name in floats:
        for bad in (1e39, -1e39):
            with pytest.raises(ValueError, match=f"config field `{re.escape(name)}` must"):
                config_class(**{**TINY, name: bad})


def test_the_float32_overflows_once_accepted_are_named():
    for config_class, field, extra in ((registered_config_class("vqtok-sqvae"), "latent_scale", {}),
                                       (registered_config_class("vqtok-vq"), "ema_epsilon", {}),
                                       (registered_config_class("vqtok-hypervq"), "init_radius_std", {"kmeans_init": False})):
        with pytest.raises(ValueError, match=rf"`{field}` must be representable in float32 .*got 1e\+39"):
            config_class(**{**TINY, field: 1e39, **extra})


@pytest.mark.parametrize("model_type", TYPES)
def test_every_numeric_quantizer_argument_rejects_nan_and_infinities(model_type):
    quantizer_class = registered_config_class(model_type).quantizer_class
    for name, option in quantizer_class.options.items():
        if option.kind in (int, float):
            for bad in NON_FINITE:
                with pytest.raises((TypeError, ValueError), match=f"argument `{re.escape(name)}` must be"):
                    quantizer_class(16, 4, **{name: bad})
    with pytest.raises(ValueError, match="`tau_decay` must be a finite number"):
        TemperatureSchedule(tau_max=2.0, tau_min=0.5, tau_decay=math.nan)


@pytest.mark.parametrize("model_type", TYPES)
def test_from_pretrained_rejects_a_config_json_holding_nan_or_infinity(model_type, tmp_path):
    folder = saved(tiny_tokenizer(model_type), tmp_path)
    rewrite_config(folder, reconstruction_loss_weight=math.inf)
    assert "Infinity" in (folder / "config.json").read_text()
    with pytest.raises(ValueError, match="`reconstruction_loss_weight` must be a finite number"):
        VQTokenizer.from_pretrained(folder)
    rewrite_config(folder, reconstruction_loss_weight=1.0, backbone_config={"downsampling_factor": math.nan})
    with pytest.raises(TypeError, match="backbone_config field `downsampling_factor` must be int, got float"):
        registered_model_class(model_type).from_pretrained(folder)


def test_from_pretrained_names_the_nan_field_of_a_vq_config(tmp_path):
    folder = saved(tiny_tokenizer("vqtok-vq"), tmp_path)
    rewrite_config(folder, commitment_cost=math.nan)
    for load in (VQTokenizer.from_pretrained, VQModel.from_pretrained):
        with pytest.raises(ValueError, match="config field `commitment_cost` must be a finite number, got nan"):
            load(folder)


# 2. Weights holding NaN or infinities


@pytest.mark.parametrize("bad", NON_FINITE)
def test_loading_non_finite_weights_names_each_tensor_and_the_file(bad, tmp_path):
    folder = saved(tiny_tokenizer("vqtok-vq"), tmp_path)
    corrupt_weights(folder, {"quantizer.codebook.weight": 3, "quantizer.codebook.ema_cluster_size": 1}, bad)
    for load in (VQTokenizer.from_pretrained, VQModel.from_pretrained, AutoModel.from_pretrained):
        with pytest.raises(ValueError, match="hold NaN or infinite values") as caught:
            load(folder)
        message = str(caught.value)
        assert "quantizer.codebook.weight (3 non-finite values)" in message
        assert "quantizer.codebook.ema_cluster_size (1 non-finite value)" in message
        assert str(folder / "model.safetensors") in message


@pytest.mark.parametrize("model_type", TYPES)
def test_every_model_class_refuses_non_finite_weights(model_type, tmp_path):
    model = tiny_tokenizer(model_type)
    folder = saved(model, tmp_path)
    floating = [n for n, t in sorted(model.state_dict().items()) if t.is_floating_point()]
    name = next((n for n in floating if n.startswith("quantizer.")), floating[0])  # a quantizer's state where it has some
    corrupt_weights(folder, {name: 1}, math.nan)
    with pytest.raises(ValueError, match=re.escape(f"{name} (1 non-finite value)")):
        registered_model_class(model_type).from_pretrained(folder)


# 3. VQImageProcessor


def test_float_images_already_in_0_1_need_do_rescale_false():
    processor = VQImageProcessor.for_image_size(8)
    array = np.random.default_rng(0).random((8, 8, 3), dtype=np.float32)
    for image in (array, torch.from_numpy(array).permute(2, 0, 1), [array, array]):
        with pytest.raises(ValueError, match=r"already rescaled to \[0, 1\].*pass do_rescale=False"):
            processor(image, return_tensors="pt")
    pixels = processor(array, do_rescale=False, return_tensors="pt")["pixel_values"]
    from_uint8 = processor((array * 255).astype(np.uint8), return_tensors="pt")["pixel_values"]
    assert pixels.min() >= -1 and pixels.max() <= 1
    assert torch.allclose(pixels, from_uint8, atol=1.01 / 127.5)  # the same image, to one uint8 step


def test_an_empty_list_of_images_is_rejected():
    processor = VQImageProcessor.for_image_size(8)
    for empty in ([], np.zeros((0, 8, 8, 3), dtype=np.uint8)):
        with pytest.raises(ValueError, match="no images to process"):
            processor(empty, return_tensors="pt")


# 4. Raw errors turned into clear ones


@pytest.mark.parametrize(("content", "kind"), [("[1, 2]", "array"), ('"x"', "string"), ("3", "number"),
                                               ("null", "null")])
def test_a_config_json_that_is_not_an_object_names_the_file(content, kind, tmp_path):
    folder = saved(tiny_tokenizer("vqtok-vq"), tmp_path)
    (folder / "config.json").write_text(content)
    expected = f"{re.escape(str(folder / 'config.json'))} .* must hold a JSON object .* got a JSON {kind}"
    for load in (VQTokenizer.from_pretrained, VQModel.from_pretrained):
        with pytest.raises(ValueError, match=expected):
            load(folder)


def test_tensors_on_the_meta_device_are_refused():
    model = tiny_tokenizer("vqtok-vq")
    pixels = torch.empty(2, 3, 8, 8, device="meta")
    for run in (model.encode, model):
        with pytest.raises(ValueError, match="pixel_values is on the meta device"):
            run(pixels)
    with pytest.raises(ValueError, match="input_ids is on the meta device"):
        model.decode(torch.empty(1, 4, 4, dtype=torch.long, device="meta"))


@pytest.mark.parametrize("shape", [(0, 4, 4), (1, 0), (0, 16), (1, 0, 4), (1, 4, 0)])
def test_an_empty_token_grid_is_refused(shape):
    with pytest.raises(ValueError, match=re.escape(f"input_ids is empty, got shape {list(shape)}")):
        tiny_tokenizer("vqtok-vq").decode(torch.zeros(shape, dtype=torch.long))


@pytest.mark.parametrize("bad", NON_FINITE)
def test_non_finite_pixel_values_are_refused(bad):
    model, pixels = tiny_tokenizer("vqtok-vq"), images(2)
    pixels[1, 0, 3, 3] = bad
    for run in (model.encode, model):
        with pytest.raises(ValueError, match="pixel_values contains NaN or infinite values"):
            run(pixels)


@pytest.fixture
def unreachable_hub(tmp_path, monkeypatch):
    """huggingface_hub pointed at a local port where nothing listens: any request fails to connect."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    patch_hf_environment(monkeypatch, f"http://127.0.0.1:{port}", tmp_path / "hf_home")
    reset_cached_clients()
    yield
    reset_cached_clients()


@pytest.mark.parametrize("license", ["not a license", "MIT license", "MIT", "", None])
def test_a_license_that_is_not_a_hub_identifier_fails_before_any_network_call(license, unreachable_hub, tmp_path):
    model = tiny_tokenizer("vqtok-vq")
    with pytest.raises(ValueError, match="license must be a Hub license identifier"):
        model.push_to_hub("someone/tiny", license=license)
    with pytest.raises(ValueError, match="license must be a Hub license identifier"):
        model.save_pretrained(tmp_path / "tiny", push_to_hub=True, license=license)
    with pytest.raises(Exception) as caught:  # a valid license gets as far as the (unreachable) Hub
        model.push_to_hub("someone/tiny", license="mit")
    assert not isinstance(caught.value, ValueError), caught.value


def test_every_hub_license_identifier_is_accepted_and_other_too():
    assert {"apache-2.0", "mit", "openrail", "cc-by-4.0", "cc-by-sa-4.0", "cc-by-nc-4.0", "other", "unknown"} <= set(
        HUB_LICENSES
    )
    model = tiny_tokenizer("vqtok-vq")
    for license in ("other", "cc-by-nc-4.0"):
        assert render_model_card(model, license=license).data.license == license
    with pytest.raises(ValueError, match=r"did you mean 'mit'\?"):
        render_model_card(model, license="MIT license")
