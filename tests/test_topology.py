"""Differentiable persistent homology (vqtok.regularizers.persistence) on hand-checkable clouds, and the HC-VQ
topology regulariser: eta's schedule, derived targets, gradients, state, precision, bad clouds."""

import math

import pytest
import torch

from example_extensions import ResidualSignConfig

from vqtok import VQConfig, VQTokenizer
from vqtok.quantizers import QuantizerOutput, VectorQuantizer
from vqtok.quantizers.functional import entropy_from_counts
from vqtok.regularizers import RegularizerInputs, TopologyRegularizer
from vqtok.regularizers.topology import distinct_rows
from vqtok.regularizers.persistence import (
    edge_lengths,
    pairwise_distances,
    persistence_bars,
    persistence_signature,
    persistent_entropy,
    save_persistence_diagram,
    soft_count,
)

UNIT_SQUARE = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


def circle(points: int, radius: float = 1.0) -> torch.Tensor:
    angles = torch.arange(points, dtype=torch.float32) * (2 * math.pi / points)
    return radius * torch.stack([angles.cos(), angles.sin()], dim=1)


# --- persistent homology --------------------------------------------------------------------
def test_unit_square_has_three_unit_h0_deaths_and_one_h1_bar_from_1_to_sqrt2():
    bars = persistence_bars(UNIT_SQUARE)
    torch.testing.assert_close(bars.h0_deaths, torch.ones(3))
    torch.testing.assert_close(bars.h1_births, torch.tensor([1.0]))
    torch.testing.assert_close(bars.h1_deaths, torch.tensor([math.sqrt(2)]))
    signature = persistence_signature(bars, width=1e-3)
    assert float(signature.epsilon0) == pytest.approx(1.0)
    assert float(signature.betti1) == pytest.approx(1.0, abs=1e-6)  # persistence 0.41 >> width
    assert float(signature.h0_entropy) == pytest.approx(math.log(3))  # three equal bars


def test_points_on_a_circle_give_one_long_h1_bar():
    points = 24
    bars = persistence_bars(circle(points))
    long_bars = bars.h1_persistence > 0.5
    assert int(long_bars.sum()) == 1
    # Born when neighbours connect (the chord 2 sin(pi/n)); dies near the inscribed triangle's side sqrt(3).
    assert float(bars.h1_births[long_bars]) == pytest.approx(2 * math.sin(math.pi / points), rel=1e-4)
    assert float(bars.h1_deaths[long_bars]) == pytest.approx(math.sqrt(3), abs=0.05)
    torch.testing.assert_close(bars.h0_deaths, torch.full((points - 1,), 2 * math.sin(math.pi / points)))


def test_soft_betti1_counts_bars_much_longer_than_the_width():
    # Hand case: exp(-0/2) = 1, exp(-1/2), exp(-(1000)^2 / 2) = 0.
    lengths = torch.tensor([0.0, 1e-3, 1.0])
    assert float(soft_count(lengths, 1e-3)) == pytest.approx(3 - 1 - math.exp(-0.5), rel=1e-5)
    # A random cloud: every bar much longer than the width counts 1, the rest almost nothing.
    bars = persistence_bars(torch.randn(60, 3, generator=torch.Generator().manual_seed(0)))
    width = 1e-3
    signature = persistence_signature(bars, width)
    long_bars = int((bars.h1_persistence > 5 * width).sum())
    assert long_bars > 3
    assert abs(float(signature.betti1) - long_bars) < 0.5 + int((bars.h1_persistence <= 5 * width).sum())
    assert signature.num_h1_bars == bars.h1_persistence.numel()


def test_persistent_entropy_hand_cases():
    assert float(persistent_entropy(torch.tensor([1.0, 1.0]))) == pytest.approx(math.log(2))
    assert float(persistent_entropy(torch.tensor([2.0, 2.0, 2.0, 2.0]))) == pytest.approx(math.log(4))
    p = torch.tensor([1.0, 3.0]) / 4
    assert float(persistent_entropy(torch.tensor([1.0, 3.0]))) == pytest.approx(float(-(p * p.log()).sum()))
    assert float(persistent_entropy(torch.tensor([]))) == 0.0
    assert float(persistent_entropy(torch.tensor([0.0, 0.0]))) == 0.0


