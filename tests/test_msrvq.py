"""Multi-scale residual VQ (VAR): a hand case, residuals falling scale by scale, the id grid read back
exactly, the scales filled in from the grid and checked, and the grid size enforced."""

import pytest
import torch

from vqtok import MSRVQConfig, VQTokenizer
from vqtok.quantizers import MultiScaleResidualQuantizer
from vqtok.quantizers.msrvq import cell_positions, default_scales, gather_ids, spread_ids

TINY = dict(image_size=8, backbone_config=dict(base_channels=8, downsampling_factor=2), latent_dim=4, codebook_size=16)


def test_hand_case_coarse_then_fine():
    quantizer = MultiScaleResidualQuantizer(3, 1, scales=[1, 2], kmeans_init=False, use_ema=False, dead_code_threshold=0)
    with torch.no_grad():
        quantizer.codebook.weight.copy_(torch.tensor([[0.0], [2.0], [-1.0]]))
        quantizer.codebook.initialized.fill_(True)
    z = torch.tensor([[3.5, 0.5], [0.5, 3.5]]).reshape(1, 1, 2, 2)
    out = quantizer.train()(z)
    # Scale 1: the mean 2 -> code 1 (2.0); residual [[1.5, -1.5], [-1.5, 1.5]] -> codes 1 (2.0) and 2 (-1.0).
    assert out.indices[0, ..., 0].tolist() == [[1, 1], [1, 1]]
    assert out.indices[0, ..., 1].tolist() == [[1, 2], [2, 1]]
    assert torch.allclose(out.quantized.flatten(), torch.tensor([4.0, 1.0, 1.0, 4.0]))
    assert torch.allclose(quantizer.embed(out.indices), out.quantized)
    assert out.losses["commitment_loss"].item() == pytest.approx(0.25 * 0.25)


def test_residual_falls_scale_by_scale_and_select_decodes_like_the_forward():
    torch.manual_seed(0)
    quantizer = MultiScaleResidualQuantizer(64, 4, scales=[1, 2, 3, 5, 8]).train()
    # Each image: an offset, a smooth ramp and detail, so every scale has something to code.
    z = 3 * torch.randn(16, 4, 1, 1) + torch.linspace(-2, 2, 8) + 0.5 * torch.randn(16, 4, 8, 8)
    for _ in range(5):
        quantizer(z)
    quantizer.eval()
    residual, norms = z.clone(), [z.norm().item()]
    ids = quantizer.select(z)
    for level, scale in enumerate(quantizer.scales):
        codes = quantizer.codebook.weight[gather_ids(ids[..., level], scale)].movedim(-1, 1)
        residual = residual - torch.nn.functional.interpolate(codes, size=(8, 8), mode="bilinear", align_corners=False) \
            if scale < 8 else residual - codes
        norms.append(residual.norm().item())
    assert all(later < earlier for earlier, later in zip(norms, norms[1:])), norms
    assert torch.allclose(quantizer.embed(ids), quantizer(z).quantized, atol=1e-5)


@pytest.mark.parametrize("scale, side", [(1, 8), (3, 8), (5, 16), (13, 16), (8, 8)])
def test_ids_spread_over_their_cells_are_read_back_exactly(scale, side):
    ids = torch.randint(100, (2, scale, scale), generator=torch.Generator().manual_seed(scale))
    grid = spread_ids(ids, side)
    assert grid.shape == (2, side, side)
    assert torch.equal(gather_ids(grid, scale), ids)
    positions = cell_positions(scale, side, "cpu")
    assert torch.equal(positions * scale // side, torch.arange(scale))  # each position lies in its own cell


def test_scales_are_filled_in_from_the_grid_and_checked():
    assert default_scales(16) == [1, 2, 4, 8, 16] and default_scales(1) == [1]
    config = MSRVQConfig(**TINY)
    assert config.scales == [1, 2, 4] and config.token_shape == (4, 4, 3)
    assert MSRVQConfig(**TINY, scales=[2, 3, 4]).codes_per_position == 3
    with pytest.raises(ValueError, match="must end with the token grid's side 4"):
        MSRVQConfig(**TINY, scales=[1, 2, 8])
    with pytest.raises(ValueError, match="strictly growing"):
        MSRVQConfig(**TINY, scales=[2, 1, 4])
    model = VQTokenizer.from_config(config).eval()
    with pytest.raises(ValueError, match="works on its 4x4 token grid"):
        model.encode(torch.zeros(1, 3, 16, 16))
