"""Bad arguments to the downstream surfaces (sampling, the code histogram, dataset tokenization,
loading a missing folder) fail before any work with the argument named: one test per class of fault."""

import math
import re

import pytest
import torch

from tiny_data import tiny_images, tiny_tokenizer
from vqtok.prior.sampling import histogram_bits_per_token, sample_from_histogram, sample_uniform
from vqtok.tokens import tokenize_dataset


@pytest.mark.parametrize("call, message", [
    (lambda: sample_uniform(16, (0, 4), 2), r"grid must be .* positive ints.*\(0, 4\)"),
    (lambda: sample_uniform(16, (), 2), r"grid must be"),
    (lambda: sample_uniform(0, (4, 4), 2), r"codebook_size must be a positive int, got 0"),
    (lambda: sample_uniform(16, (4, 4), 2, seed=2**70), r"seed must be an int in \[0, 2\*\*64\)"),
    (lambda: sample_uniform(16, (4, 4), 2, seed=-1), r"seed must be"),
    (lambda: sample_from_histogram(torch.ones(4), (4, 0), 1), r"grid must be"),
    (lambda: sample_uniform(16, (4, 4), 0), r"num_samples must be a positive int"),
])
def test_sampling_arguments_out_of_range_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_histogram_checks_its_codes_and_measures_by_hand():
    train = torch.tensor([0, 0, 0, 1])
    # add-1/2 smoothing: p = (3.5 / 5, 1.5 / 5); held-out [0, 1] costs the mean of -log2 p
    measured = histogram_bits_per_token(train, torch.tensor([0, 1]), 2)
    assert measured["histogram_held_out_bits"] == pytest.approx(-(math.log2(0.7) + math.log2(0.3)) / 2)
    assert measured["histogram_entropy_bits"] == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
    with pytest.raises(ValueError, match=r"must lie in \[0, 2\).*got values in \[-1, 1\]"):
        histogram_bits_per_token(train, torch.tensor([-1, 1]), 2)  # -1 must not index from the end
    with pytest.raises(ValueError, match="train_codes is empty"):
        histogram_bits_per_token(torch.tensor([], dtype=torch.long), None, 2)
    with pytest.raises(ValueError, match="eval_codes is empty"):
        histogram_bits_per_token(train, torch.tensor([], dtype=torch.long), 2)


@pytest.mark.parametrize("arguments, message", [
    ({"batch_size": -3}, r"batch_size must be a positive int, got -3"),
    ({"batch_size": 0}, r"batch_size must be a positive int, got 0"),
    ({"batch_size": 2.5}, r"batch_size must be a positive int, got 2.5"),
    ({"num_proc": 0}, r"num_proc must be a positive int or None, got 0"),
])
def test_tokenize_dataset_rejects_bad_sizes_before_loading_anything(tmp_path, arguments, message):
    tiny_tokenizer(tmp_path / "tokenizer")
    with pytest.raises(ValueError, match=message):
        tokenize_dataset(tiny_images(count=4), str(tmp_path / "tokenizer"), **arguments)


def test_the_prior_config_refuses_unknown_keys_and_bad_language_model_values(tmp_path):
    import json

    from vqtok import VQConfig
    from vqtok.prior import PriorConfig, TokenPrior

    with pytest.raises(ValueError, match=r"unknown prior config key\(s\) \['codebok_size'\]"):
        PriorConfig(codebok_size=16)
    for lm_config, message in (({"model_type": "gpt2", "attn_pdrop": math.nan}, r"`lm_config.attn_pdrop` must be finite"),
                               ({"model_type": "gpt2", "n_layer": -2}, r"`lm_config.n_layer` must be a positive int"),
                               ({"model_type": "llama", "attention_dropout": 1.5}, r"`lm_config.attention_dropout` must lie in \[0, 1\]")):
        with pytest.raises(ValueError, match=message):
            PriorConfig(lm_config=lm_config)
    tokenizer_config = VQConfig(image_size=16, latent_dim=4, codebook_size=16)
    with pytest.raises(ValueError, match=r"unknown gpt2 config option\(s\) \['n_layr'\] in lm_options"):
        PriorConfig.for_tokenizer(tokenizer_config, n_layr=2)

    # the same checks when the config comes from a config.json
    folder = tmp_path / "prior"
    TokenPrior(PriorConfig.for_tokenizer(tokenizer_config, hidden_size=8, num_layers=1, num_heads=2)).save_pretrained(folder)
    saved = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**saved, "codebok_size": 16}))
    with pytest.raises(ValueError, match="codebok_size"):
        TokenPrior.from_pretrained(folder)
    saved["lm_config"]["resid_pdrop"] = math.nan
    (folder / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="lm_config.resid_pdrop"):
        TokenPrior.from_pretrained(folder)


