"""VectorQuantizer maths: nearest-code search, straight-through, codebook loss, EMA, k-means,
dead-code restarts, numerics under autocast."""

import math

import pytest
import torch
import torch.nn.functional as F

from vqtok.quantizers import VectorQuantizer, nearest_code, perplexity_from_counts
from vqtok.quantizers.kmeans import kmeans


def as_map(rows):
    """[N, D] rows -> [1, D, N, 1] map, the layout quantizers take."""
    return rows.t().reshape(1, rows.shape[1], rows.shape[0], 1).contiguous()


def make_vq(codebook, **kwargs):
    """A VectorQuantizer whose codebook (and EMA statistics where it keeps them, count 1 each) are set to
    `codebook`."""
    kwargs.setdefault("kmeans_init", False)
    kwargs.setdefault("dead_code_threshold", 0.0)
    vq = VectorQuantizer(codebook.shape[0], codebook.shape[1], **kwargs)
    with torch.no_grad():
        vq.codebook.weight.copy_(codebook)
        if vq.codebook.has_ema:
            vq.codebook.ema_cluster_size.fill_(1.0)
            vq.codebook.ema_embed_sum.copy_(codebook)
        vq.codebook.usage.fill_(10.0)
        vq.codebook.initialized.fill_(True)
    return vq


def test_nearest_code_matches_brute_force_for_every_chunk_size():
    torch.manual_seed(0)
    rows, codebook = torch.randn(300, 7), torch.randn(37, 7)
    expected = torch.cdist(rows, codebook).argmin(dim=1)
    for chunk in (1, 16, 64, 299, 300, 1000):
        assert torch.equal(nearest_code(rows, codebook, chunk_rows=chunk), expected)


