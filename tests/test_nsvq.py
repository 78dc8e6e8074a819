"""NSVQ: noise substitution, no noise at eval, codebook gradient through ||x - q||, codebook
replacement; and the tokenizer contract shared by the NSVQ, soft-EM and Gumbel tokenizers
(save -> load keeps ids and state, encode never sees training randomness)."""

import pytest
import torch

import vqtok.quantizers.nsvq as nsvq_module
from vqtok import GumbelVQConfig, NSVQConfig, NSVQModel, SoftVQConfig, VQTokenizer
from vqtok.quantizers import NSVQuantizer

TINY = dict(image_size=8, backbone_config=dict(base_channels=8, downsampling_factor=2), latent_dim=4, codebook_size=16)


def as_map(rows):
    """[N, D] rows -> [1, D, N, 1] map, the layout quantizers take."""
    return rows.t().reshape(1, rows.shape[1], rows.shape[0], 1).contiguous()


def as_rows(z_map):
    """Inverse of `as_map`."""
    return z_map.reshape(z_map.shape[1], -1).t()


def make_nsvq(codebook, **kwargs):
    kwargs.setdefault("kmeans_init", False)
    quantizer = NSVQuantizer(codebook.shape[0], codebook.shape[1], **kwargs)
    with torch.no_grad():
        quantizer.codebook.weight.copy_(codebook)
    return quantizer


