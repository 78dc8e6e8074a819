"""The options of a training run: where the images come from (`DataArguments`), how every training
loop runs (`LoopArguments`) and how the tokenizer's trains (`TrainingArguments`: the loop's options,
and fine-tuning, weight EMA, compilation and the optimizer's). Every option is checked when the
dataclass is built, with the option's name in the error.

Values read from a run config (YAML or `section.key=value` overrides) are first parsed to their
declared type by `parse_options`, since YAML's own typing is loose: PyYAML reads `1e-3` as a string
(YAML 1.1 floats need a dot), `10.0` as a float and `yes`/`off` as booleans."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from ..data import BAD_IMAGE_CHOICES
from ..losses.base import LR_SCHEDULER
from ..modeling import FREEZABLE_PARTS
from ..options import (
    FLAG,
    NUMBER,
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    TEXT,
    Option,
    Settings,
    options_dataclass,
)


# A number written as text: what PyYAML leaves a string (`1e-3`, `+5`) or a quoted number.
_NUMBER_TEXT = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
# The words a boolean option accepts as text (YAML 1.1 spellings, any case).
_BOOL_TEXT = {"true": True, "false": False, "yes": True, "no": False, "on": True, "off": False}


def parse_option(option: Option, name: str, value: Any, where: str = "option") -> Any:
    """`value` of a run config's `name` as the type `option` declares, then checked against it.

    A number option takes a number written as text (`"1e-3"`); an int option a float without a
    fractional part (`10.0`); a boolean option the words true/false/yes/no/on/off (any case) and
    nothing else. Raises `TypeError`/`ValueError` naming `where` `name` otherwise (`"maybe"` for a
    boolean, `10.5` for an int, `"abc"` for a number, a value out of range)."""
    if isinstance(value, str) and option.kind is bool and value.strip().lower() in _BOOL_TEXT:
        value = _BOOL_TEXT[value.strip().lower()]
    elif isinstance(value, str) and option.kind in (int, float) and _NUMBER_TEXT.fullmatch(value.strip()):
        value = int(value) if value.strip().lstrip("+-").isdigit() else float(value)
    if option.kind is int and isinstance(value, float) and value.is_integer():
        value = int(value)
    if option.kind is str and isinstance(value, bool):
        raise TypeError(
            f"{where} `{name}` must be a string, got {value!r}: YAML reads unquoted yes/no/on/off/true/false as "
            "booleans, so quote the value"
        )
    option.check(name, value, where)
    return value


def parse_options(specs: Mapping[str, Option], values: Mapping[str, Any], section: str) -> dict:
    """`values` of run-config section `section` with each declared one parsed by `parse_option`
    (errors name "`section` option `key`"); keys without a spec are left for the caller to reject."""
    return {name: parse_option(specs[name], name, value, f"{section} option") if name in specs else value
            for name, value in values.items()}


def arguments_from_dict(cls, values: Mapping, section: str):
    """`cls(**values)` for an arguments dataclass of a run config, each value parsed to its declared
    type (`parse_options` with `cls.options`), rejecting unknown keys with a `ValueError` that
    names the section and lists the known keys."""
    if not isinstance(values, Mapping):
        raise ValueError(f"section `{section}` of the run config must be a mapping of keys to values, got {values!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in section `{section}`; known: {sorted(known)}")
    return cls(**parse_options(cls.options, values, section))


# The splits of a run's data, shared by the image and the token data.
SPLIT_OPTIONS = {
    "train_split": TEXT("train", "The training split's name."),
    "eval_split": Option(str, optional=True)("test", "The held-out split's name (null: no evaluation)."),
}


@options_dataclass
class DataArguments(Settings):
    """Where the images come from and how they are prepared."""

    option_owner = "data option"
    options = {
        "source": TEXT("sample", (
            '`"sample"` (bundled, offline), a local image folder, a Hub dataset name, or webdataset tar shards: a '
            "path with a brace range (`shards/train-{000000..000099}.tar`), a glob (`shards/train-*.tar`) or one "
            "`.tar` file (the shards are the training split: see `eval_source`)."
        )),
        **SPLIT_OPTIONS,
        "image_column": TEXT("image", (
            "The column holding images in a Hub dataset; for tar shards, the samples' image key (`jpg`, `png`, ...; "
            "the default `image` takes the first image key the shards hold)."
        )),
        "augment": FLAG(True, "Random crop and horizontal flip on the training images."),
        "on_bad_image": Option(str, choices=BAD_IMAGE_CHOICES)("fail", (
            "What to do with images that cannot be read (a truncated or corrupt file): `fail` reads every image "
            "of the local folder or dataset before training and raises one error listing them all (files by "
            "path, dataset rows by index); `skip` drops them with a warning naming each, and the count is "
            "recorded in the trained tokenizer's `training_metadata` (`dataset.skipped_images`). The bundled "
            "sample set is not checked."
        )),
        "streaming": FLAG(False, (
            "Read the training images as a stream (`datasets.IterableDataset`) instead of loading them: for data that "
            "does not fit on one machine. Each process reads its own part (whole shards when the shard count divides "
            "by the process count), local files in a new seeded order each epoch, through a seeded block shuffle of "
            "`shuffle_buffer` images; checkpoints hold the stream's position, and a resume on the same process count "
            "is exact. Unreadable images are met during training: `on_bad_image` stops there naming the image, or "
            "skips and counts it."
        )),
        "shuffle_buffer": POSITIVE_INT(1000, (
            "Images per shuffled block of a streamed run (1: the source's order; larger mixes more, costs memory "
            "for that many encoded images, and one block read again per resume)."
        )),
        "eval_source": Option(str, optional=True)(None, (
            "Where the held-out images come from when they are not a split of `source` (tar shards are one split "
            "each): any source `source` takes, read at `eval_split`. None: `source`."
        )),
        "holdout_fraction": Option(float, low=0, high=1, low_open=True, high_open=True)(0.1, (
            "When the source has no `eval_split` (an image folder has only `train`), this fraction of its training "
            "split is held out for evaluation instead: the same images in every run (a seeded split, which "
            "`vqtok evaluate` repeats), and the run says how many."
        )),
        "eval_images": POSITIVE_INT(512, (
            "A streamed run evaluates on the first this many images of the held-out split (read once, kept in memory)."
        )),
    }


@options_dataclass
class TokenDataArguments(Settings):
    """Where the tokens of a prior's training run come from."""

    option_owner = "data option"
    options = {
        "tokens": TEXT("outputs/quickstart/tokens", (
            "A token dataset folder written by `vqtok tokenize` (or `vqtok.save_tokenized`): "
            "`save_to_disk` splits plus `vqtok_tokens.json`."
        )),
        **SPLIT_OPTIONS,
    }


