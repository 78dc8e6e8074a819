"""Gumbel VQ: straight-through hard Gumbel-softmax, temperature schedule as state, diversity loss,
argmax encode."""

import math

import pytest
import torch

from vqtok import GumbelVQConfig, GumbelVQModel, VQTokenizer
from vqtok.quantizers import GumbelQuantizer, TemperatureSchedule, hard_gumbel_softmax


def as_map(rows):
    """[N, D] rows -> [1, D, N, 1] map, the layout quantizers take."""
    return rows.t().reshape(1, rows.shape[1], rows.shape[0], 1).contiguous()


def test_hard_sample_is_exactly_one_hot_with_the_soft_gradient():
    torch.manual_seed(0)
    logits = torch.randn(64, 10, requires_grad=True)
    y, ids = hard_gumbel_softmax(logits, tau=0.7, generator=torch.Generator().manual_seed(3))
    assert set(y.detach().unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(y.detach().sum(dim=1), torch.ones(64))
    assert torch.equal(y.detach().argmax(dim=1), ids)

    # The same noise, by hand: the gradient of y is that of softmax((logits + g) / tau).
    gumbels = -torch.empty(64, 10).exponential_(generator=torch.Generator().manual_seed(3)).log()
    assert torch.equal(ids, (logits.detach() + gumbels).argmax(dim=1))
    weights = torch.randn(64, 10)
    (y * weights).sum().backward()
    reference = logits.detach().clone().requires_grad_(True)
    (torch.softmax((reference + gumbels) / 0.7, dim=1) * weights).sum().backward()
    assert torch.allclose(logits.grad, reference.grad, atol=1e-6)
    assert logits.grad.abs().sum() > 0


def test_training_forward_hands_the_decoder_exact_code_vectors_and_learns_both_tables():
    torch.manual_seed(0)
    quantizer = GumbelQuantizer(8, 3).train()
    rows = torch.randn(40, 3, requires_grad=True)
    out = quantizer(as_map(rows))
    ids = out.indices.flatten()
    quantized_rows = out.quantized.reshape(3, -1).t()
    assert torch.equal(quantized_rows, quantizer.codebook.weight.detach()[ids])
    quantized_rows.pow(2).sum().backward()
    assert quantizer.to_logits.weight.grad.abs().sum() > 0 and rows.grad.abs().sum() > 0
    unused = torch.ones(8, dtype=torch.bool)
    unused[ids] = False
    assert (quantizer.codebook.weight.grad[unused] == 0).all() and (quantizer.codebook.weight.grad[ids] != 0).any()


def test_encode_is_the_argmax_of_the_logits_without_noise():
    quantizer = GumbelQuantizer(3, 2)
    with torch.no_grad():
        quantizer.to_logits.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        quantizer.to_logits.bias.zero_()
    rows = torch.tensor([[2.0, 1.0], [0.5, 3.0], [-1.0, -2.0]])
    assert quantizer.select(as_map(rows)).flatten().tolist() == [0, 1, 2]
    out = quantizer.eval()(as_map(rows))
    assert out.indices.flatten().tolist() == [0, 1, 2]
    assert torch.equal(out.quantized.reshape(2, 3).t(), quantizer.codebook.weight.detach()[[0, 1, 2]])


def test_temperature_schedule_values():
    schedule = TemperatureSchedule(tau_max=2.0, tau_min=0.5, tau_decay=0.5)
    values = []
    for _ in range(4):
        values.append(schedule.value())
        schedule.advance()
    assert values == [2.0, 1.0, 0.5, 0.5]
    assert schedule.step.dtype == torch.long and int(schedule.step) == 4
    with pytest.raises(ValueError, match="tau_min"):
        TemperatureSchedule(tau_max=1.0, tau_min=2.0, tau_decay=0.5)


def test_tau_follows_the_schedule_per_training_forward_and_resumes():
    torch.manual_seed(0)
    quantizer = GumbelQuantizer(8, 3, tau_max=2.0, tau_min=0.5, tau_decay=0.9).train()
    z = as_map(torch.randn(10, 3))
    taus = [quantizer(z).stats["temperature"].item() for _ in range(5)]
    assert taus == pytest.approx([max(2.0 * 0.9**j, 0.5) for j in range(5)])
    # Eval forwards and encode leave the schedule where it is.
    quantizer.eval()(z)
    quantizer.select(z)
    assert int(quantizer.temperature.step) == 5

    resumed = GumbelQuantizer(8, 3, tau_max=2.0, tau_min=0.5, tau_decay=0.9)
    resumed.load_state_dict(quantizer.state_dict())
    assert resumed.train()(z).stats["temperature"].item() == pytest.approx(2.0 * 0.9**5)
    assert int(resumed.temperature.step) == 6


def test_tokenizer_resumes_the_schedule_from_a_saved_model(tmp_path):
    config = GumbelVQConfig(image_size=8, backbone_config=dict(base_channels=8, downsampling_factor=2), latent_dim=4, codebook_size=16,
                            tau_decay=0.5, tau_min=0.1)
    model = VQTokenizer.from_config(config).train()
    pixels = torch.rand(2, 3, 8, 8) * 2 - 1
    for _ in range(3):
        model(pixels)
    model.save_pretrained(tmp_path)
    loaded = VQTokenizer.from_pretrained(tmp_path).train()
    assert int(loaded.quantizer.temperature.step) == 3
    assert loaded(pixels).stats["temperature"].item() == pytest.approx(2.0 * 0.5**3)


def test_diversity_loss_hand_cases():
    quantizer = GumbelQuantizer(4, 2, diversity_weight=0.1, kmeans_init=False).train()
    rows = torch.randn(16, 2)
    with torch.no_grad():
        quantizer.to_logits.weight.zero_()
        quantizer.to_logits.bias.zero_()
    # Uniform mean softmax: perplexity K, no penalty.
    assert quantizer(as_map(rows)).losses["diversity_loss"].item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        quantizer.to_logits.bias.copy_(torch.tensor([math.log(3.0), 0.0, 0.0, 0.0]))
    # Mean softmax [1/2, 1/6, 1/6, 1/6]: perplexity exp(H), loss 0.1 * (4 - exp(H)) / 4.
    p = torch.tensor([0.5, 1 / 6, 1 / 6, 1 / 6])
    expected = 0.1 * (4 - math.exp(-(p * p.log()).sum().item())) / 4
    out = quantizer(as_map(rows))
    assert out.losses["diversity_loss"].item() == pytest.approx(expected, rel=1e-5)
    out.losses["diversity_loss"].backward()
    assert quantizer.to_logits.bias.grad[0] > 0  # lowering the dominant code's logit helps
    assert "diversity_loss" not in GumbelQuantizer(4, 2, diversity_weight=0.0).train()(as_map(rows)).losses


def test_kmeans_init_puts_codes_on_the_first_batch_with_a_nearest_centre_posterior():
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    rows = centres.repeat_interleave(30, dim=0) + 0.5 * torch.randn(90, 2)
    quantizer = GumbelQuantizer(3, 2).train()
    quantizer(as_map(rows))
    table = quantizer.codebook.weight.detach()
    assert torch.cdist(table, rows).min(dim=1).values.max().item() < 6  # codes are means of the batch's rows
    # logits_k = (||z||^2 - ||z - c_k||^2) / s, s = mean squared distance to the nearest centre.
    distances = torch.cdist(rows, table) ** 2
    s = distances.min(dim=1).values.mean()
    expected = ((rows**2).sum(dim=1, keepdim=True) - distances) / s
    assert torch.allclose(quantizer.logits(rows), expected, rtol=1e-4, atol=1e-3)
    assert torch.equal(quantizer.select(as_map(rows)).flatten(), distances.argmin(dim=1))
    # Only at step 0: later forwards (and a resumed run) keep the trained tables.
    with torch.no_grad():
        quantizer.codebook.weight.add_(1.0)
    before = quantizer.codebook.weight.detach().clone()
    quantizer(as_map(rows))
    assert torch.equal(quantizer.codebook.weight.detach(), before)


def test_without_kmeans_init_the_first_forward_keeps_the_random_tables():
    torch.manual_seed(0)
    quantizer = GumbelQuantizer(8, 3, kmeans_init=False).train()
    state = {k: v.clone() for k, v in quantizer.state_dict().items() if k != "temperature.step"}
    quantizer(as_map(torch.randn(40, 3)))
    assert all(torch.equal(quantizer.state_dict()[k], v) for k, v in state.items())


def test_class_defaults_and_paper_preset():
    config = GumbelVQConfig()
    assert (config.tau_decay, config.diversity_weight, config.kmeans_init, config.quantizer_lr_multiplier) == (
        0.995, 0.03, True, 30.0,
    )
    quantizer = VQTokenizer.from_config(config).quantizer
    assert (quantizer.temperature.tau_decay, quantizer.diversity_weight, quantizer.kmeans_init) == (0.995, 0.03, True)
    paper = GumbelVQConfig.paper_preset()
    assert (paper.tau_max, paper.tau_min, paper.tau_decay) == (2.0, 0.5, 0.999995)
    assert (paper.diversity_weight, paper.kmeans_init, paper.quantizer_lr_multiplier) == (0.0, False, 1.0)


def test_optimizer_gives_the_quantizer_its_own_learning_rate():
    config = GumbelVQConfig(image_size=8, backbone_config=dict(base_channels=8, downsampling_factor=2), latent_dim=4, codebook_size=16,
                            quantizer_lr_multiplier=3.0)
    model = VQTokenizer.from_config(config)
    decayed, not_decayed, quantizer = model.build_optimizer(learning_rate=1e-3, weight_decay=0.1).param_groups
    assert {id(p) for p in quantizer["params"]} == {id(p) for p in model.quantizer.parameters()}
    assert quantizer["lr"] == pytest.approx(3e-3) and quantizer["weight_decay"] == 0.0
    assert decayed["lr"] == not_decayed["lr"] == pytest.approx(1e-3)
    assert (decayed["weight_decay"], not_decayed["weight_decay"]) == (0.1, 0.0)  # biases and norms: no decay
    assert all(p.ndim >= 2 for p in decayed["params"]) and all(p.ndim == 1 for p in not_decayed["params"])
    assert sum(len(group["params"]) for group in (decayed, not_decayed, quantizer)) == len(list(model.parameters()))


def test_logits_stay_fp32_under_bf16_autocast():
    torch.manual_seed(0)
    quantizer = GumbelQuantizer(16, 4)
    z = torch.randn(2, 4, 3, 3)
    expected = quantizer.select(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(quantizer.select(z), expected)
        out = quantizer.train()(z.bfloat16())
    assert out.quantized.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "kwargs, error, field",
    [
        ({"tau_max": 0.0}, ValueError, "tau_max"),
        ({"tau_max": 1.0, "tau_min": 1.5}, ValueError, "tau_min"),
        ({"tau_decay": 0.0}, ValueError, "tau_decay"),
        ({"tau_decay": 1.01}, ValueError, "tau_decay"),
        ({"diversity_weight": -0.1}, ValueError, "diversity_weight"),
        ({"kmeans_init": 1}, TypeError, "kmeans_init"),
        ({"quantizer_lr_multiplier": -1.0}, ValueError, "quantizer_lr_multiplier"),
        ({"tau_max": "2"}, TypeError, "tau_max"),
    ],
)
def test_bad_config_values_raise(kwargs, error, field):
    with pytest.raises(error, match=field):
        GumbelVQConfig(**kwargs)


def test_registered_model_class():
    assert VQTokenizer.model_class_for("vqtok-gumbel") is GumbelVQModel
