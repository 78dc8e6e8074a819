"""FSQ: the bound gives exactly L levels per dimension (even and odd L), hand cases, ids <-> codes
exact both ways, every code reached under bf16 autocast, the straight-through gradient, bad levels."""

import math

import pytest
import torch

from vqtok import FSQConfig, VQTokenizer
from vqtok.quantizers import FSQuantizer


def rows_to_map(rows):
    return rows.t().reshape(1, rows.shape[1], rows.shape[0], 1).contiguous()


def latents_of_codes(quantizer, codes):
    """A latent z whose bound b(z) is exactly each code's level: the inverse of FSQ's bound."""
    levels = torch.tensor(quantizer.levels, dtype=torch.float64)
    half_width = torch.floor(levels / 2)
    half_span = (1 + 1e-3) * (levels - 1) / 2
    offset = torch.where(levels % 2 == 0, 0.5, 0.0)
    shift = torch.atanh(offset / half_span)
    return (torch.atanh((codes.double() * half_width + offset) / half_span) - shift).float()


@pytest.mark.parametrize("levels", [2, 3, 4, 5, 8, 15])
def test_bound_and_round_give_exactly_l_levels_within_minus_one_to_one(levels):
    quantizer = FSQuantizer(levels=[levels], dim=1)
    z = torch.linspace(-30, 30, 200001)[:, None]
    out = quantizer.train()(rows_to_map(z))
    values = torch.unique(out.quantized.flatten())
    half = levels // 2
    expected = (torch.arange(levels) - half).float() / half  # even L: -h..h-1; odd L: -h..h
    assert torch.allclose(values, expected, atol=1e-6), values
    assert torch.equal(torch.unique(out.indices), torch.arange(levels))


def test_hand_cases():
    quantizer = FSQuantizer(levels=[3, 4], dim=2).eval()
    # z = 0: L = 3 gives b = 0 -> level 0 (index 1); L = 4: b = a tanh(s) - 1/2 = 0 -> level 0 (index 2).
    # id = index_0 + 3 * index_1 = 1 + 3 * 2 = 7; code (0/1, 0/2).
    z = torch.zeros(1, 2)
    assert quantizer.select(rows_to_map(z)).item() == 7
    assert torch.equal(quantizer.code_vectors(torch.tensor([7])), torch.tensor([[0.0, 0.0]]))
    # Large positive z: the top levels, +1 and (L - 1 - h) / h = 1/2: id = 2 + 3 * 3 = 11.
    big = torch.full((1, 2), 20.0)
    assert quantizer.select(rows_to_map(big)).item() == 11
    assert torch.equal(quantizer.code_vectors(torch.tensor([11])), torch.tensor([[1.0, 0.5]]))
    assert quantizer.codebook_size == 12


def test_ids_and_codes_map_to_each_other_exactly_both_ways():
    quantizer = FSQuantizer(levels=[8, 5, 5, 3], dim=4).eval()
    ids = torch.arange(quantizer.codebook_size)
    codes = quantizer.code_vectors(ids)
    assert len(torch.unique(codes, dim=0)) == quantizer.codebook_size == 600
    assert torch.equal(quantizer.select(rows_to_map(latents_of_codes(quantizer, codes))).flatten(), ids)
    z = 3 * torch.randn(5000, 4, generator=torch.Generator().manual_seed(0))
    out = quantizer(rows_to_map(z))
    assert torch.equal(quantizer.code_vectors(out.indices.flatten()), out.quantized.reshape(4, -1).t())


def test_every_code_is_reached_under_bf16_autocast():
    quantizer = FSQuantizer(levels=[8, 8, 8, 5, 5, 5], dim=6).train()
    ids = torch.arange(quantizer.codebook_size)
    latents = latents_of_codes(quantizer, quantizer.code_vectors(ids))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = quantizer(rows_to_map(latents.bfloat16()))
    reached = torch.unique(out.indices)
    # bf16 latents move each z by up to 2^-8 relative; the levels are rounded in fp32, so every code stays
    # reachable (a bf16 cast of the level indices would merge about half of them).
    assert len(reached) == quantizer.codebook_size == 64000
    assert out.quantized.dtype == torch.bfloat16


def test_straight_through_gradient_is_the_bounds_derivative():
    quantizer = FSQuantizer(levels=[5], dim=1).train()
    z = torch.tensor([[0.3], [-1.2], [2.0]], requires_grad=True)
    out = quantizer(rows_to_map(z))
    out.quantized.sum().backward()
    expected = 2.002 * (1 - torch.tanh(z.detach()) ** 2) / 2  # d(b/h)/dz for L = 5 (h = 2, no shift)
    assert torch.allclose(z.grad, expected, rtol=1e-5)
    assert out.losses == {}


def test_config_derives_k_and_checks_the_levels():
    config = FSQConfig(levels=[8, 8, 8], latent_dim=3, image_size=8, backbone_config=dict(downsampling_factor=2))
    assert config.codebook_size == 512 == math.prod(config.levels)
    assert VQTokenizer.from_config(config).quantizer.codebook_size == 512
    with pytest.raises(ValueError, match="latent dimension .4. must equal the number of FSQ levels"):
        FSQConfig(levels=[8, 8, 8], latent_dim=4)
    with pytest.raises(ValueError, match="levels"):
        FSQConfig(levels=[8, 1, 8], latent_dim=3)
    with pytest.raises(TypeError, match=r"levels\[i\]"):
        FSQConfig(levels=[8, 2.5, 8], latent_dim=3)
    with pytest.raises(TypeError, match="levels"):
        FSQConfig(levels=8, latent_dim=1)
    with pytest.raises(ValueError, match="must equal the 512 codes"):
        FSQConfig(levels=[8, 8, 8], latent_dim=3, codebook_size=100)
