"""SimVQ: the codes are C W + b with C frozen, training moves W and b (and so every code) but never C,
and the nearest code is searched among C W + b."""

import pytest
import torch

from vqtok import SimVQConfig, VQTokenizer
from vqtok.quantizers import SimVQuantizer


def rows_to_map(rows):
    return rows.t().reshape(1, rows.shape[1], rows.shape[0], 1).contiguous()


def test_codes_are_the_frozen_table_times_the_learnt_map():
    quantizer = SimVQuantizer(8, 3).eval()
    table = quantizer.codebook.weight
    assert not table.requires_grad
    assert torch.allclose(quantizer.code_vectors(), table @ quantizer.projection.weight.t() + quantizer.projection.bias)
    z = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    expected = torch.cdist(z, quantizer.code_vectors()).argmin(dim=1)
    assert torch.equal(quantizer.select(rows_to_map(z)).flatten(), expected)


def test_training_moves_every_code_but_never_the_frozen_table():
    torch.manual_seed(0)
    model = VQTokenizer.from_config(SimVQConfig(image_size=8, backbone_config=dict(base_channels=8, downsampling_factor=2),
                                                latent_dim=4, codebook_size=64)).train()
    table = model.quantizer.codebook.weight.detach().clone()
    codes = model.quantizer.code_vectors().detach().clone()
    optimizer = model.build_optimizer(learning_rate=1e-2)
    for step in range(3):
        optimizer.zero_grad()
        out = model(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(step)) * 2 - 1)
        assert out.input_ids.unique().numel() < 64  # most codes are not chosen in a batch of 32 positions...
        out.loss.backward()
        optimizer.step()
    assert torch.equal(model.quantizer.codebook.weight, table)
    moved = (model.quantizer.code_vectors().detach() - codes).norm(dim=1)
    assert bool((moved > 0).all()), "...yet every code moved, through W"


def test_rotation_trick_keeps_the_forward_value():
    quantizer = SimVQuantizer(16, 4, rotation_trick=True).train()
    z = torch.randn(20, 4, generator=torch.Generator().manual_seed(3))
    out = quantizer(rows_to_map(z))
    assert torch.allclose(out.quantized.reshape(4, -1).t(), quantizer.code_vectors(out.indices.flatten()), atol=1e-6)
    with pytest.raises(TypeError, match="rotation_trick"):
        SimVQuantizer(16, 4, rotation_trick=1)