@options_dataclass
class LoopArguments(Settings):
    """Options of every training loop (the tokenizer's and the prior's)."""

    option_owner = "training option"
    options = {
        "output_dir": TEXT("outputs/tokenizer", (
            "Where checkpoints, logs, evaluation grids (and, in the script, the trained tokenizer) are written."
        )),
        "max_steps": POSITIVE_INT(1000, "Optimizer steps to run."),
        "batch_size": POSITIVE_INT(64, (
            "Images per process per micro-batch (the global batch of one optimizer step is "
            "`batch_size x processes x gradient_accumulation_steps`)."
        )),
        "learning_rate": POSITIVE(1e-3, (
            "Peak learning rate of the optimizer (AdamW; a quantizer's `parameter_groups` learn at their multiple "
            "of it)."
        )),
        "weight_decay": NON_NEGATIVE(0.0, (
            "The optimizer's weight decay, on weight matrices and convolution kernels only (not on biases, norms, "
            "embeddings or codebooks)."
        )),
        "lr_scheduler": LR_SCHEDULER("cosine", (
            "A `transformers.get_scheduler` name (`cosine`, `linear`, `constant_with_warmup`, ...). It is stepped "
            "once per optimizer step, whatever the number of processes."
        )),
        "warmup_steps": NON_NEGATIVE_INT(50, "Linear warm-up steps."),
        "gradient_accumulation_steps": POSITIVE_INT(1, "Micro-batches per optimizer step."),
        "max_grad_norm": NON_NEGATIVE(1.0, "Gradient clipping (0 disables)."),
        "max_consecutive_skipped_steps": POSITIVE_INT(10, (
            "A step whose loss or gradients are not finite on some process is skipped on every process (no optimizer "
            "or scheduler step; the quantizers' and regularisers' state is left as it was) with a warning, and "
            "counted; this many skipped steps in a row stop the run with an error."
        )),
        "deterministic": FLAG(False, (
            "Deterministic maths for the whole process (set when the run starts): `torch.use_deterministic_algorithms`, "
            "cuDNN's deterministic kernels, no TF32 (fp32 matmuls at full precision) and cuBLAS's fixed workspace. A "
            "run stopped and resumed on a GPU then ends with the weights of an uninterrupted one, as it always does on "
            "a CPU; without it GPU kernels may sum in another order from run to run. Costs speed on a GPU."
        )),
        "mixed_precision": Option(str, choices=("no", "fp16", "bf16"))("no", (
            "`no`, `fp16` or `bf16` (quantizer maths stays fp32 regardless; fp16 takes one optimizer, so a run with "
            "training objectives that train networks of their own needs bf16)."
        )),
        "eval_every": NON_NEGATIVE_INT(0, (
            "Evaluate (MSE, PSNR, perplexity, codes used) on the main process and write a reconstruction grid every "
            "this many steps (0: only at the end)."
        )),
        "eval_batch_size": POSITIVE_INT(128, "Images per evaluation batch."),
        "log_every": POSITIVE_INT(10, (
            "Steps between log records (every loss term and statistic the model reports, by name, averaged over the "
            "step's micro-batches and over processes, plus learning rate and images/s)."
        )),
        "report_to": TEXT("tensorboard", (
            "Accelerate trackers, comma-separated (`tensorboard`, `wandb`, ...), `all`, or `none`. Logs go to "
            "`output_dir/logs`."
        )),
        "checkpoint_every": NON_NEGATIVE_INT(0, (
            "`accelerator.save_state` into `output_dir/checkpoints/step_N` every this many steps (0: never)."
        )),
        "checkpoints_total_limit": Option(int, low=1, optional=True)(3, (
            "Keep only the newest this many checkpoints (None: keep all)."
        )),
        "resume_from_checkpoint": Option(str, optional=True)(None, (
            "`latest` (the newest checkpoint in `output_dir/checkpoints`; a fresh start when there is none, so a "
            "preempted job can be rerun unchanged) or a checkpoint folder."
        )),
        "seed": Option(int)(0, "Seed for model initialisation, data order and augmentation."),
        "num_workers": NON_NEGATIVE_INT(0, (
            "DataLoader worker processes; in a streamed run (`data.streaming`), the threads that decode and augment "
            "images ahead of the step. Results do not depend on it."
        )),
    }

    def __post_init__(self):
        if isinstance(self.output_dir, os.PathLike):
            self.output_dir = os.fspath(self.output_dir)
        super().__post_init__()

    @property
    def trackers(self) -> list[str]:
        """`report_to` as a list of tracker names (empty for `none`)."""
        names = [name.strip() for name in self.report_to.split(",") if name.strip()]
        return [] if names in ([], ["none"]) else names


