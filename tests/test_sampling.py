"""Sampling: the histogram and uniform schemes match their distributions (chi-square at a fixed seed),
the prior samples through `generate` with BOS suppressed, every sampled id is in range and decodes,
temperature / top-k / top-p / seed behave, bad input raises, and the three command-line scripts run
image -> tokens -> prior -> samples end to end."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import chisquare
from tiny_data import tiny_images, tiny_prior, tiny_tokenizer

from vqtok import (
    TokenPrior,
    VQConfig,
    VQModel,
    code_counts,
    decode_samples,
    histogram_bits_per_token,
    sample_from_histogram,
    sample_uniform,
)

pytestmark = pytest.mark.usefixtures("one_thread")
REPO = Path(__file__).resolve().parents[1]
K, GRID = 16, (4, 4)


def test_histogram_sampling_matches_the_code_frequencies():
    counts = torch.tensor([40, 0, 10, 5, 25, 0, 1, 19, 30, 2, 8, 0, 12, 3, 50, 15])
    codes = sample_from_histogram(counts, GRID, num_samples=400, seed=0)
    assert codes.shape == (400, *GRID) and codes.dtype == torch.long
    observed = code_counts(codes, K).numpy()
    assert observed[counts.numpy() == 0].sum() == 0, "a code never seen was drawn"
    seen = counts.numpy() > 0
    expected = counts.numpy()[seen] / counts.sum().item() * codes.numel()
    assert chisquare(observed[seen], expected).pvalue > 0.01
    # The test has power: the same draws are far from uniform over the seen codes.
    uniform = np.full(seen.sum(), codes.numel() / seen.sum())
    assert chisquare(observed[seen], uniform).pvalue < 1e-6
    assert torch.equal(codes, sample_from_histogram(counts, GRID, 400, seed=0))
    assert not torch.equal(codes, sample_from_histogram(counts, GRID, 400, seed=1))


def test_histogram_code_lengths_by_hand():
    bits = histogram_bits_per_token(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 3]), codebook_size=4)
    assert bits["histogram_entropy_bits"] == pytest.approx(1.0)  # two codes, equally often
    # Add-1/2 smoothing over K = 4: p(0) = 2.5 / 6, p(3) = 0.5 / 6.
    assert bits["histogram_held_out_bits"] == pytest.approx(-(math.log2(2.5 / 6) + math.log2(0.5 / 6)) / 2)


def test_uniform_sampling_is_uniform_over_the_k_codes():
    codes = sample_uniform(K, GRID, num_samples=300, seed=0)
    observed = code_counts(codes, K).numpy()
    assert chisquare(observed, np.full(K, codes.numel() / K)).pvalue > 0.01
    assert int(codes.min()) == 0 and int(codes.max()) == K - 1


def test_prior_samples_are_in_range_never_bos_and_decode():
    tokenizer = VQModel(VQConfig(image_size=16, backbone_config=dict(base_channels=8), latent_dim=8, codebook_size=K)).eval()
    prior = tiny_prior(tie_word_embeddings=False).eval()  # the BOS row of the head is edited below, not the embedding
    prior.check_tokenizer(tokenizer)
    # Make BOS by far the most likely next id at every position: without suppression `generate`
    # would emit it almost always.
    with torch.no_grad():
        hidden = prior.lm.transformer(prior.layout.to_sequences(torch.randint(K, (64, *GRID)))).last_hidden_state
        prior.lm.lm_head.weight[K] = 50 * hidden.reshape(-1, hidden.shape[-1]).mean(0)
    raw = prior.lm.generate(torch.full((8, 1), K), do_sample=True, max_new_tokens=16, top_k=0)
    assert (raw[:, 1:] == K).float().mean() > 0.5, "BOS is not dominant: the test would not show suppression"
    codes = prior.generate_codes(64, seed=0)
    assert codes.shape == (64, *GRID) and codes.dtype == torch.long
    assert 0 <= int(codes.min()) and int(codes.max()) < K
    images = decode_samples(tokenizer, codes)
    assert images.shape == (64, 3, 16, 16) and torch.isfinite(images).all()


def test_temperature_top_k_top_p_and_seed():
    prior = tiny_prior().eval()
    state = torch.get_rng_state()
    first = prior.generate_codes(16, seed=3)
    assert torch.equal(torch.get_rng_state(), state), "a seeded draw changed torch's global RNG"
    assert torch.equal(first, prior.generate_codes(16, seed=3))
    assert not torch.equal(first, prior.generate_codes(16, seed=4))
    # top_k=1 and a tiny top_p are greedy: every sample is the same sequence.
    for greedy in (prior.generate_codes(8, top_k=1, seed=0), prior.generate_codes(8, top_p=1e-6, seed=1)):
        assert (greedy == greedy[0]).all()
    # top_k=3: at every step only the 3 most likely codes can appear.
    sequences = prior.layout.to_sequences(prior.generate_codes(32, top_k=3, seed=0))
    logits = prior(input_ids=sequences).logits[:, :-1, :K]
    ranks = (logits > logits.gather(-1, sequences[:, 1:, None])).sum(-1)
    assert int(ranks.max()) <= 2
    # A low temperature concentrates the draws: fewer distinct codes per position than at T = 1.
    cold, warm = prior.generate_codes(64, temperature=0.05, seed=0), prior.generate_codes(64, seed=0)
    distinct = lambda codes: sum(len(torch.unique(codes[:, i, j])) for i in range(4) for j in range(4))  # noqa: E731
    assert distinct(cold) < distinct(warm)


def test_bad_sampling_input_raises_clear_errors():
    prior = tiny_prior().eval()
    tokenizer = VQModel(VQConfig(image_size=16, backbone_config=dict(base_channels=8), latent_dim=8, codebook_size=K)).eval()
    with pytest.raises(ValueError, match="num_samples must be a positive int, got 0"):
        prior.generate_codes(0)
    with pytest.raises(ValueError, match="temperature must be a positive finite number"):
        prior.generate_codes(2, temperature=0)
    with pytest.raises(ValueError, match=r"top_p must be None or in \(0, 1\]"):
        prior.generate_codes(2, top_p=1.5)
    with pytest.raises(ValueError, match=r"top_k must be None or a non-negative int"):
        prior.generate_codes(2, top_k=-1)
    with pytest.raises(ValueError, match=r"sampled codes must lie in \[0, 16\) \(K=16\), got values in \[0, 16\]"):
        decode_samples(tokenizer, torch.tensor([[0] * 15 + [16]]))
    with pytest.raises(ValueError, match=r"sampled codes must have shape \[B, 4, 4\] or \[B, 16\]"):
        decode_samples(tokenizer, torch.zeros(1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="counts are all zero"):
        sample_from_histogram(torch.zeros(K), GRID, 2)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 16\)"):
        code_counts(torch.tensor([3, 17]), K)


# The scripts of training/ and the `vqtok` commands they run.
COMMAND_OF_SCRIPT = {"train_tokenizer": "train", "evaluate_tokenizer": "evaluate", "tokenize_dataset": "tokenize",
                     "train_prior": "prior", "sample": "sample", "convert_checkpoint": "convert", "make_shards": "shards"}


def load_script(name: str):
    """The module of the command that `training/<name>.py` runs (its `main(argv)` raises on bad input)."""
    import importlib

    return importlib.import_module(f"vqtok.commands.{COMMAND_OF_SCRIPT[name]}")


def test_image_to_tokens_to_prior_to_samples_from_the_command_line(tmp_path, capsys):
    for split, count in (("train", 24), ("test", 8)):
        folder = tmp_path / "images" / split
        folder.mkdir(parents=True)
        for index, row in enumerate(tiny_images(count=count, seed=len(split), width=24, height=20)):
            row["image"].save(folder / f"{index}.png")
    tiny_tokenizer(tmp_path / "tokenizer")
    tokens = load_script("tokenize_dataset").main([
        "--tokenizer", str(tmp_path / "tokenizer"), "--source", str(tmp_path / "images"),
        "--output", str(tmp_path / "tokens"), "--batch_size", "8",
    ])
    assert {name: len(split) for name, split in tokens.items()} == {"train": 24, "test": 8}
    assert "saved tokens to" in capsys.readouterr().out

    results = load_script("train_prior").main([
        "--config", str(REPO / "training" / "configs" / "prior.yaml"),
        f"data.tokens={tmp_path / 'tokens'}", f"training.output_dir={tmp_path / 'prior'}",
        "training.max_steps=4", "training.batch_size=4", "training.warmup_steps=1", "training.report_to=none",
        "model.hidden_size=16", "model.num_layers=1", "model.num_heads=2",
    ])
    assert results["uniform_bits"] == pytest.approx(math.log2(K))
    assert set(results) >= {"histogram_entropy_bits", "histogram_held_out_bits", "prior_bits", "prior_vs_histogram"}
    assert json.loads((tmp_path / "prior" / "metrics.json").read_text())["prior_bits"] == pytest.approx(results["prior_bits"])
    prior = TokenPrior.from_pretrained(tmp_path / "prior")
    assert prior.config.tokenizer == str(tmp_path / "tokenizer")
    assert prior.config.training_metadata["tokens"]["num_train_images"] == 24
    assert "prior bits/token" in (tmp_path / "prior" / "README.md").read_text()

    samples = load_script("sample").main([
        "--prior", str(tmp_path / "prior"), "--tokens", str(tmp_path / "tokens"), "--num_samples", "6",
        "--columns", "3", "--scale", "1", "--top_k", "5", "--output_dir", str(tmp_path / "samples"),
    ])
    assert sorted(samples) == ["histogram", "prior", "uniform"]
    for scheme, codes in samples.items():
        assert codes.shape == (6, *GRID) and 0 <= int(codes.min()) and int(codes.max()) < K
        with Image.open(tmp_path / "samples" / f"samples_{scheme}.png") as grid:
            assert grid.size == (3 * 18 + 2, 2 * 18 + 2)  # 3 columns x 2 rows of 16 px images, 2 px gaps
