"""The tokenizer training loop, on Hugging Face Accelerate (one CPU, one GPU, many of either).

`train_tokenizer` runs the loop; `vqtok train` wraps it in a command line with
YAML configs. The same code runs under `python` and under `accelerate launch`.

Determinism and resuming. The training images form one endless, seeded stream (`SampleStream`):
draw `g` is image `perm_e[g mod n]` of epoch `e = g // n`, and its random crop/flip come from a
generator seeded with `(seed, g)`. Each optimizer step consumes `batch_size x processes x
gradient_accumulation_steps` consecutive draws, process `r` taking the `r`-th slice of every global
micro-batch. The data position is therefore one integer, the number of draws consumed, and a
resumed run continues the stream exactly where the checkpoint left it, whatever the number of
data-loader workers. Checkpoints (`accelerator.save_state`) hold the model with its quantizer
buffers, the optimizer, the LR scheduler, the per-process RNG states (used by k-means
initialisation, dead-code restarts and stochastic quantizers) and a `TrainerState` (step, draws
consumed); a run stopped and resumed on the same number of processes ends with the same weights as
an uninterrupted one. A streamed source (`StreamingImages`, for data too large to load) keeps its
own position, checkpointed beside these, with the same guarantee.

Training objectives with networks of their own (`vqtok.losses`, the run config's `objectives`) add
their terms to the tokenizer's loss and run their own updates in the same steps; their networks and
optimizers are in every checkpoint too, and never in the tokenizer.

How the tokenizer trains (`TrainingArguments`): parts of it can be frozen (`freeze`), its weights
averaged (`ema_decay`, a `WeightEMA` kept in every checkpoint, used for evaluation and left in the
model at the end), its backbone compiled (`compile`) and run channels-last (`channels_last`).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import Dataset
from tqdm.auto import tqdm

from ..data import stack_pixel_values
from ..metrics.evaluation import evaluate_tokenizer
from ..metrics.pictures import save_reconstruction_grid
from ..losses import ObjectiveInputs, TrainingObjective
from ..modeling import merge_named_terms
from ..processing import VQImageProcessor
from ..parallel.collectives import broadcast_
from .arguments import TrainingArguments
from .loop import (
    StepContext,
    TrainerState,
    Update,
    add_step_values,
    count_skipped_step,
    finish_training,
    make_accelerator,
    optimization_step,
    reduce_step_values,
    save_run_checkpoint,
    start_training,
)
from .streamed_data import StreamingImages
from .in_memory_data import SampleStream, training_batches
from .weight_ema import WeightEMA

__all__ = ["COMPILE_BACKEND", "RAW_WEIGHTS_FOLDER", "THROUGHPUT_SKIP_STEPS", "TrainerState", "make_accelerator",
           "train_tokenizer"]

# Steps left out of the throughput figure: the first ones pay for k-means initialisation and
# lazy allocations (and, with `compile`, for compilation).
THROUGHPUT_SKIP_STEPS = 3
# What `training.compile` compiles with (`torch.compile`'s backend).
COMPILE_BACKEND = "inductor"
# Where a run with weight EMA keeps its last raw weights (a tokenizer folder, in `output_dir`).
RAW_WEIGHTS_FOLDER = "tokenizer_raw"


def train_tokenizer(
    model,
    train_dataset: Dataset,
    eval_dataset: Dataset | None,
    args: TrainingArguments,
    accelerator: Accelerator | None = None,
    hparams: dict | None = None,
    objectives: dict[str, TrainingObjective] | None = None,
) -> dict[str, float]:
    """Train `model` on `train_dataset` (rows with `pixel_values`) in place.

    Args:
        model: a vqtok tokenizer (any quantizer).
        train_dataset: training rows; a `pixel_dataset(..., augment=True)` gets seeded, resumable
            augmentation (see the module docstring). Or a `StreamingImages` (data too large to
            load, `data.streaming=true`): its position is checkpointed, a resume on the same
            process count is exact, and its skipped unreadable images are counted in the results.
        eval_dataset: held-out rows for periodic and final evaluation (None: no evaluation).
        args: the loop's options.
        accelerator: one made by `make_accelerator(args)` (made here when None, and its trackers
            ended on return).
        hparams: the run configuration to record with the trackers (default: `args` and the model config).
        objectives: training objectives with networks of their own, by name (see `vqtok.losses`):
            their terms join the tokenizer's loss and their updates run in the same steps.

    Returns:
        On the main process: the final evaluation (`mse`, `psnr`, `perplexity`, `codes_used`,
        `bits_per_image`; none without `eval_dataset`) plus `images_per_second` (training
        throughput over all processes), `train_seconds` and `skipped_steps` (steps skipped for a
        non-finite loss or gradient), and for a streamed run `skipped_images` (this process's).
        Other processes get the throughput, time and skips only. With `args.ema_decay`, `model`
        ends holding the averaged weights (what the evaluations measured), and the last raw ones
        are saved in `output_dir/tokenizer_raw` first.
    """
    owns_accelerator = accelerator is None
    accelerator = accelerator or make_accelerator(args)
    set_seed(args.seed)
    if args.freeze:
        model.freeze(args.freeze)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    objectives = dict(objectives or {})
    with torch.random.fork_rng(devices=[]):  # the objectives' networks draw their start from a copy of the seeded
        for objective in objectives.values():  # state: the tokenizer's random stream is the same with or without them
            objective.setup(model)
            objective.to(accelerator.device)
    tokenizer = model
    streamed = [train_dataset] if isinstance(train_dataset, StreamingImages) else []  # its position is checkpointed
    ema = [WeightEMA(model, args.ema_decay)] if args.ema_decay is not None else []  # in the checkpoints too
    optimizer = model.build_optimizer(args.learning_rate, args.weight_decay, tuple(args.betas))
    updates = [Update("tokenizer", model, optimizer,
                      lambda prepared, context: _tokenizer_forward(prepared, context, tokenizer, objectives, accelerator,
                                                                   args.channels_last),
                      state=[ObjectiveBuffers(objective) for objective in objectives.values()] + streamed + ema)]
    updates += [_objective_update(spec, tokenizer) for objective in objectives.values() for spec in objective.updates()]
    if hparams is None:
        hparams = {"training": asdict(args), "model": _model_hparams(model)}
    state = start_training(accelerator, updates, args, hparams)
    model, scheduler = updates[0].model, updates[0].scheduler
    for update in updates:
        for buffer in accelerator.unwrap_model(update.model).buffers():
            broadcast_(buffer)  # one start for all processes; from here on the quantizers keep them equal
    if ema and ema[0].updates == 0:
        ema[0].restart(tokenizer)  # from the weights every process starts with (rank 0's, or a checkpoint's)

    if streamed:
        batches = train_dataset.batches(args.batch_size, args.num_workers, accelerator.device)
        epoch = lambda: train_dataset.position.epoch  # noqa: E731
    else:
        stream = SampleStream(train_dataset, args.seed)
        batches = training_batches(stream, state.samples_seen, args, accelerator)
        epoch = lambda: state.samples_seen / stream.size  # noqa: E731
    draws_per_step = args.batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    progress = tqdm(total=args.max_steps, initial=state.step, desc="training", disable=not accelerator.is_main_process)
    first_step, timed_seconds, timed_steps = state.step, 0.0, 0
    started = time.perf_counter()
    with compiled_backbone(tokenizer, args.compile):
        while state.step < args.max_steps:
            step_started = time.perf_counter()
            totals: dict[str, torch.Tensor] = {}
            skipped = optimization_step(accelerator, updates, batches, args, state.step,
                                        lambda outputs: add_step_values(totals, _logged_values(outputs)))
            if ema and "tokenizer" not in skipped and not updates[0].optimizer.step_was_skipped:
                ema[0].update(tokenizer)
            state.step += 1
            count_skipped_step(state, skipped, args, len(updates))
            state.samples_seen += draws_per_step
            progress.update(1)
            if state.step > first_step + THROUGHPUT_SKIP_STEPS:
                timed_seconds += time.perf_counter() - step_started
                timed_steps += 1
            images_per_second = timed_steps * draws_per_step / timed_seconds if timed_seconds else math.nan

            if state.step % args.log_every == 0 or state.step == args.max_steps:
                record = reduce_step_values(accelerator, totals, args.gradient_accumulation_steps)
                record.update({"train/lr": scheduler.get_last_lr()[0], "train/skipped_steps": state.skipped_steps,
                               "train/epoch": epoch()})
                if timed_steps:
                    record["train/images_per_second"] = images_per_second
                progress.set_postfix(loss=f"{record['train/loss']:.4f}", ppl=f"{record.get('train/perplexity', math.nan):.0f}")
                accelerator.log(record, step=state.step)
            if eval_dataset is not None and args.eval_every and state.step % args.eval_every == 0 and state.step < args.max_steps:
                _evaluate_and_draw(accelerator, model, eval_dataset, args, state.step, ema)
            if args.checkpoint_every and state.step % args.checkpoint_every == 0:
                save_run_checkpoint(accelerator, updates, args, state.step)
    progress.close()
    results = _evaluate_and_draw(accelerator, model, eval_dataset, args, state.step, ema) if eval_dataset is not None else {}
    if args.channels_last:
        tokenizer.to(memory_format=torch.contiguous_format)
    if ema:
        if accelerator.is_main_process:
            _save_raw_weights(tokenizer, os.path.join(args.output_dir, RAW_WEIGHTS_FOLDER))
        ema[0].copy_to(tokenizer)
    if timed_steps:
        results["images_per_second"] = images_per_second
    results["train_seconds"] = time.perf_counter() - started
    results["skipped_steps"] = state.skipped_steps
    if streamed:
        results["skipped_images"] = train_dataset.skipped_images
    finish_training(accelerator, owns_accelerator)
    return results


def _model_hparams(model) -> dict:
    config = model.config
    return {"model_type": config.model_type, **{k: v for k, v in config.to_diff_dict().items() if k != "training_metadata"}}


@contextmanager
def compiled_backbone(tokenizer, compile: bool) -> Iterator[None]:
    """Inside the block, the tokenizer's encoder and decoder run compiled (`torch.compile` with
    `COMPILE_BACKEND`, in place, so that their weights keep their names) when `compile`; after it,
    eagerly again. Evaluations inside the block run them eagerly (`torch.compiler.set_stance`)."""
    parts = [tokenizer.encoder, tokenizer.decoder] if compile else []
    for part in parts:
        part.compile(backend=COMPILE_BACKEND)
    try:
        yield
    finally:
        for part in parts:
            part._compiled_call_impl = None  # what `nn.Module.compile` set: the module's own forward again


def _tokenizer_forward(model, context: StepContext, tokenizer, objectives: dict[str, TrainingObjective], accelerator,
                       channels_last: bool = False):
    """The tokenizer's training forward on the micro-batch (channels-last when the run asks), with the
    terms of every objective added to its loss (checked against the tokenizer's own names), computed
    in the run's precision."""
    batch = context.batch.contiguous(memory_format=torch.channels_last) if channels_last else context.batch
    output = model(batch)
    for name, objective in objectives.items():
        with accelerator.autocast():
            terms = objective.tokenizer_losses(ObjectiveInputs(context.batch, output, tokenizer, context.step))
        if terms:
            merge_named_terms(output.losses, terms, f"objective {name!r}")
            output.loss = output.loss + sum(terms.values())
    return output


class ObjectiveBuffers:
    """An objective's buffers (state it keeps outside the networks its updates train), for the
    checkpoints; its parameters are not included (frozen networks come from their weights files)."""

    def __init__(self, objective: TrainingObjective):
        self.objective = objective

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: buffer.detach().cpu().clone() for name, buffer in self.objective.named_buffers()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, buffer in self.objective.named_buffers():
                buffer.copy_(state[name])


@dataclass
class ObjectiveOutput:
    """An objective update's loss and its named terms."""

    loss: torch.Tensor
    losses: dict[str, torch.Tensor]


def _objective_update(spec, tokenizer) -> Update:
    """The loop's update of an objective's own network (`vqtok.losses.ObjectiveUpdate`)."""
    trainable = [parameter for parameter in spec.module.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=spec.learning_rate, betas=spec.betas, weight_decay=spec.weight_decay)

    def compute(module, context: StepContext) -> ObjectiveOutput:
        inputs = ObjectiveInputs(context.batch, context.outputs["tokenizer"], tokenizer, context.step)
        losses = spec.loss(module, inputs)
        return ObjectiveOutput(sum(losses.values()), losses)

    return Update(spec.name, spec.module, optimizer, compute, lr_scheduler=spec.lr_scheduler,
                  warmup_steps=spec.warmup_steps, every=spec.every, start_step=spec.start_step)


def _logged_values(outputs: dict) -> dict:
    """One micro-batch's tokenizer loss, loss terms and statistics, and every objective update's
    terms, by their logged names."""
    output = outputs["tokenizer"]
    values = {"train/loss": output.loss, **{f"train/{k}": v for k, v in output.losses.items()}}
    values.update({f"train/{k}": v for k, v in (output.stats or {}).items()})
    for name, update_output in outputs.items():
        if name != "tokenizer":
            merge_named_terms(values, {f"train/{k}": v for k, v in update_output.losses.items()}, f"update {name!r}")
    return values


def _save_raw_weights(tokenizer, folder: str) -> None:
    """The tokenizer as trained, before its weights are replaced by their average: a tokenizer folder."""
    tokenizer.save_pretrained(folder)
    VQImageProcessor.for_tokenizer(tokenizer.config).save_pretrained(folder)


def _evaluate_and_draw(accelerator: Accelerator, model, eval_dataset: Dataset, args: TrainingArguments, step: int,
                       ema: list[WeightEMA]) -> dict:
    """Evaluate on the main process (eval mode: no collectives inside; the averaged weights when the
    run keeps a weight EMA; the backbone eagerly), log the metrics and the reconstruction grid, while
    the other processes wait at the barrier."""
    results: dict[str, float] = {}
    if accelerator.is_main_process:
        with ema[0].averaged(accelerator.unwrap_model(model)) if ema else nullcontext(), torch.compiler.set_stance("force_eager"):
            results = _evaluate_on_main(accelerator, model, eval_dataset, args, step)
    accelerator.wait_for_everyone()
    return results


def _evaluate_on_main(accelerator: Accelerator, model, eval_dataset: Dataset, args: TrainingArguments, step: int) -> dict:
    unwrapped = accelerator.unwrap_model(model)
    results = evaluate_tokenizer(unwrapped, eval_dataset, args.eval_batch_size, progress=False)
    accelerator.log({f"eval/{k}": v for k, v in results.items()}, step=step)
    originals = stack_pixel_values(eval_dataset, limit=16).to(unwrapped.device)
    reconstructions = unwrapped.decode(unwrapped.encode(originals))
    path = save_reconstruction_grid(originals, reconstructions, os.path.join(args.output_dir, f"reconstructions_step{step}.png"))
    _log_image(accelerator, "eval/reconstructions", path, step)
    for regularizer in unwrapped.regularizers.values():
        for tag, image_path in regularizer.evaluation_images(unwrapped, args.output_dir, step).items():
            _log_image(accelerator, tag, image_path, step)
    return results


def _log_image(accelerator: Accelerator, name: str, path: str, step: int) -> None:
    """Send a PNG to the trackers that take images (TensorBoard)."""
    from PIL import Image

    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            with Image.open(path) as image:
                tracker.log_images({name: np.asarray(image.convert("RGB"))[None]}, step=step, dataformats="NHWC")
