"""Run configs (YAML files and `section.key=value` overrides) are parsed to each key's declared type
and range at load time, with the key in the error, for the tokenizer's and the prior's scripts."""

import pytest

from vqtok.training import load_prior_run_config, load_run_config

LOADERS = {"tokenizer": load_run_config, "prior": load_prior_run_config}
# Keys both run configs share (their `training` sections are the same).
SHARED_BAD = [
    ("training.max_grad_norm=-1", ValueError, r"training option `max_grad_norm` must lie in \[0, inf\]"),
    ("training.learning_rate=abc", TypeError, "training option `learning_rate` must be a number, got str"),
    ("training.learning_rate=0", ValueError, r"training option `learning_rate` must lie in \(0, inf\]"),
    ("training.learning_rate=.nan", ValueError, "training option `learning_rate` must be a finite number"),
    ("training.max_steps=10.5", TypeError, "training option `max_steps` must be int, got float"),
    ("training.max_steps=ten", TypeError, "training option `max_steps` must be int, got str"),
    ("training.max_steps=0", ValueError, r"training option `max_steps` must lie in \[1, inf\]"),
    ("training.seed=true", TypeError, "training option `seed` must be int, got bool"),
    ("training.mixed_precision=fp8", ValueError, r"`mixed_precision` must be one of \['no', 'fp16', 'bf16'\]"),
    ("training.output_dir=12", TypeError, "training option `output_dir` must be str, got int"),
    ("training.lr_scheduler=false", TypeError, "training option `lr_scheduler` must be a string, got False"),
    ("training.lr_scheduler=bogus", ValueError, r"training option `lr_scheduler` must be one of \['linear', 'cosine'.*got 'bogus'"),
    ("data.eval_split=[a, b]", TypeError, "data option `eval_split` must be str or None, got list"),
]
TOKENIZER_BAD = [
    ("objectives.adversarial.lr_scheduler=bogus", ValueError, r"`lr_scheduler` must be one of .*got 'bogus'"),
    ("data.augment=maybe", TypeError, "data option `augment` must be bool, got str"),
    ("data.augment=1", TypeError, "data option `augment` must be bool, got int"),
    ("data.on_bad_image=ignore", ValueError, r"data option `on_bad_image` must be one of \['fail', 'skip'\]"),
    ("model.codebook_size=abc", TypeError, "model option `codebook_size` must be int or None, got str"),
    ("model.codebook_size=16.5", TypeError, "model option `codebook_size` must be int or None, got float"),
    ("model.codebook_size=1", ValueError, r"model option `codebook_size` must lie in \[2, inf\]"),
]
PRIOR_BAD = [
    ("model.dropout=high", TypeError, "model option `dropout` must be a number, got str"),
    ("model.num_layers=2.5", TypeError, "model option `num_layers` must be int, got float"),
]
# YAML quirks that must load as the declared type: override -> (section, key, value).
SHARED_GOOD = [
    ("training.learning_rate=1e-3", ("training", "learning_rate", 1e-3)),  # PyYAML reads 1e-3 as a string
    ("training.learning_rate=2E-4", ("training", "learning_rate", 2e-4)),
    ("training.learning_rate='0.01'", ("training", "learning_rate", 0.01)),
    ("training.max_steps=10.0", ("training", "max_steps", 10)),
    ("training.max_steps=1e2", ("training", "max_steps", 100)),
    ("training.max_steps='12'", ("training", "max_steps", 12)),
    ("training.mixed_precision=no", ("training", "mixed_precision", "no")),  # not YAML 1.1's False
    ("training.checkpoints_total_limit=null", ("training", "checkpoints_total_limit", None)),
]
TOKENIZER_GOOD = [
    ("data.augment=false", ("data", "augment", False)),
    ("data.augment='true'", ("data", "augment", True)),
    ("data.augment='False'", ("data", "augment", False)),
    ("data.augment=off", ("data", "augment", False)),
    ("data.on_bad_image=skip", ("data", "on_bad_image", "skip")),
    ("model.codebook_size=16.0", ("model", "codebook_size", 16)),
    ("model.reconstruction_loss_weight=5e-1", ("model", "reconstruction_loss_weight", 0.5)),
]


def cases(shared, own):
    return [pytest.param(name, *case, id=f"{name}:{case[0]}") for name in LOADERS for case in shared] + [
        pytest.param(name, *case, id=f"{name}:{case[0]}") for name, cases in own.items() for case in cases
    ]


@pytest.mark.parametrize("loader, override, error, message",
                         cases(SHARED_BAD, {"tokenizer": TOKENIZER_BAD, "prior": PRIOR_BAD}))
def test_bad_override_fails_at_load_naming_the_key(loader, override, error, message):
    with pytest.raises(error, match=message):
        LOADERS[loader](None, [override])


@pytest.mark.parametrize("loader, override, expected", cases(SHARED_GOOD, {"tokenizer": TOKENIZER_GOOD}))
def test_yaml_quirks_load_as_the_declared_type(loader, override, expected):
    section, key, value = expected
    loaded = getattr(getattr(LOADERS[loader](None, [override]), section), key)
    assert loaded == value and type(loaded) is type(value)


YAML_FILES = [
    ("training:\n  learning_rate: 1e-3\n  max_steps: 20.0\ndata:\n  augment: 'false'\n", None),
    ("training:\n  learning_rate: one\n", "training option `learning_rate` must be a number"),
    ("data:\n  augment: maybe\n", "data option `augment` must be bool, got str"),
    ("training:\n  mixed_precision: no\n", "training option `mixed_precision` must be a string, got False: .*quote"),
    ("model:\n  codebook_size: 8.5\n", "model option `codebook_size` must be int or None, got float"),
    ("training: 5\n", "section `training` of the run config must be a mapping"),
]


@pytest.mark.parametrize("text, message", YAML_FILES, ids=[f"yaml{i}" for i in range(len(YAML_FILES))])
def test_yaml_file_values_are_parsed_and_checked(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    if message is None:
        run = load_run_config(str(path))
        assert (run.training.learning_rate, run.training.max_steps, run.data.augment) == (1e-3, 20, False)
        assert type(run.training.max_steps) is int
    else:
        with pytest.raises((TypeError, ValueError), match=message):
            load_run_config(str(path))


def test_override_fills_an_empty_section(tmp_path):
    """`training:` with nothing under it is an empty section (YAML null), which an override can fill."""
    path = tmp_path / "run.yaml"
    path.write_text("training:\n")
    assert load_run_config(str(path), ["training.max_steps=3"]).training.max_steps == 3


def test_exponents_without_a_dot_are_floats_inside_nested_options_too(tmp_path):
    # PyYAML (YAML 1.1) reads 1e-3 as a string; nested option dicts are not parsed by declared type, so
    # the loader itself must read it as the float every user means.
    config = LOADERS["tokenizer"](None, ["model.regularizers.topology.weight=1e-3"])
    assert config.model.regularizers == {"topology": {"weight": 0.001}}
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  regularizers:\n    topology:\n      weight: 2E-2\n")
    assert LOADERS["tokenizer"](str(path), []).model.regularizers == {"topology": {"weight": 0.02}}