def test_an_output_folder_that_cannot_be_written_fails_before_any_work(tmp_path, monkeypatch):
    import os

    from test_sampling import load_script
    from vqtok.training import loop
    from vqtok.training.arguments import TrainingArguments
    from vqtok.validation import check_output_folder
    from vqtok.training.trainer import train_tokenizer

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setattr(loop, "optimization_step", lambda *args, **kwargs: pytest.fail("trained into a file"))
    model = tiny_tokenizer(tmp_path / "tokenizer")
    args = TrainingArguments(output_dir=str(blocker), max_steps=2, batch_size=2, report_to="none")
    from vqtok.data import pixel_dataset

    with pytest.raises(OSError, match=r"training.output_dir .*a_file' is a file, not a folder"):
        train_tokenizer(model.train(), pixel_dataset(tiny_images(count=4), 16), None, args)

    script = load_script("tokenize_dataset")
    monkeypatch.setattr(script, "tokenize_dataset", lambda *args, **kwargs: pytest.fail("tokenized into a file"))
    with pytest.raises(OSError, match=r"--output .*a_file' is a file"):
        script.main(["--tokenizer", str(tmp_path / "tokenizer"), "--output", str(blocker)])

    check_output_folder(tmp_path / "new" / "folder")  # a missing folder is made
    assert (tmp_path / "new" / "folder").is_dir()
    if os.geteuid() != 0:  # root writes into read-only folders
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(OSError, match="cannot be written into"):
            check_output_folder(locked)


def test_resuming_from_a_checkpoint_holding_nan_weights_is_refused_naming_the_tensor(tmp_path):
    from safetensors.torch import load_file, save_file

    from test_training import tiny_args, tiny_config
    from vqtok import VQTokenizer
    from vqtok.data import pixel_dataset
    from vqtok.training.trainer import train_tokenizer

    data = pixel_dataset(tiny_images(count=8), 16, augment=True)
    train_tokenizer(VQTokenizer.from_config(tiny_config()), data, None,
                    tiny_args(tmp_path, max_steps=2, checkpoint_every=2, gradient_accumulation_steps=1))
    weights = tmp_path / "checkpoints" / "step_2" / "model.safetensors"
    state = load_file(weights)
    name = next(key for key, tensor in state.items() if tensor.is_floating_point() and "weight" in key)
    state[name].view(-1)[0] = math.nan
    save_file(state, weights, metadata={"format": "pt"})  # same size: the completeness marker still agrees
    with pytest.raises(ValueError, match=rf"step_2 .*hold NaN or infinite values: {name} \(1 non-finite value\).*resume from an earlier"):
        train_tokenizer(VQTokenizer.from_config(tiny_config()), data, None,
                        tiny_args(tmp_path, max_steps=4, resume_from_checkpoint="latest", gradient_accumulation_steps=1))


def test_ids_of_every_integer_dtype_decode_and_out_of_range_ones_are_named():
    from vqtok import VQConfig, VQModel

    model = VQModel(VQConfig(image_size=16, backbone_config=dict(base_channels=8), latent_dim=8, codebook_size=16)).eval()
    ids = torch.randint(16, (2, 4, 4))
    expected = model.decode(ids)
    for dtype in (torch.uint8, torch.int16, torch.uint16, torch.uint32, torch.uint64):
        assert torch.equal(model.decode(ids.to(dtype)), expected), dtype
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 16\), got values in \[70000, 70000\]"):
        model.decode(torch.full((1, 4, 4), 70000, dtype=torch.uint32))


def test_a_float_image_in_0_255_is_told_to_pass_uint8():
    import numpy as np

    from vqtok import VQImageProcessor

    processor = VQImageProcessor.for_image_size(16)
    pixels = np.random.default_rng(0).uniform(0, 255, size=(16, 16, 3))
    for image, options in ((pixels.astype(np.float32), {}), (pixels, {"do_rescale": False})):
        with pytest.raises(ValueError, match=r"float image with values in \[.*\]: float images must lie in \[0, 1\].*as uint8"):
            processor(image, return_tensors="pt", **options)
    as_uint8 = processor(pixels.round().astype(np.uint8), return_tensors="pt")["pixel_values"]
    assert as_uint8.shape == (1, 3, 16, 16)


@pytest.mark.parametrize("content, error, message", [
    ("{not json", ValueError, r"vqtok_tokens.json is not valid JSON"),
    ("[1, 2]", ValueError, r"vqtok_tokens.json must hold a JSON object of token layout fields, got list"),
    ('{"codebook_size": 16, "grid_height": 4, "grid_width": 4, "colour": 1}', ValueError, r"unknown token layout field\(s\) \['colour'\]"),
    ('{"codebook_size": 16, "grid_height": -4, "grid_width": 4}', ValueError, r"vqtok_tokens.json: .*grid_height"),
])
def test_a_damaged_token_layout_file_is_named(tmp_path, content, error, message):
    from vqtok import TokenLayout

    (tmp_path / "vqtok_tokens.json").write_text(content)
    with pytest.raises(error, match=message):
        TokenLayout.load(tmp_path)


