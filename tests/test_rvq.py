"""Residual VQ: a hand case, residual norms falling with depth, shared and per-level codebooks,
quantizer dropout, and R ids per position (residual and multi-scale residual VQ) through
`tokenize_dataset`, the prior and sampling."""

import pytest
import torch
from tiny_data import tiny_images

from vqtok import MSRVQConfig, PriorConfig, RVQConfig, TokenLayout, VQTokenizer, TokenPrior, VQImageProcessor, codes_from_dataset
from vqtok import decode_samples, tokenize_dataset
from vqtok.quantizers import ResidualVectorQuantizer

pytestmark = pytest.mark.usefixtures("one_thread")


def rows_to_map(rows):
    return rows.t().reshape(1, rows.shape[1], rows.shape[0], 1).contiguous()


def with_tables(quantizer, *tables):
    with torch.no_grad():
        for codebook, table in zip(quantizer.codebooks, tables):
            codebook.weight.copy_(torch.tensor(table))
            codebook.initialized.fill_(True)
    return quantizer


def test_hand_case_levels_code_the_residuals():
    quantizer = with_tables(
        ResidualVectorQuantizer(2, 1, num_quantizers=2, kmeans_init=False, use_ema=False, dead_code_threshold=0),
        [[0.0], [4.0]], [[-1.0], [1.0]],
    ).train()
    z = torch.tensor([[5.0], [3.2], [-0.4]])
    out = quantizer(rows_to_map(z))
    # 5 -> 4 (id 1), residual 1 -> 1 (id 1);  3.2 -> 4, residual -0.8 -> -1 (id 0);  -0.4 -> 0, -0.4 -> -1.
    assert out.indices.reshape(3, 2).tolist() == [[1, 1], [1, 0], [0, 0]]
    assert torch.allclose(out.quantized.flatten(), torch.tensor([5.0, 3.0, -1.0]))
    assert torch.allclose(quantizer.embed(out.indices).flatten(), torch.tensor([5.0, 3.0, -1.0]))
    # commitment: 0.25 * (mean((5-4)^2, (3.2-4)^2, (-0.4)^2) + mean(0, (-0.8+1)^2, (-0.4+1)^2))
    expected = 0.25 * ((1 + 0.64 + 0.16) / 3 + (0 + 0.04 + 0.36) / 3)
    assert out.losses["commitment_loss"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("shared", [False, True])
def test_residual_norms_fall_with_depth(shared):
    torch.manual_seed(0)
    quantizer = ResidualVectorQuantizer(32, 8, num_quantizers=4, shared_codebook=shared).train()
    z = torch.randn(2048, 8) * torch.linspace(0.2, 3.0, 8)
    for _ in range(5):
        quantizer(rows_to_map(z))
    _, residuals, codes = quantizer.eval()._levels(z)
    norms = [r.norm(dim=1).mean().item() for r in residuals] + [(residuals[-1] - codes[-1]).norm(dim=1).mean().item()]
    assert all(later < earlier for earlier, later in zip(norms, norms[1:])), norms
    assert len(quantizer.codebooks) == (1 if shared else 4)
    expected = sum(codes)
    assert torch.allclose(quantizer.embed(quantizer.select(rows_to_map(z))).reshape(8, -1).t(), expected, atol=1e-5)


def test_quantizer_dropout_uses_a_prefix_of_the_levels():
    torch.manual_seed(0)
    quantizer = ResidualVectorQuantizer(16, 4, num_quantizers=3, quantizer_dropout=1.0).train()
    z = torch.randn(256, 4)
    quantizer(rows_to_map(z))  # the k-means start
    seen = set()
    for _ in range(30):
        tables = [quantizer.level_codebook(level).weight.detach().clone() for level in range(3)]  # before the EMA step
        out = quantizer(rows_to_map(z))
        used = int(out.stats["levels_used"])
        seen.add(used)
        ids = out.indices.reshape(-1, 3)
        prefix = sum(tables[level][ids[:, level]] for level in range(used))
        assert torch.allclose(out.quantized.reshape(4, -1).t(), prefix, atol=1e-5)
        assert ids.shape == (256, 3)
    assert seen == {1, 2, 3}
    assert int(quantizer.eval()(rows_to_map(z)).stats["levels_used"]) == 3


@pytest.mark.parametrize("config_class, depth", [(RVQConfig, dict(num_quantizers=3)), (MSRVQConfig, dict(scales=[1, 2, 4]))])
def test_r_ids_per_position_through_tokenization_the_prior_and_sampling(tmp_path, config_class, depth):
    torch.manual_seed(0)
    config = config_class(image_size=16, backbone_config=dict(base_channels=8, downsampling_factor=4), latent_dim=8,
                          codebook_size=16, **depth)
    model = VQTokenizer.from_config(config).train()
    model(torch.rand(8, 3, 16, 16) * 2 - 1)  # k-means start, so the levels differ
    model.eval().save_pretrained(tmp_path)
    VQImageProcessor.for_tokenizer(config).save_pretrained(tmp_path)
    images = tiny_images(6)
    tokens = tokenize_dataset(images, str(tmp_path))
    layout = TokenLayout.for_tokenizer(model)
    assert config.token_shape == (4, 4, 3) and len(tokens[0]["input_ids"]) == 4 * 4 * 3
    codes = codes_from_dataset(tokens, layout)
    pixels = VQImageProcessor.from_pretrained(tmp_path)(list(images["image"]), return_tensors="pt")["pixel_values"]
    assert torch.equal(codes, model.encode(pixels))
    prior = TokenPrior(PriorConfig.for_tokenizer(config, hidden_size=16, num_layers=1, num_heads=2))
    assert prior.config.token_shape == (4, 4, 3)
    samples = prior.generate_codes(2, seed=0)
    assert samples.shape == (2, 4, 4, 3)
    assert decode_samples(model, samples).shape == (2, 3, 16, 16)
