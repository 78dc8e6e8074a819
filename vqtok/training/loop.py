"""What every training loop here shares: the `Accelerator` it runs on, its checkpointed state, the
start (prepare, resume, trackers), one training step over accumulated micro-batches, and the
reduction of logged values over processes. `trainer.train_tokenizer` and
`prior_trainer.train_prior` differ only in their batches, updates and evaluation.

A training step is a list of `Update`s, each a loss, the module it backpropagates into, an
optimizer, an LR schedule and a cadence: the tokenizer's (or the prior's) and those of the training
objectives with networks of their own (a discriminator). All are prepared by Accelerate, saved in
every checkpoint and restored on resume.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import ProjectConfiguration
from transformers import get_scheduler

from ..hub.loading import check_finite_weights
from ..parallel.launch import accelerator_options, check_launch
from ..validation import check_output_folder
from .arguments import LoopArguments
from .checkpoints import check_checkpoint_fits, resolve_checkpoint, save_checkpoint

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


@dataclass
class StepContext:
    """What an update's `compute` sees of one micro-batch.

    Attributes:
        batch: the micro-batch (on this process).
        step: optimizer steps done before this one.
        outputs: the outputs of the updates that ran before in this micro-batch, by name.
    """

    batch: Any
    step: int
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Update:
    """One optimizer's share of a training step.

    Attributes:
        name: names the update in logs and messages ("tokenizer", "discriminator", "prior").
        model: the module its loss backpropagates into.
        optimizer: the optimizer that steps its parameters (every parameter of its groups).
        compute: `compute(model, context) -> output`, the output having a scalar `loss`; called with
            `model` as Accelerate prepared it.
        lr_scheduler / warmup_steps: its LR schedule (a `transformers.get_scheduler` name) and warm-up,
            over the steps the update runs; None: the run's `training.lr_scheduler` / `warmup_steps`.
        scheduler: the LR scheduler `start_training` makes from them, stepped once per optimizer step
            that went through.
        every / start_step: the update runs on step s when s >= start_step and (s - start_step) is a
            multiple of `every`.
        clip_parameters: the parameters whose gradient norm is clipped (default: the optimizer's).
        state: objects with `state_dict` / `load_state_dict` saved in every checkpoint beside the model
            and the optimizer (state an objective keeps outside the network it trains).
    """

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    compute: Callable[[nn.Module, StepContext], Any]
    lr_scheduler: str | None = None
    warmup_steps: int | None = None
    every: int = 1
    start_step: int = 0
    clip_parameters: list[nn.Parameter] | None = None
    state: list[Any] = field(default_factory=list)
    scheduler: Any = field(default=None, init=False)

    def __post_init__(self):
        if not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"update {self.name!r}: `every` must be an int >= 1, got {self.every!r}")
        if not isinstance(self.start_step, int) or self.start_step < 0:
            raise ValueError(f"update {self.name!r}: `start_step` must be an int >= 0, got {self.start_step!r}")

    def is_due(self, step: int) -> bool:
        return step >= self.start_step and (step - self.start_step) % self.every == 0

    def due_steps(self, max_steps: int) -> int:
        """How many of the steps 0 .. max_steps-1 run this update (the length of its LR schedule)."""
        return max(0, -(-(max_steps - self.start_step) // self.every))

    @property
    def parameters(self) -> list[nn.Parameter]:
        """The parameters it trains: every parameter of its optimizer."""
        return [parameter for group in self.optimizer.param_groups for parameter in group["params"]]


def make_accelerator(args: LoopArguments) -> Accelerator:
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
    With `args.deterministic`, `use_deterministic_maths()` first.
    """
    if args.deterministic:
        use_deterministic_maths()
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


def use_deterministic_maths() -> None:
    """Make this process's maths repeatable on every device (what `training.deterministic` asks):
    deterministic algorithms (an op that has none warns, naming itself: then exactness is not
    promised), cuDNN's deterministic kernels without autotuning, fp32 matmuls and convolutions at
    full precision (no TF32), and the fixed cuBLAS workspace that deterministic cuBLAS needs
    (`CUBLAS_WORKSPACE_CONFIG`, unless already set)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    with warnings.catch_warnings():  # newer torch prefers its fp32_precision settings; the flag still holds
        warnings.simplefilter("ignore")
        torch.backends.cudnn.allow_tf32 = False


def start_training(accelerator: Accelerator, updates: list[Update], args: LoopArguments, hparams: dict) -> TrainerState:
    """Prepare a run: each update's LR scheduler (over the steps the update runs; the schedule of
    `args` where the update names none), one `accelerator.prepare` of every update's model and optimizer (the
    updates then hold the prepared ones), the schedulers, a fresh `TrainerState` and every update's
    extra `state` registered for checkpointing and restored from the checkpoint
    `args.resume_from_checkpoint` names (if any), and the trackers started with the flattened
    `hparams`. Returns the state; every model is in training mode.

    The schedulers are not prepared: Accelerate would step them once per process per step. fp16
    mixed precision takes one update only: Accelerate's one loss scaler unscales and updates for
    every optimizer at each optimizer's step."""
    names = [update.name for update in updates]
    if len(set(names)) != len(names):
        raise ValueError(f"the training updates must have distinct names, got {names}")
    if accelerator.scaler is not None and len(updates) > 1:
        raise ValueError(
            f"training.mixed_precision=fp16 supports one optimizer, but this run has {len(updates)} updates "
            f"({', '.join(names)}): use bf16 (or no mixed precision) with training objectives that train networks "
            "of their own"
        )
    if accelerator.is_main_process:
        check_output_folder(args.output_dir)
    for update in updates:
        warmup_steps = args.warmup_steps if update.warmup_steps is None else update.warmup_steps
        update.scheduler = get_scheduler(update.lr_scheduler or args.lr_scheduler, update.optimizer,
                                         num_warmup_steps=warmup_steps, num_training_steps=update.due_steps(args.max_steps))
    with warnings.catch_warnings():  # torch >= 2.13 renames the flag; accelerate passes the old name
        warnings.filterwarnings("ignore", message=".*broadcast_buffers.*deprecated", category=FutureWarning)
        prepared = accelerator.prepare(*[part for update in updates for part in (update.model, update.optimizer)])
    for index, update in enumerate(updates):
        update.model, update.optimizer = prepared[2 * index], prepared[2 * index + 1]
    state = TrainerState()
    loop_states = [updates[0].scheduler, state, *[update.scheduler for update in updates[1:]],
                   *[extra for update in updates for extra in update.state]]
    accelerator.register_for_checkpointing(*loop_states)
    checkpoint = resolve_checkpoint(args)
    if checkpoint is not None:
        check_checkpoint_fits(checkpoint, unwrapped_models(accelerator, updates), len(loop_states))
        accelerator.load_state(checkpoint)
        for index, update in enumerate(updates):  # Accelerate's names: model.safetensors, model_1.safetensors, ...
            weights = os.path.join(checkpoint, f"model{f'_{index}' if index else ''}.safetensors")
            check_finite_weights(accelerator.unwrap_model(update.model), checkpoint, weights,
                                 "resume from an earlier checkpoint (--resume_from_checkpoint FOLDER) or start afresh")
        accelerator.print(f"resumed from {checkpoint} at step {state.step}")
    elif args.resume_from_checkpoint:
        accelerator.print(f"no checkpoint under {args.output_dir}/checkpoints: starting from step 0")
    if accelerator.log_with and not accelerator.trackers:
        accelerator.init_trackers(TRACKER_PROJECT, config=flat_hparams(hparams))
    for update in updates:
        update.model.train()
    return state