def test_the_chunk_budget_suits_the_device():
    from vqtok.quantizers.functional import default_chunk_rows

    # CPU: about a million distances per chunk, at least 64 rows (unchanged: cache-sized blocks).
    assert default_chunk_rows(1024) == default_chunk_rows(1024, "cpu", 65536) == 1024
    assert default_chunk_rows(65536, "cpu") == 64
    # GPU: the shapes (N, K): one chunk holds at most 256 MiB and at most 1/8 of the [N, K] block.
    for rows, codes in [(65536, 1024), (65536, 16384), (65536, 8192), (262144, 65536)]:
        chunk = default_chunk_rows(codes, torch.device("cuda"), rows)
        assert 4 * chunk * codes <= min(256 << 20, 4 * rows * codes / 8), (rows, codes, chunk)
        assert chunk >= min(1024, rows // 8)  # and large: few launches
    assert default_chunk_rows(16384, "cuda", 65536) == 4096 and default_chunk_rows(1024, "cuda", 65536) == 8192
    assert default_chunk_rows(1024, "cuda", 512) == 512  # 2 MiB in all: one chunk


def test_nearest_code_hand_case():
    codebook = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    rows = torch.tensor([[1.0, 1.0], [9.0, -1.0], [4.0, 6.0], [6.0, 4.0]])
    assert nearest_code(rows, codebook).tolist() == [0, 1, 2, 1]


def test_perplexity_hand_cases():
    assert perplexity_from_counts(torch.tensor([2.0, 2.0, 0.0, 0.0])).item() == pytest.approx(2.0)
    assert perplexity_from_counts(torch.tensor([5.0, 0.0, 0.0])).item() == pytest.approx(1.0)
    p = torch.tensor([0.5, 0.25, 0.25])
    assert perplexity_from_counts(p * 8).item() == pytest.approx(math.exp(-(p * p.log()).sum().item()))


def test_forward_outputs_nearest_codes_and_straight_through_gradient():
    codebook = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    vq = make_vq(codebook, use_ema=False)
    rows = torch.tensor([[1.0, 1.0], [8.0, 0.5], [2.0, -1.0]], requires_grad=True)
    out = vq(as_map(rows))
    assert out.indices.flatten().tolist() == [0, 1, 0]
    quantized_rows = out.quantized.reshape(2, 3).t()
    assert torch.allclose(quantized_rows, codebook[[0, 1, 0]])
    # The decoder's gradient passes to z_e unchanged (straight-through).
    weights = torch.randn(3, 2)
    (quantized_rows * weights).sum().backward()
    assert torch.allclose(rows.grad, weights)


def test_commitment_and_codebook_losses_hand_case():
    codebook = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    vq = make_vq(codebook, use_ema=False, commitment_cost=0.25)
    rows = torch.tensor([[1.0, 1.0], [8.0, 0.0]])
    out = vq(as_map(rows))
    squared_error = (1 + 1 + 4 + 0) / 4  # mean over N*D elements
    assert out.losses["commitment_loss"].item() == pytest.approx(0.25 * squared_error)
    assert out.losses["codebook_loss"].item() == pytest.approx(squared_error)


def test_codebook_loss_moves_used_codes_towards_their_vectors():
    codebook = torch.tensor([[0.0, 0.0], [10.0, 0.0], [50.0, 50.0]])
    vq = make_vq(codebook, use_ema=False)
    rows = torch.tensor([[1.0, 1.0], [8.0, 0.0]])
    optimizer = torch.optim.SGD([vq.codebook.weight], lr=0.5)
    vq(as_map(rows)).losses["codebook_loss"].backward()
    # d/de_k mean((e_k - z)^2) over N*D = 4 elements = 2 (e_k - z) / 4
    expected_grad = torch.tensor([[0.5 * (0 - 1), 0.5 * (0 - 1)], [0.5 * (10 - 8), 0.0], [0.0, 0.0]])
    assert torch.allclose(vq.codebook.weight.grad, expected_grad)
    optimizer.step()
    assert torch.allclose(vq.codebook.weight.data, codebook - 0.5 * expected_grad)
    assert torch.equal(vq.codebook.weight.data[2], codebook[2])


def test_ema_codebook_has_no_gradient_and_no_codebook_loss():
    vq = make_vq(torch.randn(4, 3), use_ema=True)
    out = vq(as_map(torch.randn(10, 3)))
    assert "codebook_loss" not in out.losses
    assert not vq.codebook.weight.requires_grad


def test_ema_update_matches_hand_computation():
    codebook = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    eps = 1e-2
    vq = make_vq(codebook, use_ema=True, ema_decay=0.5, ema_epsilon=eps)
    rows = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    vq.train()
    out = vq(as_map(rows))
    assert out.indices.flatten().tolist() == [0, 0, 1]
    # counts n = [2, 1], sums = [[4, 0], [0, 2]]; N = 0.5*1 + 0.5*n; M = 0.5*e + 0.5*sums
    expected_n = torch.tensor([1.5, 1.0])
    expected_m = torch.tensor([[3.0, 0.0], [0.0, 1.5]])
    assert torch.allclose(vq.codebook.ema_cluster_size, expected_n)
    assert torch.allclose(vq.codebook.ema_embed_sum, expected_m)
    total = 2.5
    smoothed = (expected_n + eps) / (total + 2 * eps) * total
    assert torch.allclose(vq.codebook.weight.data, expected_m / smoothed[:, None])
    # e.g. code 0: 3 / ((1.5 + 0.01) / 2.52 * 2.5)
    assert vq.codebook.weight.data[0, 0].item() == pytest.approx(3 / (1.51 / 2.52 * 2.5))


def test_eval_mode_does_not_touch_state():
    vq = make_vq(torch.randn(4, 3), use_ema=True, dead_code_threshold=1.0)
    vq.eval()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(as_map(torch.randn(20, 3)))
    vq.select(as_map(torch.randn(20, 3)))
    for key, value in vq.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_dead_code_restart_moves_dead_codes_and_survives_next_ema_step():
    codebook = torch.tensor([[0.0, 0.0], [10.0, 0.0], [100.0, 100.0], [100.0, 100.0]])
    vq = make_vq(codebook, use_ema=True, ema_decay=0.9, dead_code_threshold=1.0)
    with torch.no_grad():
        vq.codebook.usage.copy_(torch.tensor([10.0, 10.0, 0.0, 0.0]))
    batch = torch.tensor([[0.0, 0.1], [0.1, 0.0], [10.0, 0.1], [9.9, 0.0]])
    vq.train()
    out = vq(as_map(batch))
    assert out.stats["restarted_codes"].item() == 2
    restarted = vq.codebook.weight.data[2:].clone()
    for code in restarted:  # each dead code now sits on a vector of the batch
        assert torch.isclose(torch.cdist(code[None], batch), torch.tensor(0.0), atol=1e-5).any()

    # Next step: codes 2 and 3 are not chosen; the EMA update must leave them where they were put
    # (a restart that zeroed their EMA statistics would pull them to the origin here).
    vq.dead_code_threshold = 0.0
    out = vq(as_map(torch.tensor([[-5.0, -5.0], [15.0, 0.0]])))
    assert set(out.indices.flatten().tolist()) == {0, 1}
    assert torch.allclose(vq.codebook.weight.data[2:], restarted, atol=1e-3)


def test_live_codes_are_not_restarted():
    vq = make_vq(torch.tensor([[0.0, 0.0], [10.0, 0.0]]), use_ema=True, dead_code_threshold=1.0)
    vq.train()
    before = vq.codebook.weight.data.clone()
    out = vq(as_map(torch.tensor([[0.0, 0.0], [10.0, 0.0]] * 8)))
    assert out.stats["restarted_codes"].item() == 0
    assert torch.allclose(vq.codebook.weight.data, before, atol=1e-3)


def test_kmeans_finds_separated_clusters():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    rows = torch.cat([c + 0.1 * torch.randn(50, 2) for c in centres])
    found, counts = kmeans(rows, 4, iters=20, generator=torch.Generator().manual_seed(1))
    distance = torch.cdist(centres, found)
    assert (distance.min(dim=1).values < 0.1).all()  # every true centre has a code on it
    assert counts.sum().item() == 200


def test_kmeans_init_places_codes_on_the_data():
    torch.manual_seed(0)
    rows = 5.0 + torch.randn(256, 4)
    vq = VectorQuantizer(16, 4, kmeans_init=True, dead_code_threshold=0.0)
    assert not bool(vq.codebook.initialized)
    vq.train()
    vq(as_map(rows))
    assert bool(vq.codebook.initialized)
    # Uniform init lies in [-1/16, 1/16]; after k-means every code is near the data cloud.
    nearest_row_distance = torch.cdist(vq.codebook.weight.data, rows).min(dim=1).values
    assert (nearest_row_distance < 2.0).all()
    assert (vq.codebook.weight.data.mean(dim=1) > 3.0).all()


def test_cosine_mode_selects_largest_cosine_similarity():
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 5, use_cosine=True, kmeans_init=False)
    rows = torch.randn(40, 5) * 7
    expected = (torch.nn.functional.normalize(rows, dim=1) @ vq.codebook.weight.data.t()).argmax(dim=1)
    assert torch.equal(vq.select(as_map(rows)).flatten(), expected)
    assert torch.allclose(vq.codebook.weight.data.norm(dim=1), torch.ones(8))


