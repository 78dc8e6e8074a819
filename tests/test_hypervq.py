"""HyperVQ: Poincaré-ball projection, hyperbolic MLR logits (checked against geoopt), hyperplane
codebook, straight-through Gumbel training, argmax encode, temperature state, bf16 safety, options."""

import math

import geoopt
import pytest
import torch

from vqtok import HyperVQConfig, HyperVQModel, VQTokenizer
from vqtok.quantizers import HyperVQQuantizer

pytestmark = pytest.mark.usefixtures("one_thread")


def as_map(rows):
    """[N, D] rows -> [1, D, N, 1] map, the layout quantizers take."""
    return rows.t().reshape(1, rows.shape[1], rows.shape[0], 1).contiguous()


def from_map(tensor):
    """Inverse of `as_map` for a [1, D, N, 1] map."""
    return tensor.reshape(tensor.shape[1], -1).t()


@pytest.mark.parametrize("curvature", [0.05, 1.0, 4.0])
def test_points_stay_strictly_inside_the_ball_even_for_inputs_of_norm_1e4(curvature):
    torch.manual_seed(0)
    quantizer = HyperVQQuantizer(8, 16, curvature=curvature)
    directions = torch.randn(32, 16)
    rows = torch.cat([directions / directions.norm(dim=1, keepdim=True) * 1e4, directions * 1e-6, torch.zeros(1, 16)])
    points = quantizer.to_ball(rows)
    assert points.dtype == torch.float32 and torch.isfinite(points).all()
    assert (curvature * points.pow(2).sum(dim=1) < 1).all()
    assert torch.isfinite(quantizer.logits(rows)).all()


@pytest.mark.parametrize("curvature", [1.0, 0.3, 2.0])
def test_logits_are_twice_geoopts_signed_scaled_distance_to_each_code_hyperplane(curvature):
    torch.manual_seed(1)
    quantizer = HyperVQQuantizer(6, 5, curvature=curvature, init_radius_std=0.4)
    rows = torch.randn(20, 5) / curvature**0.5
    logits = quantizer.logits(rows).double()

    ball = geoopt.PoincareBall(c=curvature)
    points = quantizer.to_ball(rows).double()[:, None, :]
    normals = quantizer.normals.detach().double()
    offsets = quantizer.offsets.detach().double()
    on_plane = ball.expmap0(offsets[:, None] * normals / normals.norm(dim=1, keepdim=True))  # q_k

    # geoopt's `scaled` multiplies by the norm of the normal it is given, and only the normal's
    # direction enters the distance; so with a_k itself as the normal the logit is exactly twice it.
    distance = ball.dist2plane(points, on_plane[None], normals[None], signed=True, scaled=True)
    assert torch.allclose(logits, 2 * distance, rtol=1e-4, atol=1e-4)

    # The same logit in the HNN form: the normal transported from the origin to q_k, times the
    # conformal factor at q_k (the transport scales a_k by 2 / lambda(q_k)).
    transported = ball.transp0(on_plane, normals)
    distance = ball.dist2plane(points, on_plane[None], transported[None], signed=True, scaled=True)
    assert torch.allclose(logits, ball.lambda_x(on_plane)[None] * distance, rtol=1e-4, atol=1e-4)


def test_logits_at_the_origin_by_hand():
    # z_h = 0: v_k = (2 ||a_k|| / sqrt(c)) asinh(-sinh(2 sqrt(c) r_k)) = -4 ||a_k|| r_k.
    quantizer = HyperVQQuantizer(3, 2, curvature=0.5)
    with torch.no_grad():
        quantizer.normals.copy_(torch.tensor([[3.0, 4.0], [0.0, -2.0], [1.0, 0.0]]))
        quantizer.offsets.copy_(torch.tensor([0.25, -1.0, 0.0]))
    logits = quantizer.logits(torch.zeros(1, 2))
    assert torch.allclose(logits, torch.tensor([[-5.0, 8.0, 0.0]]), atol=1e-5)


