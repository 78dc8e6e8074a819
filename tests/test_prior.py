"""The autoregressive prior: its config tied to the tokenizer, a loss that falls far below log K on a
set it can memorise (GPT-2 and Llama), save -> load with identical logits, exact resume of its
training loop, the Hub round trip with its model card, the run config, and bad input."""

import math
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from tiny_data import run_interrupted_after, tiny_prior, tiny_tokenizer
from transformers import AutoModel

import vqtok.training.prior_trainer as prior_trainer
from vqtok import PriorConfig, TokenLayout, TokenPrior, VQConfig
from vqtok.prior import save_prior_card
from vqtok.training import TrainingArguments, load_prior_run_config, train_prior

try:
    from hub_server import USER
except ImportError:  # if tests/ ever becomes a package
    from tests.hub_server import USER

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]
K, GRID = 16, (4, 4)


def random_codes(count: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(K, (count, *GRID), generator=torch.Generator().manual_seed(seed))


def essential(config) -> dict:
    """A prior config as a dict, without what loading adds (the path it came from, the dtype)."""
    values = config.to_dict()
    lm = {k: v for k, v in values.pop("lm_config").items() if k not in ("_name_or_path", "dtype")}
    return {**{k: v for k, v in values.items() if k not in ("_name_or_path", "dtype")}, "lm_config": lm}


def tiny_args(output_dir, **overrides) -> TrainingArguments:
    values = dict(output_dir=str(output_dir), max_steps=10, batch_size=4, learning_rate=3e-3, warmup_steps=2,
                  log_every=5, report_to="none", seed=0, eval_batch_size=16)
    return TrainingArguments(**{**values, **overrides})


def test_config_is_tied_to_the_tokenizer():
    tokenizer_config = VQConfig(image_size=16, codebook_size=K, backbone_config=dict(downsampling_factor=4))
    config = PriorConfig.for_tokenizer(tokenizer_config, hidden_size=32, num_layers=2, num_heads=2, tokenizer_name="me/tok")
    assert (config.codebook_size, config.token_grid, config.tokenizer, config.bos_token_id) == (K, GRID, "me/tok", K)
    lm = config.lm_config
    assert (lm.model_type, lm.vocab_size, lm.n_positions, lm.bos_token_id, lm.eos_token_id) == ("gpt2", K + 1, 17, K, None)
    llama = PriorConfig.for_tokenizer(tokenizer_config, architecture="llama", hidden_size=32, num_heads=2)
    assert (llama.lm_config.model_type, llama.lm_config.max_position_embeddings, llama.lm_config.vocab_size) == ("llama", 17, K + 1)
    # The LM's vocabulary and positions follow K and the grid whatever lm_config said.
    edited = PriorConfig(codebook_size=8, grid_height=2, grid_width=3, lm_config={"model_type": "gpt2", "vocab_size": 50257})
    assert (edited.lm_config.vocab_size, edited.lm_config.n_positions) == (9, 7)
    reloaded = PriorConfig.from_dict(config.to_dict())
    assert reloaded.to_dict() == config.to_dict()


def test_bad_configs_raise_clear_errors():
    layout = TokenLayout(K, *GRID)
    with pytest.raises(ValueError, match=r"`architecture` must be one of \['gpt2', 'llama'\], got 'bert'"):
        PriorConfig.for_tokenizer(layout, architecture="bert")
    with pytest.raises(ValueError, match=r"`hidden_size` \(30\) must be a multiple of `num_heads` \(4\)"):
        PriorConfig.for_tokenizer(layout, hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="`dropout` must lie in"):
        PriorConfig.for_tokenizer(layout, dropout=1.0)
    with pytest.raises(ValueError, match="`codebook_size` must lie in"):
        PriorConfig(codebook_size=1)
    with pytest.raises(ValueError, match="`lm_config` must be one of the architectures"):
        PriorConfig(lm_config={"model_type": "bert"})


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_loss_falls_far_below_log_k_on_a_set_it_can_memorise(architecture, tmp_path):
    prior = tiny_prior(architecture=architecture)
    codes = random_codes(4)
    before = prior.bits_per_token(codes)
    assert before == pytest.approx(math.log2(K), abs=0.5)  # about uniform at initialisation
    train_prior(prior, codes, None, tiny_args(tmp_path, max_steps=150, batch_size=8, learning_rate=1e-2, warmup_steps=10))
    after = prior.bits_per_token(codes)
    # Four random sequences: the first code costs log2(4) = 2 bits at best, the other 15 are determined:
    # 2 / 16 = 0.125 bits per token is the floor, log2 K = 4 the start.
    assert after < 0.5, f"{architecture}: {before:.3f} -> {after:.3f} bits per token"
    loss = prior(input_ids=prior.layout.to_sequences(codes), labels=prior.layout.to_sequences(codes)).loss
    assert loss.item() / math.log(2) == pytest.approx(after, rel=1e-4)


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_save_then_load_gives_identical_logits(architecture, tmp_path):
    prior = tiny_prior(architecture=architecture).eval()
    with torch.no_grad():
        for parameter in prior.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)  # away from the initialisation
    prior.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors", "vqtok_loader.py"]
    saved = load_file(tmp_path / "model.safetensors")
    assert any(name.startswith("lm.") for name in saved)
    inputs = prior.layout.to_sequences(random_codes(3))
    for loaded in (TokenPrior.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert type(loaded) is TokenPrior
        assert essential(loaded.config) == essential(prior.config)
        assert torch.equal(loaded.eval()(input_ids=inputs).logits, prior(input_ids=inputs).logits)


def test_loading_refuses_a_tokenizer_folder(tmp_path):
    tiny_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="model_type 'vqtok-vq', but TokenPrior loads 'vqtok-prior'"):
        TokenPrior.from_pretrained(tmp_path)


