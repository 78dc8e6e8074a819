"""von Mises-Fisher SQ-VAE: kappa self-anneals on a small fit, unit norms, the distortion on a hand
case, the vMF log-normaliser against scipy, the categorical vMF likelihood and a categorical
tokenizer that fits label maps."""

import numpy as np
import pytest
import torch
from scipy import special
from test_sqvae import ANNEALING_FIT, TINY, as_map, small_fit

from vqtok import VMFSQVAEConfig, VQTokenizer
from vqtok.losses.likelihoods import log_bessel_iv, vmf_categorical_nll, vmf_log_normalizer
from vqtok.quantizers import VMFSQVAEQuantizer


@pytest.mark.usefixtures("one_thread")
def test_vmf_kappa_rises_on_a_small_fit():
    _, trace = small_fit(VMFSQVAEConfig.paper_preset(**TINY, **ANNEALING_FIT), steps=60)
    kappas = [step["kappa"] for step in trace][::10] + [trace[-1]["kappa"]]
    assert kappas[-1] > 1.1 * kappas[0]
    assert all(later > earlier for earlier, later in zip(kappas[1:], kappas[2:]))


def test_vmf_latents_and_codes_have_unit_norm():
    torch.manual_seed(0)
    quantizer = VMFSQVAEQuantizer(6, 4, kappa_init=3.0)
    rows = torch.randn(10, 4) * 7
    latents, logits, _ = quantizer._posterior(rows, 1)
    assert torch.allclose(latents.norm(dim=1), torch.ones(10), atol=1e-6)
    assert torch.allclose(quantizer.code_vectors().norm(dim=1), torch.ones(6), atol=1e-6)
    assert quantizer.kappa.item() == pytest.approx(3.0)
    assert torch.allclose(logits, 3.0 * latents @ quantizer.code_vectors().t(), atol=1e-5)
    eval_rows = quantizer.eval()(as_map(rows)).quantized.reshape(4, -1).t()
    assert torch.allclose(eval_rows.norm(dim=1), torch.ones(10), atol=1e-6)
    train_rows = quantizer.train()(as_map(rows)).quantized.reshape(4, -1).t()
    assert (train_rows.norm(dim=1) <= 1 + 1e-6).all()


def test_vmf_distortion_on_a_hand_case():
    # kappa = 2, latent e_1, eval picks the code e_1 itself: R = 0; with the only code e_2, R = 2 * (1 - 0).
    quantizer = VMFSQVAEQuantizer(2, 2, kappa_init=2.0).eval()
    with torch.no_grad():
        quantizer.codebook.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
    assert quantizer(as_map(torch.tensor([[5.0, 0.0]]))).losses["distortion_loss"].item() == pytest.approx(0.0)
    with torch.no_grad():
        quantizer.codebook.weight.copy_(torch.tensor([[0.0, 1.0], [0.0, 3.0]]))
    assert quantizer(as_map(torch.tensor([[5.0, 0.0]]))).losses["distortion_loss"].item() == pytest.approx(2.0)



@pytest.mark.parametrize("dim", [2, 3, 19, 64])
def test_vmf_log_normalizer_matches_scipy(dim):
    kappas = np.array([0.05, 1.0, 10.0, 29.5, 31.0, 100.0, 5000.0])
    order = dim / 2 - 1
    expected = order * np.log(kappas) - dim / 2 * np.log(2 * np.pi) - (np.log(special.ive(order, kappas)) + kappas)
    ours = vmf_log_normalizer(torch.tensor(kappas), dim).numpy()
    assert np.allclose(ours, expected, rtol=1e-9, atol=1e-9)


def test_log_bessel_gradient_is_the_bessel_ratio():
    x = torch.tensor([0.3, 5.0, 29.0, 45.0, 800.0], dtype=torch.float64, requires_grad=True)
    log_bessel_iv(2.5, x).sum().backward()
    values = x.detach().numpy()
    ratio = (special.ive(1.5, values) + special.ive(3.5, values)) / (2 * special.ive(2.5, values))  # I'/I, overflow-free
    assert np.allclose(x.grad.numpy(), ratio, rtol=1e-8)


def test_vmf_categorical_likelihood_on_a_hand_case():
    # Two categories, one pixel, decoder output pointing exactly at the label: NLL = -(kappa + log C_2(kappa)).
    output = torch.tensor([[[[0.0]], [[4.0]]]])
    kappa = torch.tensor(3.0)
    nll = vmf_categorical_nll(output, torch.tensor([[[1]]]), kappa.log())
    assert nll.item() == pytest.approx(-(3.0 + vmf_log_normalizer(kappa, 2).item()), abs=1e-6)



@pytest.mark.usefixtures("one_thread")
def test_categorical_vmf_tokenizer_fits_label_maps_and_decodes_grey_levels():
    config = VMFSQVAEConfig(**{**TINY, "in_channels": 1}, reconstruction_objective="vmf", num_categories=3)
    torch.manual_seed(0)
    labels = torch.randint(0, 3, (16, 8, 8), generator=torch.Generator().manual_seed(2))
    labels[:, :4] = 0  # some structure to learn
    images = (labels.float() / 127.5 - 1.0).unsqueeze(1)
    model = VQTokenizer.from_config(config).train()
    assert model.decoder(torch.zeros(1, 4, 4, 4)).shape[1] == 3
    optimizer = model.build_optimizer(learning_rate=1e-2)
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        out = model(images)
        out.loss.backward()
        optimizer.step()
        losses.append(out.losses["reconstruction_loss"].item())
    assert losses[-1] < losses[0]
    decoded = model.eval().decode(model.encode(images))
    grey = torch.round((decoded + 1) * 127.5)
    assert decoded.shape == images.shape and set(grey.unique().tolist()) <= {0.0, 1.0, 2.0}
    assert (grey[:, 0, :4] == 0).float().mean() > 0.9
    with pytest.raises(ValueError, match="grey level 200"):
        model(torch.full((1, 1, 8, 8), 200 / 127.5 - 1))


@pytest.mark.parametrize("started", [False, True], ids=["first-batch", "started"])
def test_out_of_range_grey_levels_are_refused_before_any_state_changes(started):
    config = VMFSQVAEConfig(**{**TINY, "in_channels": 1}, reconstruction_objective="vmf", num_categories=3)
    model = VQTokenizer.from_config(config).train()
    if started:
        model(torch.randint(0, 3, (4, 1, 8, 8)).float() / 127.5 - 1.0)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    images = torch.randint(0, 3, (4, 1, 8, 8)).float()
    images[2, 0, 5, 1] = 7  # one pixel of grey level 7 in a batch that is otherwise fine
    for run in (model, model.encode):
        with pytest.raises(ValueError, match="grey levels 0..2 .*grey level 7"):
            run(images / 127.5 - 1.0)
    for name, tensor in model.state_dict().items():  # codebook, initialisation, usage, temperature step
        assert torch.equal(before[name], tensor), f"{name} changed"


def test_config_checks():
    with pytest.raises(ValueError, match="kappa_init"):
        VMFSQVAEConfig(kappa_init=1.0)
    with pytest.raises(ValueError, match="num_categories"):
        VMFSQVAEConfig(reconstruction_objective="vmf")
    with pytest.raises(ValueError, match="in_channels=1"):
        VMFSQVAEConfig(reconstruction_objective="vmf", num_categories=4)
    with pytest.raises(ValueError, match="only used with"):
        VMFSQVAEConfig(num_categories=4)


def test_paper_preset_gives_the_reference_settings():
    assert VMFSQVAEConfig.paper_preset().kappa_init == 1.05