def test_codebook_vectors_are_offsets_along_unit_normals():
    torch.manual_seed(2)
    quantizer = HyperVQQuantizer(5, 3)
    normals, offsets = quantizer.normals.detach(), quantizer.offsets.detach()
    expected = offsets[:, None] * normals / normals.norm(dim=1, keepdim=True)
    assert torch.allclose(quantizer.code_vectors(), expected, atol=1e-7)
    assert torch.allclose(quantizer.code_vectors().norm(dim=1), offsets.abs(), atol=1e-6)
    ids = torch.tensor([[4, 0], [2, 2]])
    assert torch.equal(quantizer.embed(ids), quantizer.code_vectors().detach()[ids].movedim(-1, 1))


def test_init_is_not_degenerate():
    torch.manual_seed(3)
    codebook = HyperVQQuantizer(512, 64).code_vectors().detach()
    assert (codebook.norm(dim=1) > 0).all()
    gaps = torch.cdist(codebook, codebook) + torch.eye(512) * 1e9
    assert gaps.min() > 1e-4


def test_training_forward_hands_the_decoder_exact_code_vectors_with_gradients_to_a_r_and_input():
    torch.manual_seed(4)
    quantizer = HyperVQQuantizer(8, 3, init_radius_std=0.5, diversity_weight=0.0).train()
    rows = torch.randn(40, 3, requires_grad=True)
    out = quantizer(as_map(rows))
    ids = out.indices.flatten()
    quantized_rows = from_map(out.quantized)
    assert torch.equal(quantized_rows, quantizer.code_vectors().detach()[ids])
    assert out.losses == {} and out.loss.item() == 0.0
    (quantized_rows * torch.randn_like(quantized_rows)).sum().backward()
    for name, grad in [("a", quantizer.normals.grad), ("r", quantizer.offsets.grad), ("z", rows.grad)]:
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    assert set(out.stats) >= {"perplexity", "usage", "temperature"}


def test_encode_is_the_noiseless_argmax_of_the_logits_and_deterministic():
    quantizer = HyperVQQuantizer(3, 2)
    with torch.no_grad():
        quantizer.normals.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
        quantizer.offsets.zero_()
    # Hyperplanes through the origin with equal-norm-ish normals: the code most aligned with z wins.
    rows = torch.tensor([[2.0, 0.5], [0.3, 1.0], [-1.0, -0.8]])
    assert quantizer.select(as_map(rows)).flatten().tolist() == [0, 1, 2]

    torch.manual_seed(5)
    quantizer = HyperVQQuantizer(16, 4, init_radius_std=0.3)
    z = torch.randn(2, 4, 3, 3)
    expected = quantizer.logits(z.movedim(1, -1).reshape(-1, 4)).argmax(dim=1).reshape(2, 3, 3)
    for mode in (True, False):
        quantizer.train(mode)
        assert torch.equal(quantizer.select(z), expected) and torch.equal(quantizer.select(z), expected)
    out = quantizer.eval()(z)
    assert torch.equal(out.indices, expected)
    assert int(quantizer.temperature.step) == 0


def test_tau_follows_the_schedule_per_training_forward_and_resumes():
    torch.manual_seed(6)
    quantizer = HyperVQQuantizer(8, 3, tau_max=2.0, tau_min=0.5, tau_decay=0.9).train()
    z = as_map(torch.randn(10, 3))
    taus = [quantizer(z).stats["temperature"].item() for _ in range(5)]
    assert taus == pytest.approx([max(2.0 * 0.9**j, 0.5) for j in range(5)])
    quantizer.eval()(z)
    quantizer.select(z)
    assert int(quantizer.temperature.step) == 5

    resumed = HyperVQQuantizer(8, 3, tau_max=2.0, tau_min=0.5, tau_decay=0.9)
    resumed.load_state_dict(quantizer.state_dict())
    assert resumed.train()(z).stats["temperature"].item() == pytest.approx(2.0 * 0.9**5)


def test_tokenizer_saves_and_restores_the_schedule_step(tmp_path):
    config = HyperVQConfig(image_size=8, backbone_config=dict(base_channels=8, downsampling_factor=2, norm_groups=4), latent_dim=4, codebook_size=16, tau_decay=0.5, tau_min=0.1)
    model = VQTokenizer.from_config(config).train()
    pixels = torch.rand(2, 3, 8, 8) * 2 - 1
    for _ in range(3):
        model(pixels)
    model.save_pretrained(tmp_path)
    loaded = VQTokenizer.from_pretrained(tmp_path).train()
    assert type(loaded) is HyperVQModel and int(loaded.quantizer.temperature.step) == 3
    assert loaded(pixels).stats["temperature"].item() == pytest.approx(2.0 * 0.5**3)


