"""IBQ: the code of largest logit in the forward, the gradient of (onehot - sg(softmax) + softmax) E in
the backward (reaching every code), the same for any chunking."""

import pytest
import torch
import torch.nn.functional as F

from vqtok.quantizers import IBQuantizer
from vqtok.quantizers.ibq import IndexBackpropagation


def rows_to_map(rows):
    return rows.t().reshape(1, rows.shape[1], rows.shape[0], 1).contiguous()


def reference(rows, table):
    """The paper's form with autograd over the dense `[N, K]` softmax."""
    soft = torch.softmax(rows @ table.t(), dim=1)
    hard = F.one_hot(soft.argmax(dim=1), table.shape[0]).float()
    return (hard - soft.detach() + soft) @ table


@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])
def test_value_and_gradients_equal_the_dense_form(chunk_rows):
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(23, 5, generator=generator, requires_grad=True)
    table = torch.randn(11, 5, generator=generator, requires_grad=True)
    upstream = torch.randn(23, 5, generator=generator)
    codes, ids = IndexBackpropagation.apply(rows, table, chunk_rows)
    assert torch.equal(ids, (rows @ table.t()).argmax(dim=1))
    assert torch.equal(codes, table[ids])
    ours = torch.autograd.grad((codes * upstream).sum(), (rows, table))
    theirs = torch.autograd.grad((reference(rows, table) * upstream).sum(), (rows, table))
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-5)


def test_every_code_gets_a_gradient_not_only_the_chosen_ones():
    torch.manual_seed(0)
    quantizer = IBQuantizer(64, 4, kmeans_init=False).train()
    z = torch.randn(16, 4)
    out = quantizer(rows_to_map(z))
    chosen = out.indices.unique().numel()
    out.loss.backward()
    assert chosen < 64
    assert bool((quantizer.codebook.weight.grad.norm(dim=1) > 0).all())


def test_codes_are_chosen_by_inner_product_not_distance():
    quantizer = IBQuantizer(2, 2, kmeans_init=False).eval()
    with torch.no_grad():
        quantizer.codebook.weight.copy_(torch.tensor([[1.0, 0.0], [3.0, 0.0]]))
    # z = (1, 0) is nearest to code 0 but has the larger logit with code 1 (3 > 1).
    assert quantizer.select(rows_to_map(torch.tensor([[1.0, 0.0]]))).item() == 1


@pytest.mark.parametrize("chunk_rows", [1, 5, 100])
def test_entropy_terms_equal_the_dense_form_for_any_chunking(chunk_rows):
    from vqtok.quantizers.ibq import code_entropies

    generator = torch.Generator().manual_seed(1)
    rows = torch.randn(17, 4, generator=generator, requires_grad=True)
    table = torch.randn(9, 4, generator=generator, requires_grad=True)
    log_p = torch.log_softmax(rows @ table.t() / 0.5, dim=1)
    dense_per_sample = -(log_p.exp() * log_p).sum(dim=1).mean()
    mean = log_p.exp().mean(dim=0)
    dense_batch = -(mean * mean.log()).sum()
    per_sample, batch = code_entropies(rows, table, 0.5, chunk_rows)
    assert per_sample.item() == pytest.approx(dense_per_sample.item(), rel=1e-5)
    assert batch.item() == pytest.approx(dense_batch.item(), rel=1e-5)
    ours = torch.autograd.grad(per_sample - 0.7 * batch, (rows, table))
    theirs = torch.autograd.grad(dense_per_sample - 0.7 * dense_batch, (rows, table))
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, atol=1e-5)


def test_the_losses_are_the_reference_terms():
    torch.manual_seed(0)
    quantizer = IBQuantizer(8, 3, entropy_weight=0.0).train()
    z = torch.randn(10, 3)
    out = quantizer(rows_to_map(z))
    codes = quantizer.codebook.weight[out.indices.flatten()]
    squared_error = F.mse_loss(codes, z).item()
    assert out.losses["index_loss"].item() == pytest.approx(squared_error, rel=1e-5)
    assert out.losses["commitment_loss"].item() == pytest.approx(squared_error, rel=1e-5)
    assert out.losses["codebook_loss"].item() == pytest.approx(0.25 * squared_error, rel=1e-5)
