"""Soft VQ by EM: posterior samples, soft EMA M-step, commitment loss, deterministic encode."""

import math

import pytest
import torch

import vqtok.quantizers.functional as functional
import vqtok.quantizers.softvq as softvq_module
from vqtok import SoftVQConfig, SoftVQModel, VQTokenizer
from vqtok.quantizers import SoftVQQuantizer, sample_codes, squared_distances


def as_map(rows):
    """[N, D] rows -> [1, D, N, 1] map, the layout quantizers take."""
    return rows.t().reshape(1, rows.shape[1], rows.shape[0], 1).contiguous()


def make_soft(codebook, cluster_size=None, **kwargs):
    """A SoftVQQuantizer with the given codebook and EMA statistics N (default 1 each), M = N e."""
    kwargs.setdefault("kmeans_init", False)
    quantizer = SoftVQQuantizer(codebook.shape[0], codebook.shape[1], **kwargs)
    cluster_size = torch.ones(codebook.shape[0]) if cluster_size is None else cluster_size
    with torch.no_grad():
        quantizer.codebook.weight.copy_(codebook)
        quantizer.codebook.ema_cluster_size.copy_(cluster_size)
        quantizer.codebook.ema_embed_sum.copy_(codebook * cluster_size[:, None])
        quantizer.codebook.initialized.fill_(True)
    return quantizer


def test_squared_distances_match_brute_force():
    torch.manual_seed(0)
    rows, codebook = 5 * torch.randn(40, 6), torch.randn(9, 6)
    assert torch.allclose(squared_distances(rows, codebook), torch.cdist(rows, codebook) ** 2, rtol=1e-4, atol=1e-3)


def sample_shares(samples, codebook_size):
    """[N, S] sampled ids -> [N, K] weights: the share of each row's samples that drew each code."""
    one_hots = torch.nn.functional.one_hot(samples, codebook_size).float()
    return one_hots.mean(dim=1)


def test_posterior_samples_are_ids_in_range():
    torch.manual_seed(0)
    quantizer = make_soft(torch.randn(12, 3), num_samples=7)
    samples = quantizer.sample_posterior(torch.randn(100, 3))
    assert samples.shape == (100, 7) and samples.dtype == torch.long
    assert int(samples.min()) >= 0 and int(samples.max()) < 12


def test_many_samples_approach_the_posterior_softmax_of_minus_distance():
    torch.manual_seed(0)
    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.5]])
    rows = torch.tensor([[0.2, 0.1], [0.6, 0.4], [0.0, 1.0]])
    expected = torch.softmax(-(torch.cdist(rows, codebook) ** 2), dim=1)
    samples = make_soft(codebook, num_samples=20000, temperature=1.0).sample_posterior(rows)
    assert torch.allclose(sample_shares(samples, 3), expected, atol=0.02)


def test_temperature_divides_the_distances():
    # Distances [2.25, 0.25]: p(code 0) = 1 / (1 + exp((2.25 - 0.25) / T)).
    torch.manual_seed(0)
    codebook, rows = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.5]])
    for temperature in (1.0, 4.0):
        samples = make_soft(codebook, num_samples=20000, temperature=temperature).sample_posterior(rows)
        expected = 1 / (1 + math.exp(2.0 / temperature))
        assert sample_shares(samples, 2)[0, 0].item() == pytest.approx(expected, abs=0.01)


def test_sampling_works_one_chunk_of_rows_at_a_time(monkeypatch):
    # Bounded memory: no distance block larger than `chunk_rows` x K, and the same distribution.
    blocks = []
    original = functional.squared_distances

    def recording(rows, codebook):
        blocks.append(rows.shape[0])
        return original(rows, codebook)

    monkeypatch.setattr(functional, "squared_distances", recording)
    torch.manual_seed(0)
    codebook, rows = torch.tensor([[0.0], [1.0]]), torch.full((500, 1), 0.4)
    samples = sample_codes(rows, codebook, num_samples=40, chunk_rows=64)
    assert max(blocks) == 64 and sum(blocks) == 500
    expected = 1 / (1 + math.exp(-(0.36 - 0.16)))  # p(code 0) = softmax(-[0.16, 0.36])[0]
    assert sample_shares(samples, 2)[:, 0].mean().item() == pytest.approx(expected, abs=0.01)


