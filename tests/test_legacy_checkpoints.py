"""Tokenizers saved by earlier versions still load, with the same weights, and tokenize and decode
exactly as they did; saved again, they are written in today's format and load the same.

- `tests/fixtures/legacy_0_1_0/`: one tiny trained tokenizer per type of vqtok 0.1.0 as first
  released (before the package was reorganised into one module per type);
- `tests/fixtures/flat_backbone_0_1_0/`: one per type of the last vqtok 0.1 (every type, with a
  topology regulariser, SQ-VAE IV with a learned decoder variance and a categorical vMF SQ-VAE):
  conv backbone fields at the top level of `config.json`, each backbone half one `nn.Sequential`,
  quantizer state without a `Codebook` module.

Each folder's `expected.safetensors` holds the pixel values the tokenizers were given, with the ids
and images they returned.
"""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel
from transformers.models.auto.image_processing_auto import AutoImageProcessor  # see vqtok/auto.py

from vqtok import VQImageProcessor, VQTokenizer
from test_contract import SHIPPED_TYPES

from vqtok.auto import TOKENIZER_REGISTRY
from vqtok.hub.earlier_versions import FLAT_BACKBONE_KEYS, tensor_renames

FIXTURES = Path(__file__).parent / "fixtures"
# Tensors kept since vqtok 0.1 that its checkpoints lack: set on load from the loaded state.
KEPT_SINCE_0_1 = {"vqtok-gumbel": {"quantizer.codebook.initialized"}}
FOLDERS = ("legacy_0_1_0", "flat_backbone_0_1_0")
CASES = [(folder, path.name) for folder in FOLDERS for path in sorted((FIXTURES / folder).iterdir()) if path.is_dir()]


def todays_name(name: str, mapping: dict[str, str]) -> str:
    """A vqtok 0.1 tensor name renamed the way `from_pretrained(key_mapping=...)` renames it."""
    for pattern, replacement in mapping.items():
        match = re.search(pattern, name)
        if match:
            name = name.replace(match.group(0), replacement, 1)
    return name


def expected_outputs(folder: str, tokenizer):
    expected = load_file(FIXTURES / folder / "expected.safetensors")
    pixels = expected["categorical_pixel_values"] if tokenizer.config.in_channels == 1 else expected["pixel_values"]
    model_type = tokenizer.config.model_type
    return pixels, expected[f"{model_type}/input_ids"], expected[f"{model_type}/decoded"]


# The types vqtok 0.1 shipped: every one of them has a fixture in the 0.1 format (types added since
# never had that format).
TYPES_OF_0_1 = ["vqtok-gumbel", "vqtok-hypervq", "vqtok-nsvq", "vqtok-softvq", "vqtok-sqvae", "vqtok-vmf-sqvae", "vqtok-vq"]


def test_every_type_has_a_fixture_of_the_last_flat_format():
    assert set(TYPES_OF_0_1) <= set(SHIPPED_TYPES)
    assert sorted(name for folder, name in CASES if folder == "flat_backbone_0_1_0") == TYPES_OF_0_1
    assert sorted(name for folder, name in CASES if folder == "legacy_0_1_0") == [
        "vqtok-gumbel", "vqtok-nsvq", "vqtok-softvq", "vqtok-vq"]


@pytest.mark.parametrize("folder,model_type", CASES)
def test_legacy_tokenizer_loads_with_its_weights_and_tokenizes_as_before(folder, model_type, tmp_path):
    path = FIXTURES / folder / model_type
    saved_config = json.loads((path / "config.json").read_text())
    assert set(FLAT_BACKBONE_KEYS) & set(saved_config) and "backbone_config" not in saved_config
    tokenizer = VQTokenizer.from_pretrained(path).eval()
    assert tokenizer.config.model_type == model_type
    assert tokenizer.config.backbone_config.base_channels == saved_config["base_channels"]

    saved = load_file(path / "model.safetensors")
    mapping = tensor_renames(type(tokenizer.config), str(path), {}, tokenizer.config)
    renamed = {todays_name(name, mapping): tensor for name, tensor in saved.items()}
    state = tokenizer.state_dict()
    assert set(renamed) <= set(state)
    assert set(state) - set(renamed) == KEPT_SINCE_0_1.get(model_type, set())
    assert all(torch.equal(renamed[name], state[name]) for name in renamed)
    if model_type == "vqtok-gumbel":  # started on its first training batch, while the schedule's step was 0
        assert bool(tokenizer.quantizer.codebook.initialized) == bool(tokenizer.quantizer.temperature.step > 0)

    pixels, ids_before, images_before = expected_outputs(folder, tokenizer)
    ids = tokenizer.encode(pixels)
    assert torch.equal(ids, ids_before)
    assert torch.allclose(tokenizer.decode(ids), images_before, atol=1e-6)
    assert type(AutoModel.from_pretrained(path)) is type(tokenizer)

    tokenizer.save_pretrained(tmp_path)
    resaved = json.loads((tmp_path / "config.json").read_text())
    assert "backbone_config" in resaved and not set(FLAT_BACKBONE_KEYS) & set(resaved)
    assert set(load_file(tmp_path / "model.safetensors")) == set(state)
    assert torch.equal(VQTokenizer.from_pretrained(tmp_path).encode(pixels), ids_before)