def check_freeze(options: Mapping[str, Any], where: str) -> None:
    """The option rule of `freeze`: distinct parts of the tokenizer, at least one left to train."""
    parts = options["freeze"]
    if any(part not in FREEZABLE_PARTS for part in parts) or len(set(parts)) != len(parts):
        raise ValueError(f"{where} `freeze` takes distinct parts among {list(FREEZABLE_PARTS)}, got {parts!r}")
    if len(parts) == len(FREEZABLE_PARTS):
        raise ValueError(f"{where} `freeze` keeps every part of the tokenizer ({parts!r}): nothing is left to train")


def check_betas(options: Mapping[str, Any], where: str) -> None:
    """The option rule of `betas`: two of them, beta1 and beta2."""
    if len(options["betas"]) != 2:
        raise ValueError(f"{where} `betas` takes two values, beta1 and beta2 (e.g. [0.9, 0.95]), got {options['betas']!r}")


@options_dataclass
class TrainingArguments(LoopArguments):
    """Options of the tokenizer's training loop: the loop's, and how the tokenizer trains."""

    options = {
        **LoopArguments.options,
        "freeze": Option(list)([], (
            "Parts of the tokenizer kept exactly as they are: any of `encoder`, `quantizer`, `decoder`. They take no "
            "gradient and stay in evaluation mode (a frozen quantizer updates no statistic, code or schedule). With "
            "the encoder and the quantizer frozen every image keeps its ids: fine-tuning the decoder of a tokenizer "
            "(`model.init_from`) leaves the tokens a downstream model learnt valid."
        )),
        "ema_decay": Option(NUMBER, low=0, high=1, high_open=True, optional=True)(None, (
            "Weight EMA: an exponential moving average of the trained parameters, updated after every optimizer "
            "step that went through with decay min(ema_decay, (1 + n) / (10 + n)) at the n-th update (so early "
            "weights fade fast). Evaluation and the published tokenizer (`output_dir/tokenizer`) use it; the last "
            "raw weights are saved beside it (`output_dir/tokenizer_raw`). Kept in checkpoints. None: off."
        )),
        "compile": FLAG(False, (
            "Compile the encoder's and the decoder's training forward with `torch.compile` (the quantizer's maths "
            "stays eager); evaluation runs them eagerly. The first steps pay for compilation."
        )),
        "channels_last": FLAG(False, (
            "Train with the channels-last memory format (the convolutions' weights and the images), which some "
            "devices' convolution kernels run faster; the saved weights are in the usual layout."
        )),
        "betas": Option(list, items=Option(NUMBER, low=0, high=1, high_open=True))([0.9, 0.999], (
            "AdamW's (beta1, beta2) for the tokenizer (LlamaGen trains with [0.9, 0.95])."
        )),
    }
    option_rules = LoopArguments.option_rules + (check_freeze, check_betas)
