"""A non-finite value in a training batch never reaches any training state.

- every registered type (and the HC-VQ regulariser) leaves every parameter and buffer bit for bit as
  it was when the encoder output holds an inf or a NaN, also before its first-batch (k-means)
  initialisation; the output's losses are NaN and flag the skipped update;
- standalone quantizers do the same (the EMA codebook, soft EM's sampling);
- the training loop skips such a step (no optimizer or scheduler step), counts and warns, goes on
  with finite weights, and stops with an error after `max_consecutive_skipped_steps` in a row;
- the skipped step costs no more than the step: the run equals one whose bad batch had no effect.

Several processes agreeing to skip is tested in tests/test_distributed.py.
"""

import math

import pytest
import torch
from accelerate.utils import set_seed
from test_contract import TYPES, assert_same_state, images, snapshot, tiny_tokenizer
from test_training import tiny_args, tiny_config
from tiny_data import tiny_images

from vqtok import VQTokenizer
from vqtok.data import pixel_dataset
from vqtok.quantizers import SoftVQQuantizer, VectorQuantizer, sampled_code_vectors
from vqtok.quantizers.base import LARGEST_SQUARED_NORM, usable_positions
from vqtok.training import train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
BAD_VALUES = {"inf": math.inf, "nan": math.nan, "-inf": -math.inf}
TOPOLOGY = {"warmup_steps": 0, "compute_every": 1, "entropy_period": 2}


def poison_encoder(model, value: float, when=lambda: True):
    """Make the encoder output hold `value` at one position whenever `when()` says so."""

    def hook(module, inputs, output):
        if not when():
            return output
        output = output.clone()
        output[0, 0, 0, 0] = value
        return output

    return model.encoder.register_forward_hook(hook)


@pytest.mark.filterwarnings("ignore:the topology regulariser's codebook cloud takes no gradient")
@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
@pytest.mark.parametrize("model_type", TYPES)
def test_a_non_finite_latent_changes_no_state_of_any_type(model_type, bad):
    model = tiny_tokenizer(model_type, regularizers={"topology": TOPOLOGY}).train()
    model(images(8, seed=1))  # initialised, schedules and statistics moved once
    before = snapshot(model)
    poison_encoder(model, BAD_VALUES[bad])
    output = model(images(8, seed=2))
    assert_same_state(before, model)
    assert not torch.isfinite(output.loss)
    assert "topology_loss" not in output.losses  # the regulariser sat this batch out
    for name, tensor in model.state_dict().items():
        assert not tensor.is_floating_point() or torch.isfinite(tensor).all(), f"{name} is not finite"


@pytest.mark.parametrize("model_type", TYPES)
def test_a_non_finite_first_batch_leaves_the_codebook_uninitialised(model_type):
    model = tiny_tokenizer(model_type).train()
    before = snapshot(model)
    hook = poison_encoder(model, math.nan)
    model(images(8, seed=1))
    assert_same_state(before, model)
    hook.remove()
    fresh = tiny_tokenizer(model_type).train()
    for tokenizer in (model, fresh):  # the next finite batch initialises as a first batch would
        torch.manual_seed(7)
        tokenizer(images(8, seed=1))
    assert torch.equal(sampled_code_vectors(fresh.quantizer, None), sampled_code_vectors(model.quantizer, None))


def test_the_ema_codebook_keeps_its_statistics_and_says_so():
    torch.manual_seed(0)
    quantizer = VectorQuantizer(16, 4, kmeans_init=False, ema_decay=0.9).train()
    latents = torch.randn(2, 4, 3, 3)
    quantizer(latents)
    before = {name: tensor.clone() for name, tensor in quantizer.state_dict().items()}
    latents[1, 2, 0, 1] = math.inf
    output = quantizer(latents)
    assert output.skipped_update
    for name, tensor in quantizer.state_dict().items():
        assert torch.equal(before[name], tensor), name
    assert torch.isnan(output.loss)
    # Not finite exactly at the positions (whole latent vectors) where the input was not, codes elsewhere.
    finite_positions = torch.isfinite(latents).all(dim=1, keepdim=True).expand_as(latents)
    assert torch.equal(torch.isfinite(output.quantized), finite_positions)
    assert finite_positions.sum() == latents.numel() - 4
    assert not quantizer(latents.nan_to_num(posinf=0.0)).skipped_update


def test_softvq_sampling_does_not_crash_on_a_nan_latent():
    torch.manual_seed(0)
    quantizer = SoftVQQuantizer(16, 4).train()
    latents = torch.randn(2, 4, 3, 3)
    quantizer(latents)
    before = {name: tensor.clone() for name, tensor in quantizer.state_dict().items()}
    latents[0, 0, 0, 0] = math.nan
    output = quantizer(latents)  # a bare multinomial on NaN probabilities raises
    assert output.skipped_update and torch.isnan(output.loss)
    assert all(torch.equal(before[name], tensor) for name, tensor in quantizer.state_dict().items())


def test_eval_mode_passes_non_finite_latents_through_without_a_collective():
    quantizer = VectorQuantizer(16, 4, kmeans_init=False).eval()
    latents = torch.randn(1, 4, 2, 2)
    latents[0, 0, 0, 0] = math.nan
    assert not quantizer(latents).skipped_update