def test_soft_m_step_hand_case():
    # e = [0, 2] from N = [1, 1], M = [0, 2]; rows z = [1, 3] whose S = 2 samples drew [0, 1] and [1, 1]
    # (weights [[.5, .5], [0, 1]]), g = 0.5: counts = [0.5, 1.5], sums = [0.5, 0.5 + 3]
    # -> N = [0.75, 1.25], M = [0.25, 2.75];
    # Laplace smoothing with eps = 0.1: N~ = (N + 0.1) / (2 + 0.2) * 2 = [0.7727.., 1.2272..].
    quantizer = make_soft(torch.tensor([[0.0], [2.0]]), ema_decay=0.5, ema_epsilon=0.1)
    counts = quantizer._m_step(torch.tensor([[1.0], [3.0]]), torch.tensor([[0, 1], [1, 1]]))
    assert torch.allclose(counts, torch.tensor([0.5, 1.5]))
    assert torch.allclose(quantizer.codebook.ema_cluster_size, torch.tensor([0.75, 1.25]))
    assert torch.allclose(quantizer.codebook.ema_embed_sum, torch.tensor([[0.25], [2.75]]))
    smoothed = torch.tensor([0.85, 1.35]) / 2.2 * 2
    assert torch.allclose(quantizer.codebook.weight.detach(), torch.tensor([[0.25], [2.75]]) / smoothed[:, None])


