"""BSQ: latents and codes on the unit sphere, the bounded quantization error, ids of the signs, and
the entropy terms equal to the dense form over the sphere's 2^D codes."""

import math

import pytest
import torch

from vqtok.quantizers import BSQuantizer, LFQuantizer
from vqtok.quantizers.lfq import code_entropies


def rows_to_map(rows):
    return rows.t().reshape(1, rows.shape[1], rows.shape[0], 1).contiguous()


def test_codes_and_quantized_latents_have_unit_norm_and_bounded_error():
    dim = 6
    quantizer = BSQuantizer(dim=dim).train()
    codes = quantizer.code_vectors()
    assert torch.allclose(codes.norm(dim=1), torch.ones(2**dim))
    assert torch.allclose(codes.abs(), torch.full_like(codes, 1 / math.sqrt(dim)))
    z = 10 * torch.randn(500, dim, generator=torch.Generator().manual_seed(0))
    out = quantizer(rows_to_map(z))
    quantized = out.quantized.reshape(dim, -1).t()
    assert torch.allclose(quantized.norm(dim=1), torch.ones(500), atol=1e-6)
    u = torch.nn.functional.normalize(z, dim=1)
    error = ((u - quantized) ** 2).sum(dim=1)
    assert error.max().item() <= 2 - 2 / math.sqrt(dim) + 1e-6
    assert torch.allclose(error, 2 - 2 * (u * quantized).sum(dim=1), atol=1e-5)


def test_ids_are_the_sign_pattern_whatever_the_scale():
    z = torch.tensor([[3.0, -0.1, 0.2], [-30.0, 1.0, -1.0]])
    bsq, lfq = BSQuantizer(dim=3).eval(), LFQuantizer(dim=3).eval()
    ids = bsq.select(rows_to_map(z)).flatten()
    assert ids.tolist() == [1 + 4, 2]
    assert torch.equal(ids, lfq.select(rows_to_map(z)).flatten())
    assert torch.equal(bsq.select(rows_to_map(1e-3 * z)).flatten(), ids)


def test_entropy_loss_is_the_dense_form_on_the_sphere():
    dim, temperature = 5, 0.2
    quantizer = BSQuantizer(dim=dim, entropy_weight=1.0, diversity_gamma=1.0, entropy_temperature=temperature).train()
    z = torch.randn(25, dim, generator=torch.Generator().manual_seed(2))
    out = quantizer(rows_to_map(z))
    u = torch.nn.functional.normalize(z, dim=1)
    probabilities = torch.softmax(-torch.cdist(u, quantizer.code_vectors()) ** 2 / temperature, dim=1)
    per_sample = -(probabilities * probabilities.log()).sum(dim=1).mean()
    mean = probabilities.mean(dim=0)
    batch = -(mean * mean.log()).sum()
    assert out.stats["per_sample_entropy"].item() == pytest.approx(per_sample.item(), rel=1e-5)
    assert out.stats["batch_entropy"].item() == pytest.approx(batch.item(), rel=1e-5)
    assert out.losses["entropy_loss"].item() == pytest.approx((per_sample - batch).item(), rel=1e-5)
    assert code_entropies(torch.zeros(3, dim))[0].item() == pytest.approx(dim * math.log(2))