def unwrapped_models(accelerator: Accelerator, updates: list[Update]) -> dict[str, nn.Module]:
    """Update name -> its model as the user built it (unwrapped from DDP / compilation), in order."""
    return {update.name: accelerator.unwrap_model(update.model) for update in updates}


def save_run_checkpoint(accelerator: Accelerator, updates: list[Update], args: LoopArguments, step: int) -> str:
    """`save_checkpoint` of this run's state at `step`, its models described in the marker."""
    return save_checkpoint(accelerator, args, step, models=unwrapped_models(accelerator, updates))


def optimization_step(
    accelerator: Accelerator,
    updates: list[Update],
    batches: Iterator,
    args: LoopArguments,
    step: int,
    record: Callable[[dict[str, Any]], None],
) -> bool:
    """One training step over `args.gradient_accumulation_steps` micro-batches. For each micro-batch
    every update due at `step` runs in turn: `compute` (seeing the outputs of those before it) and
    the backward of its loss, which reaches its own parameters only (the other updates'
    parameters are held back meanwhile); then `record(outputs by update name)` sums what is logged.
    After the last micro-batch each update clips its gradients at `args.max_grad_norm` and steps
    its optimizer and scheduler.

    An update whose loss is not finite on some process, or whose gradient norm is not (then on
    every process, since gradients are averaged), is skipped everywhere: gradients dropped, no
    optimizer or scheduler step. Under fp16 the loss scaler keeps its own say over non-finite
    gradients. Returns the names of the updates skipped (empty when every one went through)."""
    due = [update for update in updates if update.is_due(step)]
    not_finite = {update.name: torch.zeros((), device=accelerator.device) for update in due}
    skipped = dict.fromkeys(not_finite, False)
    for _ in range(args.gradient_accumulation_steps):
        context = StepContext(next(batches), step)
        with accelerator.accumulate(*[update.model for update in due]):
            for update in due:
                with _only_training(update, updates):
                    output = update.compute(update.model, context)
                    not_finite[update.name] = not_finite[update.name] + (~torch.isfinite(output.loss.detach())).float()
                    accelerator.backward(output.loss)
                context.outputs[update.name] = output
            for update in due:
                _optimizer_step(accelerator, update, args, not_finite[update.name], skipped)
        record(context.outputs)
    if not accelerator.sync_gradients:
        raise RuntimeError("gradient accumulation is out of step with the loop (accelerator.step was changed)")
    for update in due:
        if not skipped[update.name] and not update.optimizer.step_was_skipped:
            update.scheduler.step()
    return [name for name, was_skipped in skipped.items() if was_skipped]


