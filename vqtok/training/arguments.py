"""The options of a training run: where the images come from (`DataArguments`) and how the loop
runs (`TrainingArguments`). Every option is checked when the dataclass is built, with the option's
name in the error."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..options import FLAG, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, Option, check_options

TEXT = Option(str)


def arguments_from_dict(cls, values: dict, section: str):
    """`cls(**values)` for an arguments dataclass, rejecting unknown keys with a `ValueError` that
    names the section and lists the known keys."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in section `{section}`; known: {sorted(known)}")
    return cls(**values)


@dataclass
class DataArguments:
    """Where the images come from and how they are prepared.

    Args:
        source: `"sample"` (bundled, offline), a local image folder, or a Hub dataset name.
        train_split / eval_split: split names (`eval_split: null` skips evaluation).
        image_column: the column holding images in a Hub dataset.
        augment: random crop and horizontal flip on the training images.
    """

    source: str = "sample"
    train_split: str = "train"
    eval_split: str | None = "test"
    image_column: str = "image"
    augment: bool = True

    def __post_init__(self):
        specs = {"source": TEXT, "train_split": TEXT, "eval_split": Option(str, optional=True), "image_column": TEXT,
                 "augment": FLAG}
        check_options(specs, {name: getattr(self, name) for name in specs}, "data option")


@dataclass
class TokenDataArguments:
    """Where the tokens of a prior's training run come from.

    Args:
        tokens: a token dataset folder written by `training/tokenize_dataset.py` (or
            `vqtok.save_tokenized`): `save_to_disk` splits plus `vqtok_tokens.json`.
        train_split / eval_split: split names (`eval_split: null` skips evaluation).
    """

    tokens: str = "outputs/quickstart/tokens"
    train_split: str = "train"
    eval_split: str | None = "test"

    def __post_init__(self):
        specs = {"tokens": TEXT, "train_split": TEXT, "eval_split": Option(str, optional=True)}
        check_options(specs, {name: getattr(self, name) for name in specs}, "data option")


TRAINING_OPTIONS = {
    "max_steps": POSITIVE_INT,
    "batch_size": POSITIVE_INT,
    "learning_rate": POSITIVE,
    "weight_decay": NON_NEGATIVE,
    "lr_scheduler": TEXT,
    "warmup_steps": NON_NEGATIVE_INT,
    "gradient_accumulation_steps": POSITIVE_INT,
    "max_grad_norm": NON_NEGATIVE,
    "max_consecutive_skipped_steps": POSITIVE_INT,
    "mixed_precision": Option(str, choices=("no", "fp16", "bf16")),
    "eval_every": NON_NEGATIVE_INT,
    "eval_batch_size": POSITIVE_INT,
    "log_every": POSITIVE_INT,
    "report_to": TEXT,
    "checkpoint_every": NON_NEGATIVE_INT,
    "checkpoints_total_limit": Option(int, low=1, optional=True),
    "resume_from_checkpoint": Option(str, optional=True),
    "seed": Option(int),
    "num_workers": NON_NEGATIVE_INT,
}


@dataclass
class TrainingArguments:
    """Options of the training loop.

    Args:
        output_dir: where checkpoints, logs, evaluation grids (and, in the script, the trained
            tokenizer) are written.
        max_steps: optimizer steps to run.
        batch_size: images per process per micro-batch (the global batch of one optimizer step is
            `batch_size x processes x gradient_accumulation_steps`).
        learning_rate: peak learning rate of the optimizer (AdamW unless the tokenizer type's
            `build_optimizer` says otherwise).
        weight_decay: the optimizer's weight decay.
        lr_scheduler: any `transformers.get_scheduler` name (`cosine`, `linear`, `constant_with_warmup`, ...).
            It is stepped once per optimizer step, whatever the number of processes.
        warmup_steps: linear warm-up steps.
        gradient_accumulation_steps: micro-batches per optimizer step.
        max_grad_norm: gradient clipping (0 disables).
        max_consecutive_skipped_steps: a step whose loss or gradients are not finite on some process is
            skipped on every process (no optimizer or scheduler step; the quantizers' and
            regularisers' state is left as it was) with a warning, and counted; this many skipped
            steps in a row stop the run with an error.
        mixed_precision: `no`, `fp16` or `bf16` (quantizer maths stays fp32 regardless).
        eval_every: evaluate (MSE, PSNR, perplexity, codes used) on the main process and write a
            reconstruction grid every this many steps (0: only at the end).
        eval_batch_size: images per evaluation batch.
        log_every: steps between log records (every loss term and statistic the model reports, by
            name, averaged over the step's micro-batches and over processes, plus learning rate and
            images/s).
        report_to: Accelerate trackers, comma-separated (`tensorboard`, `wandb`, ...), `all`, or
            `none`. Logs go to `output_dir/logs`.
        checkpoint_every: `accelerator.save_state` into `output_dir/checkpoints/step_N` every this
            many steps (0: never).
        checkpoints_total_limit: keep only the newest this many checkpoints (None: keep all).
        resume_from_checkpoint: `latest` (the newest checkpoint in `output_dir/checkpoints`; a fresh
            start when there is none, so a preempted job can be rerun unchanged) or a checkpoint folder.
        seed: seed for model initialisation, data order and augmentation.
        num_workers: DataLoader worker processes (results do not depend on it).
    """

    output_dir: str = "outputs/tokenizer"
    max_steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    warmup_steps: int = 50
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    max_consecutive_skipped_steps: int = 10
    mixed_precision: str = "no"
    eval_every: int = 0
    eval_batch_size: int = 128
    log_every: int = 10
    report_to: str = "tensorboard"
    checkpoint_every: int = 0
    checkpoints_total_limit: int | None = 3
    resume_from_checkpoint: str | None = None
    seed: int = 0
    num_workers: int = 0

    def __post_init__(self):
        check_options(TRAINING_OPTIONS, {name: getattr(self, name) for name in TRAINING_OPTIONS}, "training option")

    @property
    def trackers(self) -> list[str]:
        """`report_to` as a list of tracker names (empty for `none`)."""
        names = [name.strip() for name in self.report_to.split(",") if name.strip()]
        return [] if names in ([], ["none"]) else names
