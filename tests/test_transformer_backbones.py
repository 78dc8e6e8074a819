"""The transformer backbones: `vit` (a patch grid) and `titok` (1-D token sequences), and the id
contract of 1-D sequences through decode, `TokenLayout`, tokenization, the prior, sampling and cards.
Every registered type runs on both backbones in `test_contract.py`."""

import math

import pytest
import torch
from tiny_data import tiny_images

from vqtok import (
    PriorConfig,
    TokenLayout,
    TokenPrior,
    VQConfig,
    VQTokenizer,
    decode_samples,
    load_tokenized,
    render_model_card,
    sample_uniform,
    tokenize_dataset,
)
from vqtok.backbones.vit import sincos_positions, unpatchify

pytestmark = pytest.mark.usefixtures("one_thread")
VIT = dict(backbone_type="vit", patch_size=4, hidden_size=16, num_layers=1, num_heads=2)
TITOK = dict(backbone_type="titok", patch_size=4, hidden_size=16, num_layers=1, num_heads=2, num_latent_tokens=5)


def tokenizer(backbone: dict, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    values = dict(image_size=16, codebook_size=16, latent_dim=4, backbone_config=backbone)
    return VQTokenizer.from_config(VQConfig(**{**values, **overrides})).eval()


def images(count: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_the_2d_sine_cosine_positions_match_hand_computed_values():
    positions = sincos_positions(1, 2, 8)  # quarter = 2: frequencies 1 and 1/100
    expected = torch.tensor([[0, 0, 1, 1, 0, 0, 1, 1],
                             [0, 0, 1, 1, math.sin(1), math.sin(0.01), math.cos(1), math.cos(0.01)]])
    assert torch.allclose(positions, expected.float(), atol=1e-6)


def test_unpatchify_undoes_cutting_an_image_into_row_major_patches():
    image = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    p = 4
    patches = image.reshape(2, 3, 2, p, 3, p).permute(0, 2, 4, 1, 3, 5).reshape(2, 6, 3 * p * p)
    assert torch.equal(unpatchify(patches, 2, 3, 3, p), image)


def test_the_vit_backbone_gives_the_patch_grid_and_decodes_any_grid_size():
    model = tokenizer(VIT)
    assert model.config.token_grid == (4, 4)
    ids = model.encode(images())
    assert ids.shape == (3, 4, 4)
    assert model.decode(ids).shape == (3, 3, 16, 16)
    assert model.encode(images(size=24)).shape == (3, 6, 6)  # no parameter tied to the image size


def test_a_1d_backbone_gives_l_tokens_and_decodes_them_to_the_configured_size():
    model = tokenizer(TITOK)
    assert (model.config.token_grid, model.config.token_shape, model.config.is_sequence) == ((5,), (5,), True)
    ids = model.encode(images())
    assert ids.shape == (3, 5) and ids.dtype == torch.long
    assert model.decode(ids).shape == (3, 3, 16, 16)
    with pytest.raises(ValueError, match=r"pixel_values must be 16x16 \(config.image_size: a 1-D token backbone"):
        model.encode(images(size=24))
    with pytest.raises(ValueError, match=r"input_ids must have 5 tokens per image \(the config's sequence\), got shape \[3, 4\]"):
        model.decode(ids[:, :4])
    output = model.train()(images())
    output.loss.backward()
    assert model.encoder.latent_tokens.grad is not None and model.decoder.mask_token.grad is not None


def test_the_latent_tokens_of_one_image_start_distinct():
    model = tokenizer(TITOK)
    with torch.no_grad():
        latents = model.encoder(images(16))  # [B, D, L]
    # each of the L tokens carries its own identity from the start, more than the images differ
    assert latents.std(dim=2).mean() > 2 * latents.std(dim=0).mean()


def test_several_codes_per_position_on_a_1d_sequence_keep_the_contract():
    from vqtok import RVQConfig

    torch.manual_seed(0)
    model = VQTokenizer.from_config(RVQConfig(image_size=16, codebook_size=16, latent_dim=4, num_quantizers=3,
                                              backbone_config=TITOK)).eval()
    ids = model.encode(images())
    assert ids.shape == (3, 5, 3) and model.config.token_shape == (5, 3)
    assert torch.equal(model.decode(ids.reshape(3, 15)), model.decode(ids))
    layout = TokenLayout.for_tokenizer(model)
    assert (layout.grid, layout.tokens_per_image, layout.describe()) == ((5,), 15, "5 (1-D) (x3 codes per position)")
    assert torch.equal(layout.to_codes(layout.to_sequences(ids)), ids)


def test_1d_tokens_go_through_tokenization_the_prior_sampling_and_the_card(tmp_path):
    model = tokenizer(TITOK)
    model.save_pretrained(tmp_path / "tokenizer")
    tokens = tokenize_dataset(tiny_images(6), model, save_to=tmp_path / "tokens")
    _, layout = load_tokenized(tmp_path / "tokens")
    assert (layout.num_latent_tokens, layout.grid_height, layout.sequence_length) == (5, None, 5)
    assert all(len(row) == 5 for row in tokens["input_ids"])

    prior = TokenPrior(PriorConfig.for_tokenizer(model, hidden_size=16, num_layers=1, num_heads=2))
    assert (prior.config.num_latent_tokens, prior.config.grid_height, prior.config.lm_config.n_positions) == (5, None, 6)
    prior.check_tokenizer(model)
    codes = prior.generate_codes(4, seed=0)
    assert codes.shape == (4, 5)
    assert decode_samples(model, codes).shape == (4, 3, 16, 16)
    assert decode_samples(model, sample_uniform(16, model.config.token_shape, 2)).shape == (2, 3, 16, 16)
    prior.save_pretrained(tmp_path / "prior")
    assert TokenPrior.from_pretrained(tmp_path / "prior").config.token_grid == (5,)

    card = str(render_model_card(model))
    assert "5-token 1-D grids of discrete tokens" in card and "[1, 5] torch.long" in card
    grid_prior = TokenPrior(PriorConfig.for_tokenizer(tokenizer(VIT), hidden_size=16, num_layers=1, num_heads=2))
    with pytest.raises(ValueError, match=r"the prior has K=16 codes on a 4x4 grid, but the tokenizer has K=16 on a 5 \(1-D\)"):
        grid_prior.check_tokenizer(model)


def test_a_layout_or_prior_holds_a_grid_or_a_sequence_not_both():
    with pytest.raises(ValueError, match="a grid \\(grid_height and grid_width\\) or a 1-D sequence"):
        TokenLayout(16, 4, 4, num_latent_tokens=5)
    with pytest.raises(ValueError, match="a grid \\(grid_height and grid_width\\) or a 1-D sequence"):
        TokenLayout(16, 4)
    with pytest.raises(ValueError, match="a grid \\(grid_height and grid_width\\) or a 1-D sequence"):
        PriorConfig(num_latent_tokens=5)  # the grid's defaults left in
    assert PriorConfig(grid_height=None, grid_width=None, num_latent_tokens=5).token_shape == (5,)
    assert TokenLayout(16, 4, 4).grid == (4, 4)  # as before