def test_distances_stay_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    # Codes so close that bf16 (8 bits of mantissa) cannot tell them apart.
    codebook = torch.tensor([[100.0, 0.0], [100.0, 0.05]])
    vq = make_vq(codebook, use_ema=False)
    rows = torch.tensor([[100.0, 0.0], [100.0, 0.05]] * 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ids = vq.select(as_map(rows)).flatten()
        out = vq(as_map(rows.bfloat16()))
    assert ids.tolist() == [0, 1] * 4
    assert out.indices.flatten().tolist() == [0, 1] * 4
    assert out.quantized.dtype == torch.bfloat16


def test_embed_rejects_bad_ids():
    vq = VectorQuantizer(8, 3)
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        vq.embed(torch.tensor([[0, 8]]))
    with pytest.raises(ValueError, match=r"\[0, 8\)"):
        vq.embed(torch.tensor([[-1, 2]]))
    with pytest.raises(TypeError, match="integer dtype"):
        vq.embed(torch.tensor([[0.0, 1.0]]))


def test_constructor_rejects_bad_options():
    with pytest.raises(ValueError, match="ema_decay"):
        VectorQuantizer(8, 3, ema_decay=1.5)
    with pytest.raises(ValueError, match="codebook_size"):
        VectorQuantizer(1, 3)
    with pytest.raises(ValueError, match="dead_code_threshold"):
        VectorQuantizer(8, 3, dead_code_threshold=-1)


# --- the rotation trick -------------------------------------------------------------------------
def test_rotation_trick_hand_case_value_and_gradient():
    # z = (1, 0), its code q = (0, 2): lambda = 2 and R the quarter turn [[0, -1], [1, 0]] taking e1 to e2,
    # so the output is lambda R z = q and the gradient reaching z is lambda R^T g.
    quantizer = VectorQuantizer(2, 2, use_ema=False, kmeans_init=False, dead_code_threshold=0, rotation_trick=True)
    with torch.no_grad():
        quantizer.codebook.weight.copy_(torch.tensor([[0.0, 2.0], [10.0, 10.0]]))
    z = torch.tensor([[1.0, 0.0]], requires_grad=True)
    out = quantizer.train()(z.reshape(1, 2, 1, 1))
    assert torch.allclose(out.quantized.flatten(), torch.tensor([0.0, 2.0]))
    rotation = torch.tensor([[0.0, -1.0], [1.0, 0.0]])
    for upstream in (torch.tensor([1.0, 0.0]), torch.tensor([0.3, -0.7])):
        (grad,) = torch.autograd.grad((out.quantized.flatten() * upstream).sum(), z, retain_graph=True)
        assert torch.allclose(grad.flatten(), 2 * rotation.t() @ upstream, atol=1e-6)


def test_rotation_trick_matches_the_papers_formula_on_random_vectors():
    from vqtok.quantizers import rotate_to_codes

    generator = torch.Generator().manual_seed(0)
    z = torch.randn(6, 5, generator=generator, requires_grad=True)
    q = torch.randn(6, 5, generator=generator)
    upstream = torch.randn(6, 5, generator=generator)
    out = rotate_to_codes(z, q)
    assert torch.allclose(out, q, atol=1e-6)
    (grad,) = torch.autograd.grad((out * upstream).sum(), z)
    for n in range(6):
        z_hat, q_hat = F.normalize(z[n].detach(), dim=0), F.normalize(q[n], dim=0)
        r = F.normalize(z_hat + q_hat, dim=0)
        rotation = torch.eye(5) - 2 * torch.outer(r, r) + 2 * torch.outer(q_hat, z_hat)
        assert torch.allclose(rotation @ z_hat, q_hat, atol=1e-6)  # R is the rotation taking z^ to q^
        scale = q[n].norm() / z[n].detach().norm()
        assert torch.allclose(grad[n], scale * rotation.t() @ upstream[n], atol=1e-5)
    # Where the rotation is undefined (z = 0, or z opposite q), the gradient is the straight-through one.
    z = torch.tensor([[0.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    out = rotate_to_codes(z, torch.tensor([[1.0, 1.0], [2.0, 0.0]]))
    (grad,) = torch.autograd.grad(out.sum(), z)
    assert torch.equal(grad, torch.ones(2, 2)) and torch.allclose(out, torch.tensor([[1.0, 1.0], [2.0, 0.0]]))