def test_training_forward_hand_case_with_a_certain_posterior():
    # Codes 20 apart: p(k|z) is one-hot to fp32 precision, so every sample picks the nearest code.
    codebook = torch.tensor([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    rows = torch.tensor([[1.0, 0.0], [19.0, 1.0], [21.0, -1.0]], requires_grad=True)
    quantizer = make_soft(codebook, ema_decay=0.5, commitment_cost=0.25, dead_code_threshold=0.0).train()
    out = quantizer(as_map(rows))
    assert out.indices.flatten().tolist() == [0, 1, 1]
    quantized_rows = out.quantized.reshape(2, 3).t()
    assert torch.allclose(quantized_rows, codebook[[0, 1, 1]])
    squared_error = (1 + 0 + 1 + 1 + 1 + 1) / 6
    assert out.losses["commitment_loss"].item() == pytest.approx(0.25 * squared_error)
    # Straight-through: the decoder's gradient reaches z unchanged.
    weights = torch.randn(3, 2)
    (quantized_rows * weights).sum().backward()
    assert torch.allclose(rows.grad, weights)
    # M-step with g = 0.5: N = [1, 2, 0.5], M_1 = 0.5 * [20, 0] + 0.5 * [40, 0].
    assert torch.allclose(quantizer.codebook.ema_cluster_size, torch.tensor([1.0, 1.5, 0.5]))
    assert torch.allclose(quantizer.codebook.ema_embed_sum[1], torch.tensor([30.0, 0.0]))


def test_statistics_are_summed_over_processes(monkeypatch):
    # Two processes with the same batch: sums double, so a code moves as if it saw twice the data.
    monkeypatch.setattr(softvq_module, "all_reduce_sum_", lambda t: t.mul_(2.0))
    quantizer = make_soft(torch.tensor([[0.0], [2.0]]), ema_decay=0.5, ema_epsilon=0.1)
    quantizer._m_step(torch.tensor([[1.0], [3.0]]), torch.tensor([[0, 1], [1, 1]]))
    assert torch.allclose(quantizer.codebook.ema_cluster_size, torch.tensor([1.0, 2.0]))
    assert torch.allclose(quantizer.codebook.ema_embed_sum, torch.tensor([[0.5], [4.5]]))


def test_eval_forward_is_nearest_code_and_changes_nothing():
    torch.manual_seed(0)
    codebook, rows = torch.randn(8, 3), torch.randn(30, 3)
    quantizer = make_soft(codebook).eval()
    state = {k: v.clone() for k, v in quantizer.state_dict().items()}
    out = quantizer(as_map(rows))
    ids = torch.cdist(rows, codebook).argmin(dim=1)
    assert torch.equal(out.indices.flatten(), ids)
    assert torch.allclose(out.quantized.reshape(3, -1).t(), codebook[ids])
    assert all(torch.equal(v, state[k]) for k, v in quantizer.state_dict().items())


def test_soft_assignments_raise_the_perplexity_of_used_codes():
    # Points between two codes: the mode is always code 0, the samples use both.
    quantizer = make_soft(torch.tensor([[0.0], [1.0]]), temperature=1.0).train()
    out = quantizer(as_map(torch.full((200, 1), 0.4)))
    assert out.stats["perplexity"].item() == pytest.approx(1.0)
    assert out.stats["sample_perplexity"].item() > 1.5


def test_kmeans_init_sets_codes_and_matching_statistics():
    torch.manual_seed(0)
    rows = torch.cat([torch.randn(50, 2), torch.randn(50, 2) + 10])
    quantizer = SoftVQQuantizer(2, 2, kmeans_init=True, ema_decay=0.999)
    quantizer.train().initialize(rows)
    codes = quantizer.codebook.weight.detach()
    assert sorted(codes[:, 0].round().tolist()) == [0.0, 10.0]
    assert torch.allclose(quantizer.codebook.ema_embed_sum / quantizer.codebook.ema_cluster_size[:, None], codes)


def test_codes_whose_soft_count_falls_below_the_threshold_restart_on_batch_rows():
    # Code 2 sits far from every row: after one M-step with g = 0.5 its count N = 0.5 < 1.
    torch.manual_seed(0)
    codebook = torch.tensor([[0.0, 0.0], [10.0, 0.0], [100.0, 100.0]])
    rows = torch.cat([torch.randn(20, 2) * 0.1, torch.randn(20, 2) * 0.1 + torch.tensor([10.0, 0.0])])
    quantizer = make_soft(codebook, ema_decay=0.5, dead_code_threshold=1.0).train()
    out = quantizer(as_map(rows))
    assert out.stats["restarted_codes"].item() == 1
    moved = quantizer.codebook.weight.detach()[2]
    assert torch.cdist(moved[None], rows).min().item() < 1e-5  # on one of the batch's rows
    # Statistics that keep it there: after the M-step N = 0.5 * 1 + 0.5 * [20, 20, 0] = [10.5, 10.5, 0.5],
    # so N_2 = max(sum N / K, threshold) = 21.5 / 3 and M_2 = N_2 e_2.
    assert quantizer.codebook.ema_cluster_size.tolist() == pytest.approx([10.5, 10.5, 21.5 / 3])
    assert torch.allclose(quantizer.codebook.ema_embed_sum[2], moved * 21.5 / 3)
    # The live codes keep their M-step values (near their clusters).
    assert torch.cdist(quantizer.codebook.weight.detach()[:2], codebook[:2]).diagonal().max().item() < 0.5
    # Threshold 0 never restarts.
    quiet = make_soft(codebook, ema_decay=0.5, dead_code_threshold=0.0).train()
    assert quiet(as_map(rows)).stats["restarted_codes"].item() == 0
    assert torch.allclose(quiet.codebook.weight.detach()[2], codebook[2], atol=0.01)  # moved only by Laplace smoothing


def test_class_defaults_and_paper_preset():
    config = SoftVQConfig()
    assert (config.temperature, config.ema_decay, config.dead_code_threshold) == (0.03, 0.95, 1.0)
    quantizer = VQTokenizer.from_config(config).quantizer
    assert (quantizer.temperature, quantizer.ema_decay, quantizer.dead_code_threshold) == (0.03, 0.95, 1.0)
    paper = SoftVQConfig.paper_preset()
    assert (paper.temperature, paper.ema_decay, paper.dead_code_threshold) == (1.0, 0.999, 0.0)
    assert not paper.kmeans_init
    assert (paper.num_samples, paper.commitment_cost) == (10, 0.25)
    assert SoftVQConfig.paper_preset(temperature=0.5).temperature == 0.5


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("num_samples", 0, ValueError),
        ("num_samples", 2.0, TypeError),
        ("ema_decay", 1.0, ValueError),
        ("ema_epsilon", 0.0, ValueError),
        ("temperature", -1.0, ValueError),
        ("commitment_cost", True, TypeError),
        ("dead_code_threshold", -1.0, ValueError),
        ("kmeans_init", "yes", TypeError),
    ],
)
def test_bad_config_values_raise(field, value, error):
    with pytest.raises(error, match=field):
        SoftVQConfig(**{field: value})


def test_registered_model_class():
    assert VQTokenizer.model_class_for("vqtok-softvq") is SoftVQModel