def test_the_prior_names_bad_ids_and_sampling_settings():
    from tiny_data import tiny_prior

    prior = tiny_prior().eval()  # K = 16, BOS = 16
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 17\) \(the K codes and BOS = K\), got values in \[3, 17\]"):
        prior(input_ids=torch.tensor([[16, 3, 17]]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 16\)"):
        prior(input_ids=torch.tensor([[16, 3, 4]]), labels=torch.tensor([[16, 3, 16]]))
    with pytest.raises(TypeError, match="input_ids must be an integer torch.Tensor"):
        prior(input_ids=torch.zeros(1, 3))
    assert prior(input_ids=torch.tensor([[16, 3, 4]]), labels=torch.tensor([[16, 3, -100]])).loss.isfinite()
    for settings, message in (({"temperature": math.inf}, "temperature must be a positive finite number"),
                              ({"temperature": True}, "temperature must be"),
                              ({"top_k": True}, "top_k must be None or a non-negative int"),
                              ({"batch_size": 0}, "batch_size must be a positive int, got 0"),
                              ({"seed": 2**70}, r"seed must be an int in \[0, 2\*\*64\)")):
        with pytest.raises(ValueError, match=message):
            prior.generate_codes(2, **settings)
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        prior.negative_log_likelihood(torch.zeros(2, 4, 4, dtype=torch.long), batch_size=0)


@pytest.mark.parametrize("arguments, message", [
    (["--temperature", "inf"], "--temperature must be a positive finite number"),
    (["--temperature", "0"], "--temperature must be a positive finite number"),
    (["--columns", "0"], "--columns must be at least 1"),
    (["--scale", "0"], "--scale must be at least 1"),
    (["--num_samples", "0"], "--num_samples must be at least 1"),
    (["--top_p", "1.5"], r"--top_p must lie in \(0, 1\]"),
    (["--seed", str(2**70)], r"--seed must lie in \[0, 2\*\*64\)"),
])
def test_the_sampling_command_names_bad_arguments(arguments, message, capsys):
    from test_sampling import load_script

    with pytest.raises(SystemExit):
        load_script("sample").parse_args(arguments)
    assert re.search(message, capsys.readouterr().err)


def test_commands_name_a_split_or_column_the_data_lack_before_any_work(tmp_path, monkeypatch):
    from datasets import DatasetDict

    from test_sampling import REPO, load_script
    from vqtok import TokenLayout, save_tokenized, tokenized_split

    tokenizer = tiny_tokenizer(tmp_path / "tokenizer")
    layout = TokenLayout.for_tokenizer(tokenizer)
    tokens = DatasetDict({"train": tokenize_dataset(tiny_images(count=4), str(tmp_path / "tokenizer"))})
    save_tokenized(tokens, tmp_path / "tokens", layout)
    lacks_bogus = r"='bogus' is not a split of the token dataset at .*tokens; it has \['train'\]"

    sample = load_script("sample")
    monkeypatch.setattr(sample, "decode_samples", lambda *args, **kwargs: pytest.fail("sampled before checking --split"))
    with pytest.raises(ValueError, match="--split" + lacks_bogus):
        sample.main(["--schemes", "uniform", "histogram", "--tokenizer", str(tmp_path / "tokenizer"),
                     "--tokens", str(tmp_path / "tokens"), "--split", "bogus", "--output_dir", str(tmp_path / "out")])

    prior = load_script("train_prior")
    monkeypatch.setattr(prior, "train_prior", lambda *args, **kwargs: pytest.fail("trained before checking the split"))
    for option in ("data.eval_split", "data.train_split"):
        with pytest.raises(ValueError, match=option + lacks_bogus):
            prior.main(["--config", str(REPO / "training" / "configs" / "prior.yaml"), f"data.tokens={tmp_path / 'tokens'}",
                        f"{option}=bogus", f"training.output_dir={tmp_path / 'prior'}", "training.report_to=none"])

    with pytest.raises(ValueError, match="split='train': the token dataset at .* has no named splits"):
        tokenized_split(tokens["train"], "train", "somewhere")

    tokenize = load_script("tokenize_dataset")
    monkeypatch.setattr(tokenize, "tokenize_dataset", lambda *args, **kwargs: pytest.fail("tokenized a wrong column"))
    with pytest.raises(ValueError, match="the sample dataset keeps its images in the column 'image', got image_column='bogus'"):
        tokenize.main(["--tokenizer", str(tmp_path / "tokenizer"), "--image_column", "bogus",
                       "--output", str(tmp_path / "tokens_again")])