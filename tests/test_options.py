"""Options declared once (`vqtok.options`): the same declaration checks a quantizer's keyword
arguments and the config field of that name, with errors that name the option."""

import math

import pytest

from vqtok import GumbelVQConfig, VQConfig
from vqtok.options import NUMBER, Option, check_options
from vqtok.quantizers import GumbelQuantizer, VectorQuantizer
from vqtok.training import DataArguments, TrainingArguments

DECAY = Option(NUMBER, low=0, high=1, high_open=True)


@pytest.mark.parametrize("value", [0, 0.0, 0.5, 0.999])
def test_a_number_in_range_passes(value):
    DECAY.check("ema_decay", value)


@pytest.mark.parametrize(
    "option,value,error,message",
    [
        (DECAY, 1.0, ValueError, r"`ema_decay` must lie in \[0, 1\), got 1.0"),
        (DECAY, -0.1, ValueError, r"must lie in \[0, 1\)"),
        (DECAY, math.nan, ValueError, "must be a finite number, got nan"),
        (DECAY, -math.inf, ValueError, "must be a finite number"),
        (DECAY, True, TypeError, r"must be a number, got bool \(True\)"),
        (DECAY, "0.5", TypeError, "must be a number, got str"),
        (Option(int, low=1), 2.0, TypeError, "must be int, got float"),
        (Option(int, choices=(1, 3)), 2, ValueError, r"must be one of \[1, 3\], got 2"),
        (Option(bool), 1, TypeError, "must be bool, got int"),
        (Option(str), None, TypeError, "must be str, got NoneType"),
    ],
)
def test_bad_values_name_the_option(option, value, error, message):
    with pytest.raises(error, match=message):
        option.check("ema_decay", value, "config field")


def test_optional_allows_none_and_unknown_names_are_rejected():
    Option(int, optional=True).check("chunk_rows", None)
    with pytest.raises(ValueError, match=r"unknown option `decay`; known: \['ema_decay'\]"):
        check_options({"ema_decay": DECAY}, {"decay": 0.5})


def test_one_declaration_serves_the_quantizer_and_the_config():
    # The quantizer's declaration is what the config checks its fields against.
    assert VQConfig.quantizer_class.options["ema_decay"] is VectorQuantizer.options["ema_decay"]
    with pytest.raises(ValueError, match=r"VectorQuantizer argument `ema_decay` must lie in \[0, 1\)"):
        VectorQuantizer(8, 3, ema_decay=1.0)
    with pytest.raises(ValueError, match=r"config field `ema_decay` must lie in \[0, 1\)"):
        VQConfig(ema_decay=1.0)
    # Rules across options too.
    with pytest.raises(ValueError, match="GumbelQuantizer argument `tau_min` .* must not exceed `tau_max`"):
        GumbelQuantizer(8, 3, tau_max=1.0, tau_min=2.0)
    with pytest.raises(ValueError, match="config field `tau_min` .* must not exceed `tau_max`"):
        GumbelVQConfig(tau_max=1.0, tau_min=2.0)


@pytest.mark.parametrize(
    "make,error,message",
    [
        (lambda: TrainingArguments(learning_rate="abc"), TypeError, "training option `learning_rate` must be a number"),
        (lambda: TrainingArguments(max_grad_norm=-1), ValueError, "training option `max_grad_norm` must lie in"),
        (lambda: TrainingArguments(mixed_precision="fp8"), ValueError, "`mixed_precision` must be one of"),
        (lambda: TrainingArguments(seed=1.5), TypeError, "training option `seed` must be int"),
        (lambda: DataArguments(augment="maybe"), TypeError, "data option `augment` must be bool"),
    ],
)
def test_run_options_are_typed(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_the_lists_that_belong_to_transformers_are_read_from_it():
    """Not kept by hand: the schedulers the loop can run (those that need a metric or more arguments
    fail a trial step), the config keys transformers reads itself, and its download arguments."""
    from vqtok.configuration import keys_transformers_does_not_read
    from vqtok.hub.loading import HUB_DOWNLOAD_KWARGS
    from vqtok.losses.base import LR_SCHEDULERS

    assert {"linear", "cosine", "constant_with_warmup"} <= set(LR_SCHEDULERS)
    assert not {"reduce_lr_on_plateau", "cosine_with_min_lr", "warmup_stable_decay"} & set(LR_SCHEDULERS)
    keys = {"name_or_path": "x", "torch_dtype": "float32", "attn_implementation": "eager", "num_labels": 2, "bogus": 1}
    assert keys_transformers_does_not_read(keys) == ["bogus"]
    with pytest.raises(ValueError, match=r"unknown config key\(s\) \['bogus'\] for VQConfig"):
        VQConfig(bogus=1)
    assert {"revision", "cache_dir", "token", "local_files_only", "force_download", "subfolder"} <= set(HUB_DOWNLOAD_KWARGS)