def _run(tmp_path, name: str, poisoned_steps=(), **overrides):
    """Train the tiny VQ tokenizer for 8 steps of one micro-batch, the encoder output poisoned in
    the forwards of `poisoned_steps` (1-based)."""
    set_seed(0)
    model = VQTokenizer.from_config(tiny_config(dead_code_threshold=0.0))
    forwards = []

    def poisoned():
        forwards.append(None)
        return len(forwards) in poisoned_steps

    poison_encoder(model, math.inf, poisoned)
    settings = dict(max_steps=8, gradient_accumulation_steps=1, lr_scheduler="constant", warmup_steps=0)
    args = tiny_args(tmp_path / name, **{**settings, **overrides})
    results = train_tokenizer(model, pixel_dataset(tiny_images(), 16, 3, augment=False), None, args)
    return model, results


def test_the_loop_skips_warns_counts_and_ends_with_finite_weights(tmp_path):
    with pytest.warns(RuntimeWarning, match="step 3 skipped: the loss or the gradients were not finite"):
        model, results = _run(tmp_path, "poisoned", poisoned_steps=(3,))
    assert results["skipped_steps"] == 1
    for name, tensor in model.state_dict().items():
        assert not tensor.is_floating_point() or torch.isfinite(tensor).all(), f"{name} is not finite"


def test_a_skipped_step_leaves_the_model_exactly_as_the_last_good_step_left_it(tmp_path):
    """Two steps, the second poisoned: the result equals a one-step run."""
    one_step, _ = _run(tmp_path, "one", max_steps=1)
    with pytest.warns(RuntimeWarning, match="step 2 skipped"):
        skipped, results = _run(tmp_path, "two", poisoned_steps=(2,), max_steps=2)
    assert results["skipped_steps"] == 1
    assert_same_state(snapshot(one_step), skipped)


def test_too_many_skipped_steps_in_a_row_stop_the_run(tmp_path):
    with pytest.warns(RuntimeWarning, match="skipped"), pytest.raises(FloatingPointError, match="3 skipped steps in a row"):
        _run(tmp_path, "hopeless", poisoned_steps=(2, 3, 4, 5), max_consecutive_skipped_steps=3)


def test_a_good_step_resets_the_run_of_skips(tmp_path):
    with pytest.warns(RuntimeWarning):
        _, results = _run(tmp_path, "intermittent", poisoned_steps=(2, 3, 5, 6), max_consecutive_skipped_steps=3)
    assert results["skipped_steps"] == 4



def _latents(quantizer, magnitude: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(2, quantizer.dim, 4, 4, generator=generator) * magnitude).requires_grad_()


@pytest.mark.filterwarnings("ignore:the topology regulariser's codebook cloud takes no gradient")
@pytest.mark.parametrize("started", [False, True], ids=["first-batch", "started"])
@pytest.mark.parametrize("model_type", TYPES)
def test_latents_too_large_for_fp32_maths_are_flagged_and_change_no_state(model_type, started):
    """Finite latents of magnitude 1e20 under bf16 autocast: their squares overflow fp32, so the batch
    counts as not finite (before the k-means start too), and backward still runs."""
    quantizer = tiny_tokenizer(model_type).quantizer.train()
    if started:
        quantizer(_latents(quantizer, 1.0, seed=0))
    before = {name: tensor.clone() for name, tensor in quantizer.state_dict().items()}
    latents = _latents(quantizer, 1e20, seed=1)
    assert torch.isfinite(latents).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = quantizer(latents)
    (output.loss + output.quantized.float().sum()).backward()
    assert output.skipped_update
    assert all(torch.isnan(value) for value in output.losses.values())  # FSQ, LFQ, ... may have none
    assert not torch.isfinite(output.quantized).any()
    for name, tensor in quantizer.state_dict().items():
        assert torch.equal(before[name], tensor), f"{name} changed"


@pytest.mark.filterwarnings("ignore:the topology regulariser's codebook cloud takes no gradient")
@pytest.mark.parametrize("model_type", TYPES)
def test_large_latents_within_the_bound_train_with_finite_outputs_state_and_gradients(model_type):
    quantizer = tiny_tokenizer(model_type).quantizer.train()
    for seed, magnitude in enumerate((1e10, 1e13)):  # squared norms far below 2^96
        latents = _latents(quantizer, magnitude, seed)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output = quantizer(latents)
        (output.loss + output.quantized.float().sum()).backward()
        assert not output.skipped_update
        assert torch.isfinite(output.loss) and torch.isfinite(output.quantized).all()
        assert torch.isfinite(latents.grad).all()
        for name, tensor in quantizer.state_dict().items():
            assert not tensor.is_floating_point() or torch.isfinite(tensor).all(), f"{name} is not finite"


def test_the_bound_on_a_latent_vectors_squared_norm():
    limit = LARGEST_SQUARED_NORM
    latents = torch.tensor([[limit**0.5, 0.0], [limit**0.5 * 1.001, 0.0], [1.0, math.inf]]).T.reshape(1, 2, 3)
    assert usable_positions(latents).tolist() == [[True, False, False]]
    # In fp32: a vector of two entries of 1.5e19 is finite but its squared norm is not.
    assert usable_positions(torch.full((1, 2, 1), 1.5e19)).tolist() == [[False]]
