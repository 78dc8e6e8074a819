"""The prior's training loop, on Accelerate, built from the same pieces (`loop`) as the tokenizer's.

The same `LoopArguments`, `make_accelerator`, optimizer step, seeded data stream (`SampleStream`: draw `g` is
sequence `perm_e[g mod n]`, process `r` takes the `r`-th slice of every global micro-batch),
checkpoints (`accelerator.save_state` with the LR scheduler and a `TrainerState`) and exact resume
as `train_tokenizer`; only the batches (token sequences) and the evaluation (held-out bits per
token) differ. The optimizer is AdamW over every parameter, weight decay on matrices only.
"""

from __future__ import annotations

import math
import time

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from ..tokens.layout import check_codes
from .arguments import LoopArguments
from .loop import (
    StepContext,
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
from .in_memory_data import SampleStream, training_batches


def prior_optimizer(prior, learning_rate: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW with weight decay on the weight matrices only (not on biases, norms or embeddings of
    one dimension), betas (0.9, 0.95) as is usual for small GPTs."""
    params = [p for p in prior.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.95))


def train_prior(
    prior,
    train_codes: torch.Tensor,
    eval_codes: torch.Tensor | None,
    args: LoopArguments,
    accelerator: Accelerator | None = None,
    hparams: dict | None = None,
) -> dict[str, float]:
    """Train `prior` (a `TokenPrior`) in place on token grids.

    Args:
        prior: the prior; its K and token shape must fit the codes.
        train_codes / eval_codes: codes `[N, *token_shape]` in [0, K) (see `vqtok.codes_from_dataset`);
            `eval_codes` None: no evaluation.
        args: the loop's options (`max_steps`, `batch_size` in sequences per process, learning rate,
            schedule, accumulation, clipping, precision, `eval_every`, `log_every`, checkpoints and
            `resume_from_checkpoint`, `seed`, ...).
        accelerator: one made by `make_accelerator(args)` (made here when None, and ended on return).
        hparams: the run configuration to record with the trackers.

    Returns:
        On the main process, `bits_per_token` of `eval_codes` after training (none without them),
        and on every process `sequences_per_second`, `train_seconds` and `skipped_steps`.
    """
    config = prior.config
    train_codes = check_codes(train_codes, config.codebook_size, config.token_shape, what="train_codes")
    if eval_codes is not None:
        check_codes(eval_codes, config.codebook_size, config.token_shape, what="eval_codes")
    owns_accelerator = accelerator is None
    accelerator = accelerator or make_accelerator(args)
    set_seed(args.seed)
    sequences = prior.layout.to_sequences(train_codes)
    update = Update("prior", prior, prior_optimizer(prior, args.learning_rate, args.weight_decay), _forward,
                    clip_parameters=list(prior.parameters()))
    state = start_training(accelerator, [update], args, hparams or {"training": vars(args)})
    model, scheduler = update.model, update.scheduler

    batches = training_batches(SampleStream(sequences, args.seed), state.samples_seen, args, accelerator, torch.stack)
    draws_per_step = args.batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    progress = tqdm(total=args.max_steps, initial=state.step, desc="training prior", disable=not accelerator.is_main_process)
    started, first_step = time.perf_counter(), state.step
    while state.step < args.max_steps:
        totals: dict[str, torch.Tensor] = {}
        skipped = optimization_step(accelerator, [update], batches, args, state.step,
                                    lambda outputs: add_step_values(totals, {"train/loss": outputs["prior"].loss}))
        state.step += 1
        count_skipped_step(state, skipped, args)
        state.samples_seen += draws_per_step
        progress.update(1)
        if state.step % args.log_every == 0 or state.step == args.max_steps:
            record = reduce_step_values(accelerator, totals, args.gradient_accumulation_steps)
            record["train/bits_per_token"] = record["train/loss"] / math.log(2)
            record.update({"train/lr": scheduler.get_last_lr()[0], "train/skipped_steps": state.skipped_steps,
                           "train/epoch": state.samples_seen / len(sequences)})
            progress.set_postfix(bits=f"{record['train/bits_per_token']:.3f}")
            accelerator.log(record, step=state.step)
        if eval_codes is not None and args.eval_every and state.step % args.eval_every == 0 and state.step < args.max_steps:
            _evaluate(accelerator, model, eval_codes, args, state.step)
        if args.checkpoint_every and state.step % args.checkpoint_every == 0:
            save_run_checkpoint(accelerator, [update], args, state.step)
    progress.close()
    seconds = time.perf_counter() - started
    results = _evaluate(accelerator, model, eval_codes, args, state.step) if eval_codes is not None else {}
    results["sequences_per_second"] = (state.step - first_step) * draws_per_step / seconds if seconds else math.nan
    results["train_seconds"] = seconds
    results["skipped_steps"] = state.skipped_steps
    finish_training(accelerator, owns_accelerator)
    return results


def _forward(model, context: StepContext):
    return model(input_ids=context.batch, labels=context.batch)


def _evaluate(accelerator: Accelerator, model, eval_codes: torch.Tensor, args: LoopArguments, step: int) -> dict:
    """Held-out bits per token on the main process (no collectives inside), the others waiting."""
    results: dict[str, float] = {}
    if accelerator.is_main_process:
        bits = accelerator.unwrap_model(model).bits_per_token(eval_codes, args.eval_batch_size)
        results = {"bits_per_token": bits}
        accelerator.log({"eval/bits_per_token": bits}, step=step)
    accelerator.wait_for_everyone()
    return results