def test_finite_outputs_and_gradients_under_bf16_autocast_with_latents_of_norm_1e4():
    torch.manual_seed(7)
    quantizer = HyperVQQuantizer(16, 8).train()
    directions = torch.randn(2, 8, 3, 3)
    z = (directions / directions.norm(dim=1, keepdim=True) * 1e4).bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = quantizer.select(z.float())
        assert torch.equal(quantizer.select(z), expected)
        out = quantizer(z)
        assert out.quantized.dtype == torch.bfloat16
        (out.quantized.float() * torch.randn(out.quantized.shape)).sum().backward()
    assert torch.isfinite(out.quantized).all()
    assert all(torch.isfinite(value).all() for value in out.stats.values())
    for grad in (quantizer.normals.grad, quantizer.offsets.grad, z.grad):
        assert grad is not None and torch.isfinite(grad).all()


def test_hyperbolic_maths_runs_in_fp32_for_a_bf16_quantizer():
    torch.manual_seed(8)
    quantizer = HyperVQQuantizer(16, 4).to(torch.bfloat16)
    rows = torch.randn(10, 4)
    assert quantizer.logits(rows).dtype == torch.float32 and quantizer.code_vectors().dtype == torch.float32
    assert quantizer.select(as_map(rows).bfloat16()).dtype == torch.long


@pytest.mark.parametrize(
    "kwargs, error, field",
    [
        ({"curvature": 0.0}, ValueError, "curvature"),
        ({"curvature": -1.0}, ValueError, "curvature"),
        ({"curvature": math.nan}, ValueError, "curvature"),
        ({"curvature": math.inf}, ValueError, "curvature"),
        ({"curvature": "1"}, TypeError, "curvature"),
        ({"diversity_weight": -0.1}, ValueError, "diversity_weight"),
        ({"kmeans_init": 1}, TypeError, "kmeans_init"),
        ({"init_radius_std": 0.0}, ValueError, "init_radius_std"),
        ({"init_radius_std": math.nan}, ValueError, "init_radius_std"),
        ({"tau_max": 1.0, "tau_min": 1.5}, ValueError, "tau_min"),
        ({"tau_decay": 0.0}, ValueError, "tau_decay"),
    ],
)
def test_bad_options_raise_errors_naming_them(kwargs, error, field):
    with pytest.raises(error, match=field):
        HyperVQConfig(**kwargs)
    with pytest.raises(error, match=field):
        HyperVQQuantizer(8, 4, **kwargs)


def test_kmeans_init_puts_the_bisector_hyperplanes_on_the_first_batch():
    # A first batch of four points (so k-means has one centre per point) and a nearly flat ball: the
    # hyperplanes become the bisectors of the origin and the points, and the argmax is the nearest one.
    torch.manual_seed(9)
    centres = torch.tensor([[3.0, 0.0], [0.0, 3.0], [-3.0, 0.0], [0.0, -3.0]])
    rows = centres.repeat_interleave(25, dim=0) + 0.05 * torch.randn(100, 2)
    quantizer = HyperVQQuantizer(4, 2, curvature=1e-4).train()
    quantizer(as_map(centres))
    assert bool(quantizer.initialized)
    found = quantizer.code_vectors().detach() * 2  # C_k = u_k / 2
    order = torch.cdist(centres, found).argmin(dim=1)
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    assert torch.allclose(found[order], centres, atol=1e-3)
    unit = quantizer.normals.detach() / quantizer.normals.detach().norm(dim=1, keepdim=True)
    assert torch.allclose(unit[order], centres / 3, atol=1e-4)
    assert torch.allclose(quantizer.offsets.detach()[order], torch.full((4,), 1.5), atol=1e-3)
    assert torch.equal(quantizer.select(as_map(rows)).flatten(), order.repeat_interleave(25))

    # Later batches, eval forwards and checkpoints leave the placement alone.
    state = {name: tensor.clone() for name, tensor in quantizer.state_dict().items()}
    quantizer.eval()(as_map(rows * 2))
    assert all(torch.equal(state[name], tensor) for name, tensor in quantizer.state_dict().items())
    before = quantizer.normals.detach().clone()
    quantizer.train()(as_map(rows * 2))
    assert torch.equal(quantizer.normals.detach(), before)

    untouched = HyperVQQuantizer(4, 2, kmeans_init=False).train()
    random_init = untouched.normals.detach().clone()
    untouched(as_map(rows))
    assert torch.equal(untouched.normals.detach(), random_init) and not bool(untouched.initialized)


