"""What every training loop here shares: the `Accelerator` it runs on, its checkpointed state, the
start (prepare, resume, trackers), one optimizer step over accumulated micro-batches, and the
reduction of logged values over processes. `trainer.train_tokenizer` and
`prior_trainer.train_prior` differ only in their batches, forward and evaluation.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import ProjectConfiguration
from transformers import get_scheduler

from ..parallel.launch import accelerator_options, check_launch
from .arguments import TrainingArguments
from .checkpoints import resolve_checkpoint

TRACKER_PROJECT = "vqtok"


@dataclass
class TrainerState:
    """Loop state saved in every checkpoint (through `accelerator.register_for_checkpointing`).

    Attributes:
        step: optimizer steps done.
        samples_seen: draws consumed from the training stream, over all processes.
        skipped_steps: steps skipped because the loss or gradients were not finite.
        consecutive_skipped_steps: the current run of skipped steps.
    """

    step: int = 0
    samples_seen: int = 0
    skipped_steps: int = 0
    consecutive_skipped_steps: int = 0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.samples_seen = int(state["samples_seen"])
        # Checkpoints written before skipped steps were counted have no such entries.
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.consecutive_skipped_steps = int(state.get("consecutive_skipped_steps", 0))


def make_accelerator(args: TrainingArguments) -> Accelerator:
    """The `Accelerator` the loops expect: precision, accumulation and trackers from `args`.

    DDP is told not to broadcast buffers before every forward (`broadcast_buffers=False`): the
    quantizers keep their buffers identical on every process themselves (statistics are
    all-reduced, random re-initialisations broadcast; tests/test_distributed.py checks it), so a
    per-forward broadcast from rank 0 would cost a collective per step and mask a desynchronisation
    instead of exposing it. `train_tokenizer` broadcasts the buffers once from rank 0 at the start
    instead (that flag also keeps DDP from syncing them when it wraps the model).

    Processes started by a launcher (`torchrun --nproc_per_node N`, `accelerate launch --multi_gpu`)
    on a machine without a GPU are joined over gloo (`vqtok.parallel.launch.accelerator_options`: Accelerate
    would otherwise leave each alone); `vqtok.parallel.launch.check_launch` raises `RuntimeError` when the
    Accelerator still sees fewer processes than were launched (lone processes sharing `output_dir`).
    """
    accelerator = Accelerator(
        **accelerator_options(),
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=args.trackers or None,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")
        ),
        kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)],
    )
    check_launch(accelerator, args.output_dir)
    return accelerator


def start_training(accelerator: Accelerator, model, optimizer: torch.optim.Optimizer, args: TrainingArguments,
                   hparams: dict) -> tuple:
    """Prepare a run: the LR scheduler of `args`, `accelerator.prepare` of the model and optimizer,
    the scheduler and a fresh `TrainerState` registered for checkpointing and restored from the
    checkpoint `args.resume_from_checkpoint` names (if any), and the trackers started with the flattened
    `hparams`. Returns `(model, optimizer, scheduler, state)`; the model is in training mode.

    The scheduler is not prepared: Accelerate would step it once per process per step."""
    scheduler = get_scheduler(
        args.lr_scheduler, optimizer, num_warmup_steps=args.warmup_steps, num_training_steps=args.max_steps
    )
    with warnings.catch_warnings():  # torch >= 2.13 renames the flag; accelerate passes the old name
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*deprecated", category=FutureWarning)
        model, optimizer = accelerator.prepare(model, optimizer)
    state = TrainerState()
    accelerator.register_for_checkpointing(scheduler, state)
    checkpoint = resolve_checkpoint(args)
    if checkpoint is not None:
        accelerator.load_state(checkpoint)
        accelerator.print(f"resumed from {checkpoint} at step {state.step}")
    elif args.resume_from_checkpoint:
        accelerator.print(f"no checkpoint under {args.output_dir}/checkpoints: starting from step 0")
    if accelerator.log_with and not accelerator.trackers:
        accelerator.init_trackers(TRACKER_PROJECT, config=flat_hparams(hparams))
    model.train()
    return model, optimizer, scheduler, state


def optimization_step(
    accelerator: Accelerator,
    model,
    optimizer: torch.optim.Optimizer,
    scheduler,
    batches: Iterator,
    args: TrainingArguments,
    forward: Callable,
    record: Callable,
    parameters=None,
) -> bool:
    """One optimizer step over `args.gradient_accumulation_steps` micro-batches: `forward(model,
    batch)` (an output with a `loss`), backward, `record(output)` (to sum what is logged), gradient
    clipping at `args.max_grad_norm` (of `parameters`, default all the model's), the optimizer and
    scheduler steps.

    A step whose loss is not finite on some process, or whose gradient norm is not (then on every
    process, since gradients are averaged), is skipped everywhere: gradients dropped, no optimizer
    or scheduler step. Under fp16 the loss scaler keeps its own say over non-finite gradients. Returns
    True when the step was skipped."""
    parameters = list(parameters if parameters is not None else model.parameters())
    loss_not_finite = torch.zeros((), device=accelerator.device)
    skipped = False
    for _ in range(args.gradient_accumulation_steps):
        with accelerator.accumulate(model):
            output = forward(model, next(batches))
            loss_not_finite = loss_not_finite + (~torch.isfinite(output.loss.detach())).float()
            accelerator.backward(output.loss)
            if accelerator.sync_gradients:
                skipped = _step_is_bad(accelerator, parameters, args, loss_not_finite)
                if skipped and accelerator.scaler is None:
                    optimizer.zero_grad()  # the step is dropped: no optimizer.step, no moments moved
            if not (skipped and accelerator.scaler is None):
                optimizer.step()  # under fp16 the scaler itself skips non-finite gradients
            optimizer.zero_grad()
        record(output)
    if not accelerator.sync_gradients:
        raise RuntimeError("gradient accumulation is out of step with the loop (accelerator.step was changed)")
    if not skipped and not accelerator.optimizer_step_was_skipped:
        scheduler.step()
    return skipped


def _step_is_bad(accelerator: Accelerator, parameters: list, args: TrainingArguments, loss_not_finite) -> bool:
    """Clip the gradients (when asked) and say, alike on every process, whether the step's loss on
    some process or (outside fp16, whose scaler judges gradients itself) the gradient norm is not finite."""
    bad = accelerator.reduce(loss_not_finite.reshape(1), reduction="sum")
    if args.max_grad_norm > 0 or accelerator.scaler is None:
        max_norm = args.max_grad_norm if args.max_grad_norm > 0 else math.inf
        norm = accelerator.clip_grad_norm_(parameters, max_norm)
        if accelerator.scaler is None:
            bad = bad + (~torch.isfinite(torch.as_tensor(norm, device=bad.device))).float()
    return bool(bad.sum() > 0)


def count_skipped_step(state: TrainerState, skipped: bool, args: TrainingArguments) -> None:
    """Count a skipped step in `state` with a warning, and raise once `args.max_consecutive_skipped_steps`
    steps in a row were skipped; a step that went through resets the run of skips."""
    if not skipped:
        state.consecutive_skipped_steps = 0
        return
    state.skipped_steps += 1
    state.consecutive_skipped_steps += 1
    limit = args.max_consecutive_skipped_steps
    message = (f"step {state.step} skipped: the loss or the gradients were not finite (NaN or inf) on some "
               f"process; {state.consecutive_skipped_steps} in a row, {state.skipped_steps} in all")
    if state.consecutive_skipped_steps >= limit:
        raise FloatingPointError(
            f"{message}: stopping after {limit} skipped steps in a row (training.max_consecutive_skipped_steps). "
            "Weights, codebooks and quantizer state are those of the last good step; lower the learning rate, "
            "use bf16 instead of fp16, or look for non-finite inputs"
        )
    warnings.warn(message, RuntimeWarning, stacklevel=2)


def add_step_values(totals: dict, values: dict) -> None:
    """Add one micro-batch's named scalars (detached, on their device) to the step's `totals`."""
    for name, value in values.items():
        value = torch.as_tensor(value).detach().float().reshape(())
        totals[name] = totals[name] + value if name in totals else value


def reduce_step_values(accelerator: Accelerator, totals: dict, micro_batches: int) -> dict[str, float]:
    """Average the step's summed values over micro-batches and processes (a collective: call on
    every process)."""
    names = sorted(totals)
    stacked = torch.stack([totals[name].to(accelerator.device) for name in names]) / micro_batches
    return dict(zip(names, accelerator.reduce(stacked, reduction="mean").tolist()))


def flat_hparams(values: dict, prefix: str = "") -> dict:
    """Nested dict -> flat `{"a/b": scalar}` that every tracker accepts (others become strings)."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_hparams(value, f"{name}/"))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def finish_training(accelerator: Accelerator, owns_accelerator: bool) -> None:
    """Wait for every process; end the trackers when the loop made the accelerator."""
    accelerator.wait_for_everyone()
    if owns_accelerator:
        accelerator.end_training()