def test_legacy_processor_loads_through_the_auto_class():
    processor = AutoImageProcessor.from_pretrained(FIXTURES / "legacy_0_1_0" / "vqtok-vq")
    assert isinstance(processor, VQImageProcessor)
    assert processor.crop_size["height"] == 8 and processor.num_channels == 3


def test_a_config_with_both_the_flat_fields_and_backbone_config_is_refused(tmp_path):
    tokenizer = VQTokenizer.from_pretrained(FIXTURES / "legacy_0_1_0" / "vqtok-vq")
    tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "base_channels": 8}))
    with pytest.raises(ValueError, match=r"both `backbone_config` and the top-level backbone field\(s\) \['base_channels'\]"):
        VQTokenizer.from_pretrained(tmp_path)


def test_flat_backbone_fields_in_python_name_their_new_place():
    with pytest.raises(ValueError, match=r"\['base_channels'\] belong to the backbone.*backbone_config=\{'base_channels': 8\}"):
        TOKENIZER_REGISTRY["vqtok-vq"][0](base_channels=8)


def test_statistics_vqtok_0_1_kept_for_a_gradient_codebook_are_dropped_only_from_its_checkpoints(tmp_path):
    """vqtok 0.1 saved EMA statistics for every VQ codebook, also one learnt by gradient (unused
    there); today such a codebook has none. They are dropped from a 0.1 checkpoint and refused
    from a checkpoint of today's format."""
    legacy = tmp_path / "legacy"
    shutil.copytree(FIXTURES / "flat_backbone_0_1_0" / "vqtok-vq", legacy)
    config = json.loads((legacy / "config.json").read_text())
    (legacy / "config.json").write_text(json.dumps({**config, "use_ema": False}))
    assert "quantizer.ema_embed_sum" in load_file(legacy / "model.safetensors")
    tokenizer = VQTokenizer.from_pretrained(legacy)
    assert not [name for name in tokenizer.state_dict() if "ema_" in name]
    assert tokenizer.quantizer.codebook.weight.requires_grad

    today = tmp_path / "today"
    tokenizer.save_pretrained(today)
    tensors = load_file(today / "model.safetensors")
    save_file({**tensors, "quantizer.codebook.ema_cluster_size": torch.ones(8)}, today / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"not part of the model: quantizer\.codebook\.ema_cluster_size"):
        VQTokenizer.from_pretrained(today)


def test_a_vqtok_0_1_ema_codebook_without_its_statistics_is_refused(tmp_path):
    """Only a gradient codebook's statistics are retired: an EMA codebook needs them."""
    shutil.copytree(FIXTURES / "flat_backbone_0_1_0" / "vqtok-vq", tmp_path, dirs_exist_ok=True)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["quantizer.ema_embed_sum"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing from the checkpoint: quantizer\.codebook\.ema_embed_sum"):
        VQTokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("model_type,old_name", [("vqtok-nsvq", "codebook_lr_multiplier"),
                                                  ("vqtok-sqvae", "annealing_lr_multiplier"),
                                                  ("vqtok-vmf-sqvae", "annealing_lr_multiplier")])
def test_a_vqtok_0_2_config_names_the_learning_rate_multiplier_as_it_did(model_type, old_name, tmp_path):
    """vqtok 0.2 saved the quantizer's learning-rate multiplier under the names of its type; it loads
    as `quantizer_lr_multiplier`, and is saved again under today's name."""
    from test_contract import tiny_tokenizer

    tiny_tokenizer(model_type).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config[old_name] = 3.0
    del config["quantizer_lr_multiplier"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = VQTokenizer.from_pretrained(tmp_path)
    assert loaded.config.quantizer_lr_multiplier == 3.0 == loaded.quantizer.quantizer_lr_multiplier
    loaded.save_pretrained(tmp_path / "again")
    resaved = json.loads((tmp_path / "again" / "config.json").read_text())
    assert resaved["quantizer_lr_multiplier"] == 3.0 and old_name not in resaved