def test_epsilon0_gradient_matches_finite_differences():
    points = torch.randn(12, 3, generator=torch.Generator().manual_seed(3)).double()
    points.requires_grad_(True)
    epsilon0 = persistence_signature(persistence_bars(points)).epsilon0
    (gradient,) = torch.autograd.grad(epsilon0, points)
    step = 1e-3
    for coordinate in [(0, 0), (5, 1), (11, 2)]:
        shifted = []
        for sign in (1, -1):
            moved = points.detach().clone()
            moved[coordinate] += sign * step
            shifted.append(float(persistence_signature(persistence_bars(moved)).epsilon0))
        finite_difference = (shifted[0] - shifted[1]) / (2 * step)
        assert float(gradient[coordinate]) == pytest.approx(finite_difference, rel=1e-2, abs=1e-4), coordinate
    assert float(gradient.abs().sum()) > 0


def test_duplicate_points_and_tiny_clouds_give_finite_values_and_gradients():
    points = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0]], requires_grad=True)
    distances = pairwise_distances(points)
    assert float(distances[0, 1]) == 0.0 and float(distances[0, 2]) == pytest.approx(1.0)
    lengths = edge_lengths(points, torch.tensor([0, 0]), torch.tensor([1, 2]))
    assert torch.autograd.grad(lengths.sum(), points)[0].isfinite().all()
    assert lengths.tolist() == [0.0, 1.0]
    signature = persistence_signature(persistence_bars(points))
    loss = signature.epsilon0 + signature.betti1
    loss.backward()
    assert torch.isfinite(points.grad).all()
    for cloud in (torch.zeros(1, 4), torch.zeros(0, 4), torch.zeros(5, 4)):
        signature = persistence_signature(persistence_bars(cloud))
        assert float(signature.epsilon0) == 0.0 and float(signature.betti1) == 0.0
    with pytest.raises(ValueError, match="NaN or inf"):
        persistence_bars(torch.tensor([[0.0, float("nan")], [1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        persistence_bars(torch.zeros(3))


def test_persistence_diagram_plot_is_written(tmp_path):
    path = save_persistence_diagram(persistence_bars(circle(12)), tmp_path / "diagram.png", title="circle")
    assert (tmp_path / "diagram.png").stat().st_size > 1000 and path.endswith("diagram.png")


# --- the regulariser ------------------------------------------------------------------------
def table_quantizer(codebook: torch.Tensor) -> VectorQuantizer:
    """A quantizer whose code table is `codebook` (learnt by gradient when it requires one)."""
    quantizer = VectorQuantizer(codebook.shape[0], codebook.shape[1], use_ema=not codebook.requires_grad)
    with torch.no_grad():
        quantizer.codebook.weight.copy_(codebook)
    return quantizer


def regularizer_inputs(codebook: torch.Tensor, ids: torch.Tensor, pixels: torch.Tensor) -> RegularizerInputs:
    quantized = codebook[ids].movedim(-1, 1)
    output = QuantizerOutput(quantized=quantized, indices=ids)
    return RegularizerInputs(pixels, quantized, output, pixels, table_quantizer(codebook))


def test_eta_starts_at_zero_and_refreshes_exactly_every_period_from_the_recorded_entropies():
    period, codebook_size = 3, 8
    regularizer = TopologyRegularizer(entropy_period=period, warmup_steps=100).train()
    generator = torch.Generator().manual_seed(0)
    codebook = torch.randn(codebook_size, 2, generator=generator)
    expected_code, expected_input, etas = [], [], []
    for step in range(2 * period):
        ids = torch.randint(0, codebook_size if step % 2 else 3, (2, 4, 4), generator=generator)
        pixels = torch.rand(2, 3, 4, 4, generator=generator) * (2 if step % 3 else 0.5) - 1
        regularizer(regularizer_inputs(codebook, ids, pixels))
        expected_code.append(float(entropy_from_counts(torch.bincount(ids.flatten(), minlength=codebook_size).float())))
        expected_input.append(float(entropy_from_counts(torch.histc(pixels, bins=256, min=-1, max=1))))
        etas.append(float(regularizer.eta))
    assert etas[: period - 1] == [0.0] * (period - 1)
    for end in (period, 2 * period):
        window = slice(end - period, end)
        expected = abs(1 - (sum(expected_code[window]) / period) / (sum(expected_input[window]) / period))
        assert etas[end - 1] == pytest.approx(expected, rel=1e-5)
    assert etas[period : 2 * period - 1] == [etas[period - 1]] * (period - 1)  # unchanged inside a period
    assert etas[period - 1] != etas[2 * period - 1]


def test_eta_is_zero_for_constant_images_instead_of_a_division_by_zero():
    regularizer = TopologyRegularizer(entropy_period=1).train()
    regularizer.input_entropies.fill_(0.0)
    regularizer.code_entropies.fill_(2.0)
    regularizer.refresh_eta()
    assert float(regularizer.eta) == 0.0


def test_targets_are_derived_from_the_cloud_after_warm_up():
    regularizer = TopologyRegularizer(warmup_steps=2, compute_every=1, target_scale=1.5, entropy_period=1).train()
    ids = torch.arange(4).reshape(1, 2, 2)
    pixels = torch.linspace(-1, 1, 48).reshape(1, 3, 4, 4)
    square = UNIT_SQUARE.clone().requires_grad_(True)  # a learnt codebook
    for _ in range(2):
        regularizer(regularizer_inputs(square, ids, pixels))
        assert not bool(regularizer.targets_set)
    regularizer(regularizer_inputs(square, ids, pixels))
    assert bool(regularizer.targets_set)
    assert float(regularizer.epsilon_target) == pytest.approx(1.5)  # eps0 = 1 on the unit square, x 1.5
    assert float(regularizer.betti_target) == pytest.approx(1.0, abs=1e-5)
    fixed = TopologyRegularizer(betti_target=100.0, epsilon_target=0.5)
    assert bool(fixed.targets_set) and float(fixed.betti_target) == 100.0


def test_quantized_cloud_takes_one_vector_per_distinct_code():
    rows = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])
    ids = torch.tensor([7, 3, 7, 3, 5])
    torch.testing.assert_close(distinct_rows(rows, ids), torch.tensor([[1.0], [4.0], [0.0]]))


def topology_model(seed: int = 0, **options) -> VQTokenizer:
    torch.manual_seed(seed)
    settings = {"warmup_steps": 0, "compute_every": 1, "entropy_period": 1, "epsilon_target": 10.0, **options}
    config = VQConfig(
        image_size=16, backbone_config=dict(base_channels=8, downsampling_factor=4), latent_dim=4, codebook_size=16, use_ema=False,
        kmeans_init=False, regularizers={"topology": settings},
    )
    return VQTokenizer.from_config(config).train()


def images(seed: int = 0) -> torch.Tensor:
    return torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_gradient_reaches_the_codebook_when_on_and_nothing_changes_when_off():
    model = topology_model()
    model(images(0))  # first forward: eta refreshes from this batch (period 1)
    output = model(images(1))
    assert float(output.losses["topology_loss"].detach()) > 0
    (gradient,) = torch.autograd.grad(output.losses["topology_loss"], model.quantizer.codebook.weight)
    assert float(gradient.abs().sum()) > 0 and torch.isfinite(gradient).all()

    switched_off = topology_model(enabled=False)
    plain = topology_model()
    plain.config.regularizers = None
    baseline = VQTokenizer.from_config(plain.config).train()
    baseline.load_state_dict({k: v for k, v in switched_off.state_dict().items() if "regularizers" not in k})
    first, second = switched_off(images(1)), baseline(images(1))
    assert "topology_loss" not in first.losses and first.losses.keys() == second.losses.keys()
    torch.testing.assert_close(first.loss, second.loss, rtol=0, atol=0)


def test_state_survives_save_and_load_and_the_next_loss_is_identical(tmp_path):
    model = topology_model()
    for seed in range(3):
        model(images(seed))
    model.save_pretrained(tmp_path)
    loaded = VQTokenizer.from_pretrained(tmp_path).train()
    for name, buffer in model.regularizers.topology.named_buffers():
        assert torch.equal(buffer, loaded.regularizers.topology.get_buffer(name)), name
    assert int(loaded.regularizers.topology.step) == 3 and float(loaded.regularizers.topology.eta) > 0
    torch.testing.assert_close(loaded(images(5)).losses["topology_loss"], model(images(5)).losses["topology_loss"])


def test_term_runs_in_fp32_under_bf16_autocast_and_stays_finite():
    model = topology_model(epsilon_weight=1e4)
    model(images(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(images(1))
    loss = output.losses["topology_loss"]
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and float(loss.detach()) > 0
    output.loss.backward()
    assert torch.isfinite(model.quantizer.codebook.weight.grad).all()


def test_a_collapsed_codebook_gives_a_finite_zero_term():
    model = topology_model(epsilon_target=0.0)
    with torch.no_grad():
        model.quantizer.codebook.weight.zero_()  # every code the same point: no finite bar at all
    model(images(0))
    output = model(images(1))
    assert float(output.losses["topology_loss"].detach()) == 0.0
    output.loss.backward()
    assert torch.isfinite(model.quantizer.codebook.weight.grad).all()


def test_options_are_checked_with_their_names():
    with pytest.raises(ValueError, match="weight"):
        VQConfig(regularizers={"topology": {"weight": float("nan")}})
    with pytest.raises(ValueError, match="point_cloud"):
        VQConfig(regularizers={"topology": {"point_cloud": "latents"}})
    with pytest.raises(ValueError, match="unknown .*`gamma`"):
        VQConfig(regularizers={"topology": {"gamma": 1.0}})
    with pytest.raises(TypeError, match="compute_every"):
        TopologyRegularizer(compute_every=1.5)


# --- diagnosis: metrics, model card, training evaluations ---------------------------------------
def square_codebook_model() -> VQTokenizer:
    config = VQConfig(image_size=16, backbone_config=dict(base_channels=8, downsampling_factor=4), latent_dim=2, codebook_size=4)
    model = VQTokenizer.from_config(config)
    with torch.no_grad():
        model.quantizer.codebook.weight.copy_(UNIT_SQUARE)
    return model


def test_codebook_topology_metric_and_the_model_card_show_the_signature():
    from vqtok import render_model_card
    from vqtok.metrics.evaluation import codebook_topology

    model = square_codebook_model()
    signature = codebook_topology(model)
    assert signature["epsilon0"] == pytest.approx(1.0)
    assert signature["betti1"] == pytest.approx(1.0, abs=1e-5)
    assert signature["h0_persistent_entropy"] == pytest.approx(math.log(3), rel=1e-5)
    assert signature["h1_persistent_entropy"] == 0.0  # one bar
    card = str(render_model_card(model))
    assert "Codebook topology" in card and "| epsilon0 | 1 |" in card and "| betti1 | 1 |" in card
    assert "Codebook topology" not in str(render_model_card(model.config))  # a config has no codebook


def test_training_logs_the_signature_and_draws_the_diagram_at_each_evaluation(tmp_path):
    from test_training import tiny_args, tiny_config, tiny_images

    from vqtok.data import pixel_dataset
    from vqtok.training.trainer import train_tokenizer

    torch.manual_seed(0)
    settings = {"warmup_steps": 1, "compute_every": 1, "entropy_period": 2}
    model = VQTokenizer.from_config(tiny_config(use_ema=False, regularizers={"topology": settings}))
    images = tiny_images(count=16)
    args = tiny_args(tmp_path, max_steps=4, gradient_accumulation_steps=1, eval_every=2, log_every=1)
    train_tokenizer(model, pixel_dataset(images, 16, 3, augment=True), pixel_dataset(images.select(range(4)), 16, 3), args)
    assert (tmp_path / "topology_step2.png").exists() and (tmp_path / "topology_step4.png").exists()
    topology = model.regularizers.topology
    assert int(topology.step) == 4 and float(topology.epsilon0) > 0 and float(topology.eta) > 0


def test_the_quantized_cloud_takes_one_vector_per_distinct_code_tuple_with_several_codes_per_position():
    rows = torch.tensor([[10.0], [11.0], [12.0], [13.0]])
    ids = torch.tensor([[1, 2], [1, 2], [0, 5], [1, 3]])  # R = 2 codes per row
    torch.testing.assert_close(distinct_rows(rows, ids), torch.tensor([[12.0], [10.0], [13.0]]))
    config = ResidualSignConfig(image_size=8, latent_dim=4, backbone_config=dict(base_channels=8, downsampling_factor=2),
                                regularizers={"topology": {"point_cloud": "quantized", "warmup_steps": 0,
                                                           "compute_every": 1, "entropy_period": 1}})
    model = VQTokenizer.from_config(config).train()
    output = model(torch.rand(2, 3, 8, 8) * 2 - 1)
    assert torch.isfinite(output.losses["topology_loss"]) and output.stats["topology_betti1"] >= 0