def two_clusters(n_per_cluster=64, seed=0):
    """Rows around (0, 0) and (10, 0), and a codebook with one code on each and six far away."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0]]).repeat_interleave(n_per_cluster, dim=0)
    rows = centres + torch.randn(centres.shape, generator=generator)
    far = torch.stack([torch.arange(6.0) + 100.0, torch.full((6,), 100.0)], dim=1)
    return rows, torch.cat([torch.tensor([[0.0, 0.0], [10.0, 0.0]]), far])


# --- noise substitution -------------------------------------------------------------------------
def test_noisy_vector_is_as_far_from_x_as_its_nearest_code():
    torch.manual_seed(0)
    codebook, rows = torch.randn(16, 8), 3 * torch.randn(200, 8)
    quantizer = make_nsvq(codebook).train()
    out = quantizer(as_map(rows))
    noisy = as_rows(out.quantized)
    codes = codebook[out.indices.flatten()]
    assert torch.equal(out.indices.flatten(), torch.cdist(rows, codebook).argmin(dim=1))
    error_norm = (rows - codes).norm(dim=1)
    assert torch.allclose((noisy - rows).norm(dim=1), error_norm, rtol=1e-5, atol=1e-6)
    # The substituted error is random: not the quantization error itself, and new at every forward.
    assert not torch.allclose(noisy, codes, atol=1e-3)
    again = as_rows(quantizer(as_map(rows)).quantized)
    assert not torch.allclose(again, noisy, atol=1e-3)
    assert out.losses == {}


def test_eval_forward_returns_the_nearest_codes_without_noise():
    torch.manual_seed(0)
    codebook, rows = torch.randn(16, 8), torch.randn(50, 8)
    quantizer = make_nsvq(codebook).eval()
    first, second = quantizer(as_map(rows)), quantizer(as_map(rows))
    ids = quantizer.select(as_map(rows)).flatten()
    assert torch.equal(as_rows(first.quantized), codebook[ids])
    assert torch.equal(first.quantized, second.quantized)
    assert torch.equal(quantizer.embed(ids.reshape(1, -1, 1)), first.quantized)
    assert int(quantizer.num_batches) == 0 and not quantizer.code_batch_counts.any()


def test_codebook_gradient_flows_through_the_error_length_hand_case():
    codebook = torch.tensor([[0.0, 0.0], [4.0, 0.0], [50.0, 50.0]])
    rows = torch.tensor([[1.0, 1.0], [-1.0, 2.0], [5.0, -2.0]])
    quantizer = make_nsvq(codebook).train()
    noisy = as_rows(quantizer(as_map(rows)).quantized)
    # sum_n ||x~_n - x_n||^2 = sum_n ||x_n - q_n||^2 whatever the noise: d/dq_k = sum_{n->k} 2 (q_k - x_n).
    ((noisy - rows) ** 2).sum().backward()
    code_0 = [2 * (0 - 1) + 2 * (0 + 1), 2 * (0 - 1) + 2 * (0 - 2)]  # rows 0 and 1
    code_1 = [2 * (4 - 5), 2 * (0 + 2)]  # row 2
    expected = torch.tensor([code_0, code_1, [0.0, 0.0]])
    assert torch.allclose(quantizer.codebook.weight.grad, expected, atol=1e-4)


def test_encoder_side_gets_a_gradient_without_straight_through():
    torch.manual_seed(0)
    quantizer = make_nsvq(torch.randn(8, 3)).train()
    rows = torch.randn(20, 3, requires_grad=True)
    as_rows(quantizer(as_map(rows)).quantized).sum().backward()
    assert rows.grad.abs().sum() > 0 and quantizer.codebook.weight.grad.abs().sum() > 0


# --- codebook replacement -----------------------------------------------------------------------
def test_replacement_revives_codes_that_were_never_chosen():
    torch.manual_seed(0)
    rows, codebook = two_clusters()
    quantizer = make_nsvq(codebook, replace_every=2, replace_fraction=0.5).train()
    for _ in range(2):
        out = quantizer(as_map(rows))
        assert out.stats["replaced_codes"].item() == 0
    assert quantizer.code_batch_counts.tolist() == [2, 2, 0, 0, 0, 0, 0, 0]

    out = quantizer(as_map(rows))  # the third forward starts with a replacement
    assert out.stats["replaced_codes"].item() == 6
    moved = quantizer.codebook.weight.detach()[2:]
    distance_to_live = torch.cdist(moved, codebook[:2]).min(dim=1).values
    assert (distance_to_live > 0).all() and (distance_to_live < 0.5).all()
    # The jitter breaks the ties: copies take part of their source's vectors at once.
    assert out.indices.unique().numel() > 2
    assert (quantizer.code_batch_counts <= 1).all() and int(quantizer.num_batches) == 3


def test_replacement_does_not_touch_codes_used_often_enough():
    rows, codebook = two_clusters()
    quantizer = make_nsvq(codebook, replace_every=1, replace_fraction=1.0).train()
    quantizer(as_map(rows))
    before = quantizer.codebook.weight.detach().clone()
    out = quantizer(as_map(rows))
    assert out.stats["replaced_codes"].item() == 6
    assert torch.equal(quantizer.codebook.weight.detach()[:2], before[:2])


def test_replacement_stops_after_the_configured_batch():
    rows, codebook = two_clusters()
    quantizer = make_nsvq(codebook, replace_every=2, replace_fraction=0.5, stop_replacing_after=3).train()
    replaced = []
    for _ in range(5):
        with torch.no_grad():  # keep far codes unused in every window
            quantizer.codebook.weight[2:] = codebook[2:]
        replaced.append(quantizer(as_map(rows)).stats["replaced_codes"].item())
    assert replaced == [0, 0, 6, 0, 0]  # the replacement due after batch 4 is past the stop


def test_usage_counts_are_summed_over_processes_and_replacements_broadcast(monkeypatch):
    rows, codebook = two_clusters()
    # Another process used every code in its batch: nothing may count as unused here.
    monkeypatch.setattr(nsvq_module, "all_reduce_sum_", lambda t: t.add_(1.0))
    quantizer = make_nsvq(codebook, replace_every=1, replace_fraction=1.0).train()
    quantizer(as_map(rows))
    assert quantizer.code_batch_counts.tolist() == [1.0] * 8
    assert quantizer(as_map(rows)).stats["replaced_codes"].item() == 0

    # Rank 0's replacements overwrite this process's own draw.
    monkeypatch.setattr(nsvq_module, "all_reduce_sum_", lambda t: t)
    monkeypatch.setattr(nsvq_module, "broadcast_", lambda t, src=0: t.fill_(7.0))
    quantizer = make_nsvq(codebook, replace_every=1, replace_fraction=0.5).train()
    quantizer(as_map(rows))
    quantizer(as_map(rows))
    assert (quantizer.codebook.weight.detach()[2:] == 7.0).all()


def test_kmeans_init_puts_codes_on_the_first_batch():
    rows, _ = two_clusters()
    quantizer = NSVQuantizer(4, 2, kmeans_init=True).train()
    quantizer(as_map(rows))
    assert bool(quantizer.codebook.initialized)
    nearest_row = torch.cdist(quantizer.codebook.weight.detach(), rows).min(dim=1).values
    assert (nearest_row < 3).all()


def test_class_defaults_and_paper_preset():
    config = NSVQConfig()
    assert (config.replace_every, config.replace_fraction, config.quantizer_lr_multiplier) == (10, 0.1, 10.0)
    quantizer = VQTokenizer.from_config(config).quantizer
    assert (quantizer.replace_every, quantizer.replace_fraction, quantizer.kmeans_init) == (10, 0.1, True)
    paper = NSVQConfig.paper_preset()
    assert (paper.replace_every, paper.replace_fraction, paper.kmeans_init, paper.quantizer_lr_multiplier) == (
        1000, 0.01, False, 1.0,
    )
    assert NSVQConfig.paper_preset(replace_every=500).replace_every == 500


def test_optimizer_gives_the_codebook_its_own_learning_rate():
    model = VQTokenizer.from_config(NSVQConfig(**TINY, quantizer_lr_multiplier=4.0))
    optimizer = model.build_optimizer(learning_rate=1e-3, weight_decay=0.1)
    decayed, not_decayed, codebook = optimizer.param_groups
    assert codebook["params"] == [model.quantizer.codebook.weight]
    assert codebook["lr"] == pytest.approx(4e-3) and codebook["weight_decay"] == 0.0
    assert decayed["lr"] == pytest.approx(1e-3) and (decayed["weight_decay"], not_decayed["weight_decay"]) == (0.1, 0.0)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(decayed["params"]) + len(not_decayed["params"]) + 1 == len(trainable)


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("replace_every", -1, ValueError),
        ("replace_every", 1.5, TypeError),
        ("replace_fraction", 1.5, ValueError),
        ("replace_fraction", "0.1", TypeError),
        ("stop_replacing_after", -5, ValueError),
        ("replacement_jitter", 0.0, ValueError),
        ("kmeans_init", 1, TypeError),
        ("kmeans_iters", -1, ValueError),
        ("quantizer_lr_multiplier", 0.0, ValueError),
        ("no_such_option", 1, ValueError),
    ],
)
def test_bad_config_values_raise(field, value, error):
    with pytest.raises(error, match=field):
        NSVQConfig(**{field: value})


# --- the tokenizer contract of the three types ------------------------------------------
TOKENIZER_CONFIGS = [
    pytest.param(lambda: NSVQConfig(**TINY, replace_every=2, replace_fraction=0.5), id="nsvq"),
    pytest.param(lambda: SoftVQConfig(**TINY), id="softvq"),
    pytest.param(lambda: GumbelVQConfig(**TINY, tau_decay=0.9), id="gumbel"),
]


def trained_tiny_model(make_config, steps=3):
    """A tiny tokenizer after a few SGD steps, so that every buffer holds training state."""
    torch.manual_seed(0)
    model = VQTokenizer.from_config(make_config()).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    pixels = torch.rand(4, 3, 8, 8) * 2 - 1
    for _ in range(steps):
        model(pixels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, pixels


@pytest.mark.parametrize("make_config", TOKENIZER_CONFIGS)
def test_save_then_load_gives_identical_ids_and_state(make_config, tmp_path):
    model, pixels = trained_tiny_model(make_config)
    model.save_pretrained(tmp_path)
    loaded = VQTokenizer.from_pretrained(tmp_path)
    assert type(loaded) is type(model)
    saved_config, loaded_config = model.config.to_dict(), loaded.config.to_dict()
    assert {k: v for k, v in loaded_config.items() if k != "_name_or_path"} == {
        k: v for k, v in saved_config.items() if k != "_name_or_path"
    }
    saved_state, loaded_state = model.state_dict(), loaded.state_dict()
    assert saved_state.keys() == loaded_state.keys()
    for name, value in saved_state.items():
        assert loaded_state[name].dtype == value.dtype and torch.equal(loaded_state[name], value), name
    assert torch.equal(loaded.encode(pixels), model.encode(pixels))


@pytest.mark.parametrize("make_config", TOKENIZER_CONFIGS)
def test_encode_is_deterministic_in_train_and_eval_mode(make_config):
    model, pixels = trained_tiny_model(make_config, steps=1)
    state = {name: value.clone() for name, value in model.state_dict().items()}
    rng = torch.get_rng_state()
    torch.manual_seed(1)
    in_train = model.encode(pixels)
    torch.manual_seed(2)
    assert torch.equal(model.encode(pixels), in_train)
    assert torch.equal(model.eval().encode(pixels), in_train)
    torch.set_rng_state(rng)
    model.encode(pixels)
    assert torch.equal(torch.get_rng_state(), rng)  # encode draws no random numbers
    assert all(torch.equal(value, state[name]) for name, value in model.state_dict().items())


def test_registered_model_class():
    assert VQTokenizer.model_class_for("vqtok-nsvq") is NSVQModel
