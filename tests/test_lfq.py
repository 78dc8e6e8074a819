"""LFQ: ids and codes of hand cases, the commitment term, the entropy terms equal to the dense form
over all 2^D codes (values and gradients, any chunking), what each entropy term rewards, and K = 2^D."""

import math

import pytest
import torch

from vqtok import LFQConfig
from vqtok.quantizers import LFQuantizer
from vqtok.quantizers.lfq import code_bits, code_entropies


def rows_to_map(rows):
    return rows.t().reshape(1, rows.shape[1], rows.shape[0], 1).contiguous()


def dense_entropies(latents, codes, temperature):
    """(mean per-sample entropy, batch entropy) from the explicit `[N, K]` softmax over every code."""
    probabilities = torch.softmax(-torch.cdist(latents, codes) ** 2 / temperature, dim=1)
    per_sample = -(probabilities * probabilities.clamp_min(1e-30).log()).sum(dim=1).mean()
    mean = probabilities.mean(dim=0)
    return per_sample, -(mean * mean.clamp_min(1e-30).log()).sum()


def test_ids_codes_and_commitment_of_a_hand_case():
    quantizer = LFQuantizer(dim=4, entropy_weight=0.0).train()
    z = torch.tensor([[0.5, -1.0, 2.0, 0.0]])
    out = quantizer(rows_to_map(z))
    # bits [z_i > 0] = 1, 0, 1, 0 -> id 1 + 4 = 5; a zero counts as negative.
    assert out.indices.item() == 5
    assert torch.equal(out.quantized.flatten(), torch.tensor([1.0, -1.0, 1.0, -1.0]))
    assert torch.equal(quantizer.code_vectors(torch.tensor([5])), torch.tensor([[1.0, -1.0, 1.0, -1.0]]))
    # 0.25 * mean((0.5-1)^2, 0, (2-1)^2, (0+1)^2) = 0.25 * 2.25 / 4
    assert out.losses["commitment_loss"].item() == pytest.approx(0.25 * 2.25 / 4)
    assert quantizer.codebook_size == 16


@pytest.mark.parametrize("dim, chunk", [(3, 1), (5, 64), (6, 10**6)])
def test_entropy_terms_equal_the_dense_form_in_value_and_gradient(dim, chunk):
    temperature = 0.7
    latents = torch.randn(41, dim, generator=torch.Generator().manual_seed(dim)).requires_grad_()
    codes = code_bits(torch.arange(2**dim), dim).float() * 2 - 1
    dense = dense_entropies(latents, codes, temperature)
    chunked = code_entropies(4 * latents / temperature, chunk_elements=chunk)
    for ours, reference in zip(chunked, dense):
        assert ours.item() == pytest.approx(reference.item(), rel=1e-5)
    weights = (1.0, -1.3)
    grad_dense = torch.autograd.grad(sum(w * t for w, t in zip(weights, dense)), latents)[0]
    grad_chunked = torch.autograd.grad(sum(w * t for w, t in zip(weights, chunked)), latents)[0]
    assert torch.allclose(grad_chunked, grad_dense, atol=1e-5)


def test_the_quantizers_entropy_loss_is_the_dense_one():
    quantizer = LFQuantizer(dim=5, entropy_weight=0.3, diversity_gamma=0.8, entropy_temperature=0.5).train()
    z = torch.randn(30, 5, generator=torch.Generator().manual_seed(1))
    out = quantizer(rows_to_map(z))
    per_sample, batch = dense_entropies(z, quantizer.code_vectors(), 0.5)
    assert out.losses["entropy_loss"].item() == pytest.approx(0.3 * (per_sample - 0.8 * batch).item(), rel=1e-5)
    assert out.stats["batch_entropy"].item() == pytest.approx(batch.item(), rel=1e-5)


def test_each_entropy_term_rewards_what_it_should():
    dim = 4
    every_code = code_bits(torch.arange(2**dim), dim).float() * 2 - 1
    # Latents far from 0, one on each code: confident bits and a uniform batch.
    per_sample, batch = code_entropies(4 * 5 * every_code / 0.1)
    assert per_sample.item() < 1e-6
    assert batch.item() == pytest.approx(dim * math.log(2), rel=1e-5)
    # Latents at 0: every bit a coin flip, per position.
    per_sample, _ = code_entropies(torch.zeros(8, dim))
    assert per_sample.item() == pytest.approx(dim * math.log(2), rel=1e-6)
    # All latents on one code: no batch diversity.
    _, batch = code_entropies(4 * 5 * every_code[:1].repeat(16, 1) / 0.1)
    assert batch.item() < 1e-5


def test_k_follows_from_the_bits_and_large_k_is_refused():
    config = LFQConfig(latent_dim=9, image_size=8, backbone_config=dict(downsampling_factor=2))
    assert config.codebook_size == 512
    with pytest.raises(ValueError, match="must equal the 512 codes"):
        LFQConfig(latent_dim=9, codebook_size=500)
    with pytest.raises(ValueError, match="at most 24 bits"):
        LFQConfig(latent_dim=30)
    with pytest.raises(ValueError, match="entropy_temperature"):
        LFQConfig(entropy_temperature=0.0)
