"""Tokenizers saved by vqtok 0.1.0 (before the package was reorganised into one module per type)
still load, with the same weights, and tokenize and decode exactly as they did.

`tests/fixtures/legacy_0_1_0/` holds one tiny trained tokenizer per type, written by vqtok 0.1.0,
and `expected.safetensors` the pixel values it was given with the ids and images it returned.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoImageProcessor, AutoModel

from vqtok import VQImageProcessor, VQTokenizer

LEGACY = Path(__file__).parent / "fixtures" / "legacy_0_1_0"
EXPECTED = load_file(LEGACY / "expected.safetensors")
TYPES = sorted(path.name for path in LEGACY.iterdir() if path.is_dir())


def test_every_type_of_0_1_0_has_a_fixture():
    assert TYPES == ["vqtok-gumbel", "vqtok-nsvq", "vqtok-softvq", "vqtok-vq"]


@pytest.mark.parametrize("model_type", TYPES)
def test_legacy_tokenizer_loads_with_its_weights_and_tokenizes_as_before(model_type):
    folder = LEGACY / model_type
    tokenizer = VQTokenizer.from_pretrained(folder).eval()
    assert tokenizer.config.model_type == model_type
    saved = load_file(folder / "model.safetensors")
    state = tokenizer.state_dict()
    assert set(saved) == set(state)
    assert all(torch.equal(saved[name], state[name]) for name in saved)
    ids = tokenizer.encode(EXPECTED["pixel_values"])
    assert torch.equal(ids, EXPECTED[f"{model_type}/input_ids"])
    assert torch.allclose(tokenizer.decode(ids), EXPECTED[f"{model_type}/decoded"], atol=1e-6)
    assert type(AutoModel.from_pretrained(folder)) is type(tokenizer)


def test_legacy_processor_loads_through_the_auto_class():
    processor = AutoImageProcessor.from_pretrained(LEGACY / "vqtok-vq")
    assert isinstance(processor, VQImageProcessor)
    assert processor.crop_size["height"] == 8 and processor.num_channels == 3