def _optimizer_step(accelerator: Accelerator, update: Update, args: LoopArguments, loss_not_finite,
                    skipped: dict[str, bool]) -> None:
    """The optimizer step of `update` (a no-op between accumulated micro-batches), unless its loss or
    gradients were not finite (recorded in `skipped`)."""
    if accelerator.sync_gradients:
        parameters = update.clip_parameters if update.clip_parameters is not None else update.parameters
        skipped[update.name] = _step_is_bad(accelerator, parameters, args, loss_not_finite)
        if skipped[update.name] and accelerator.scaler is None:
            update.optimizer.zero_grad()  # the step is dropped: no optimizer.step, no moments moved
    if not (skipped[update.name] and accelerator.scaler is None):
        update.optimizer.step()  # under fp16 the scaler itself skips non-finite gradients
    update.optimizer.zero_grad()


@contextmanager
def _only_training(update: Update, updates: list[Update]):
    """Run the block with the parameters of every other update taking no gradient."""
    own = {id(parameter) for parameter in update.parameters}
    held = [parameter for other in updates if other is not update for parameter in other.parameters
            if parameter.requires_grad and id(parameter) not in own]
    for parameter in held:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in held:
            parameter.requires_grad_(True)


def _step_is_bad(accelerator: Accelerator, parameters: list, args: LoopArguments, loss_not_finite) -> bool:
    """Clip the gradients (when asked) and say, alike on every process, whether the step's loss on
    some process or (outside fp16, whose scaler judges gradients itself) the gradient norm is not finite."""
    bad = accelerator.reduce(loss_not_finite.reshape(1), reduction="sum")
    if args.max_grad_norm > 0 or accelerator.scaler is None:
        max_norm = args.max_grad_norm if args.max_grad_norm > 0 else math.inf
        norm = accelerator.clip_grad_norm_(parameters, max_norm)
        if accelerator.scaler is None:
            bad = bad + (~torch.isfinite(torch.as_tensor(norm, device=bad.device))).float()
    return bool(bad.sum() > 0)


def count_skipped_step(state: TrainerState, skipped: list[str], args: LoopArguments, updates: int = 1) -> None:
    """Count a step in which the updates `skipped` (names; of `updates` in the run) were skipped, in
    `state` with a warning, and raise once `args.max_consecutive_skipped_steps` steps in a row had a
    skipped update; a step in which every update went through resets the run of skips."""
    if not skipped:
        state.consecutive_skipped_steps = 0
        return
    state.skipped_steps += 1
    state.consecutive_skipped_steps += 1
    limit = args.max_consecutive_skipped_steps
    which = f" (updates skipped: {', '.join(skipped)})" if updates > 1 else ""
    message = (f"step {state.step} skipped{which}: the loss or the gradients were not finite (NaN or inf) on some "
               f"process; {state.consecutive_skipped_steps} in a row, {state.skipped_steps} in all")
    if state.consecutive_skipped_steps >= limit:
        raise FloatingPointError(
            f"{message}: stopping after {limit} skipped steps in a row (training.max_consecutive_skipped_steps). "
            "What a skipped update trains (weights, codebooks and quantizer state, an objective's network) is as "
            "its last good step left it; lower the learning rate, use bf16 instead of fp16, or look for "
            "non-finite inputs"
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