def test_resumed_training_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch):
    codes = random_codes(12)
    eval_codes = random_codes(4, seed=1)

    def run(output_dir, init_seed, **overrides):
        prior = tiny_prior(seed=init_seed, dropout=0.1)  # dropout: the RNG state must be resumed too
        results = train_prior(prior, codes, eval_codes, tiny_args(output_dir, gradient_accumulation_steps=2, **overrides))
        return prior, results

    reference, results = run(tmp_path / "straight", 0)
    assert set(results) == {"bits_per_token", "sequences_per_second", "train_seconds", "skipped_steps"}
    interrupted = lambda: run(tmp_path / "resumed", 0, checkpoint_every=3)  # noqa: E731
    run_interrupted_after(6, monkeypatch, interrupted, loop=prior_trainer)
    resumed, _ = run(tmp_path / "resumed", 123, checkpoint_every=3, resume_from_checkpoint="latest")
    expected, got = reference.state_dict(), resumed.state_dict()
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"tensors differ after resume: {different}"


def test_bad_training_input_raises_clear_errors(tmp_path):
    prior = tiny_prior()
    with pytest.raises(ValueError, match=r"train_codes must lie in \[0, 16\) \(K=16\), got values in \[16, 16\]"):
        train_prior(prior, torch.full((2, *GRID), K), None, tiny_args(tmp_path))
    with pytest.raises(ValueError, match=r"eval_codes must have shape \[B, 4, 4\] or \[B, 16\]"):
        train_prior(prior, random_codes(2), torch.zeros(2, 5, 5, dtype=torch.long), tiny_args(tmp_path))


def test_a_prior_whose_k_differs_from_the_tokenizer_is_refused(tmp_path):
    prior = tiny_prior()
    prior.check_tokenizer(VQConfig(image_size=16, codebook_size=K, backbone_config=dict(downsampling_factor=4)))
    with pytest.raises(ValueError, match=r"the prior has K=16 codes on a 4x4 grid, but the tokenizer has K=32 on a 4x4"):
        prior.check_tokenizer(tiny_tokenizer(tmp_path, codebook_size=32))
    with pytest.raises(ValueError, match=r"but the tokenizer has K=16 on a 8x8 grid"):
        prior.check_tokenizer(VQConfig(image_size=32, codebook_size=K, backbone_config=dict(downsampling_factor=4)))


def test_prior_run_config_reads_yaml_and_overrides():
    run = load_prior_run_config(str(REPO / "training" / "configs" / "prior.yaml"),
                                ["model.architecture=llama", "training.max_steps=7", "data.eval_split=null"])
    assert (run.model.architecture, run.training.max_steps, run.data.eval_split) == ("llama", 7, None)
    assert run.data.tokens == "outputs/quickstart/tokens" and run.training.output_dir == "outputs/quickstart/prior"
    with pytest.raises(ValueError, match="`num_layers` must lie in"):
        load_prior_run_config(None, ["model.num_layers=0"])
    with pytest.raises(TypeError, match="`hidden_size` must be int"):
        load_prior_run_config(None, ["model.hidden_size=1.5"])
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['size'\] in section `model`"):
        load_prior_run_config(None, ["model.size=3"])


def test_model_card_and_hub_round_trip(local_hub, tmp_path):
    prior = tiny_prior().eval()
    metrics = {"prior bits/token": 3.5, "histogram bits/token": 8.6}
    repo = f"{USER}/tiny-prior"
    commit = prior.push_to_hub(repo, metrics=metrics, training_data="Four tiny grids.", eval_split="test")
    loaded = TokenPrior.from_pretrained(repo, revision=commit.oid)
    inputs = prior.layout.to_sequences(random_codes(2))
    assert torch.equal(loaded.eval()(input_ids=inputs).logits, prior(input_ids=inputs).logits)
    card = ModelCard.load(repo)
    assert {"vqtok", "autoregressive-prior", "gpt2"} <= set(card.data.tags)
    assert "Four tiny grids." in card.text and "some/tokenizer" in card.text
    result = next(r for r in card.data.eval_results if r.metric_name == "prior bits/token")
    assert result.metric_value == 3.5 and result.task_type == "unconditional-image-generation"
    path = save_prior_card(prior, tmp_path, metrics=metrics)
    assert "| prior bits/token | 3.5 |" in path.read_text()