def test_diversity_loss_hand_cases():
    quantizer = HyperVQQuantizer(4, 2, diversity_weight=0.1, kmeans_init=False).train()
    rows = torch.randn(16, 2)
    with torch.no_grad():
        quantizer.offsets.zero_()
        quantizer.normals.copy_(torch.eye(2).repeat(2, 1))
    # At z_h = 0 every logit is -4 ||a_k|| r_k = 0: uniform mean softmax, no penalty.
    zeros = torch.zeros(16, 2)
    assert quantizer(as_map(zeros)).losses["diversity_loss"].item() == pytest.approx(0.0, abs=1e-6)
    out = quantizer(as_map(rows))
    p = torch.softmax(quantizer.logits(rows), dim=1).mean(dim=0)
    expected = 0.1 * (4 - torch.exp(-(p * p.log()).sum())) / 4
    assert out.losses["diversity_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    out.losses["diversity_loss"].backward()
    assert quantizer.normals.grad.abs().sum() > 0
    assert "diversity_loss" not in HyperVQQuantizer(4, 2, diversity_weight=0.0).train()(as_map(rows)).losses


def test_optimizer_gives_the_hyperplanes_their_own_learning_rate():
    config = HyperVQConfig(image_size=8, backbone_config=dict(base_channels=8, downsampling_factor=2, norm_groups=4), latent_dim=4, codebook_size=8, quantizer_lr_multiplier=5.0)
    model = VQTokenizer.from_config(config)
    optimizer = model.build_optimizer(learning_rate=1e-3, weight_decay=0.1)
    decayed, not_decayed, hyperplanes = optimizer.param_groups
    assert {id(p) for p in hyperplanes["params"]} == {id(model.quantizer.normals), id(model.quantizer.offsets)}
    assert hyperplanes["lr"] == pytest.approx(5e-3) and hyperplanes["weight_decay"] == 0.0
    assert decayed["lr"] == pytest.approx(1e-3) and (decayed["weight_decay"], not_decayed["weight_decay"]) == (0.1, 0.0)
    assert len(decayed["params"]) + len(not_decayed["params"]) + 2 == len([p for p in model.parameters() if p.requires_grad])
    with pytest.raises(ValueError, match="quantizer_lr_multiplier"):
        HyperVQConfig(quantizer_lr_multiplier=0.0)


def test_config_defaults_match_the_quantizer_and_the_paper_preset():
    config = HyperVQConfig()
    quantizer = VQTokenizer.from_config(HyperVQConfig(image_size=8, backbone_config=dict(base_channels=8, downsampling_factor=2, norm_groups=4), latent_dim=4, codebook_size=8)).quantizer
    reference = HyperVQQuantizer(8, 4)
    assert isinstance(quantizer, HyperVQQuantizer)
    for name in ("curvature", "init_radius_std", "diversity_weight", "kmeans_init", "kmeans_iters"):
        assert getattr(quantizer, name) == getattr(config, name) == getattr(reference, name), name
    for name in ("tau_max", "tau_min", "tau_decay"):
        assert getattr(quantizer.temperature, name) == getattr(config, name) == getattr(reference.temperature, name)
    preset = HyperVQConfig.paper_preset(image_size=16)
    assert (preset.codebook_size, preset.latent_dim, preset.curvature) == (512, 64, 1.0)
    assert (preset.tau_max, preset.tau_min, preset.tau_decay) == (2.0, 0.5, 0.999995)
    assert (preset.diversity_weight, preset.kmeans_init, preset.quantizer_lr_multiplier) == (0.0, False, 1.0)
    assert preset.image_size == 16 and HyperVQConfig.paper_preset(curvature=0.5).curvature == 0.5
    assert VQTokenizer.model_class_for("vqtok-hypervq") is HyperVQModel
    assert "2403.13015" in HyperVQConfig.reference.bibtex and "2006.08210" in HyperVQConfig.reference.bibtex
