"""The interface of a training objective with networks of its own (a frozen perceptual network, a
discriminator): switched on in a run config's `objectives` section, never part of a tokenizer's
config or weights.

An objective can do two things, each optional:

- add named, weighted terms to the tokenizer's loss (`tokenizer_losses`), computed from the step's
  images and the tokenizer's forward output (the reconstruction, ...); and
- train networks of its own (`updates`): each `ObjectiveUpdate` names a module, the loss that
  trains it and its optimizer and schedule settings. The training loop prepares every such module
  and its optimizer with Accelerate, steps them beside the tokenizer's, and saves them in every
  checkpoint, with the objective's buffers (state it keeps outside those modules); its frozen
  networks' weights are not saved, and only the tokenizer is published.

Networks whose shape depends on the tokenizer (its image channels) are built in `setup(tokenizer)`,
which the trainer calls once before the first step.

Within one step the loop runs the tokenizer's update first, then each objective update that is
due; each update's backward reaches its own parameters only (the loop holds the others' gradients
back), so a discriminator that scores the reconstruction inside `tokenizer_losses` takes no
gradient from the tokenizer's loss. Inside `tokenizer_losses`, call the objective's own modules
(`self...`); an update's `loss` receives its module as Accelerate prepared it (wrapped for
several processes), which it must call so that gradients are averaged over processes.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import SchedulerType, get_scheduler

from ..options import Configurable, Option


def schedulers_run_from_steps() -> tuple[str, ...]:
    """The `transformers.get_scheduler` names that run from a warm-up and a step count alone, what the
    training loop gives them: each is built and stepped once on a throwaway optimizer, and those that
    need a metric or more arguments fail and are left out."""
    parameter, names = torch.nn.Parameter(torch.zeros(1)), []
    for kind in SchedulerType:
        optimizer = torch.optim.SGD([parameter], lr=1.0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # stepping a scheduler before its optimizer
                get_scheduler(kind.value, optimizer, num_warmup_steps=1, num_training_steps=2).step()
        except (TypeError, ValueError):
            continue
        names.append(kind.value)
    return tuple(names)


LR_SCHEDULERS = schedulers_run_from_steps()
# The LR schedule of an update, the tokenizer's (`training.lr_scheduler`) or an objective's.
LR_SCHEDULER = Option(str, choices=LR_SCHEDULERS)


@dataclass
class ObjectiveInputs:
    """What an objective sees of one training micro-batch.

    Attributes:
        pixel_values: the images `[B, C, H, W]` in [-1, 1].
        output: the tokenizer's training forward (`VQTokenizerOutput`: `reconstruction`, `losses`,
            `stats`, `input_ids`, `quantized`), whose `reconstruction` carries gradients to the
            tokenizer.
        tokenizer: the tokenizer itself (not wrapped for several processes), e.g. to reach its
            decoder's last layer (`tokenizer.decoder.last_layer`).
        step: optimizer steps done before this one.
    """

    pixel_values: torch.Tensor
    output: Any
    tokenizer: nn.Module
    step: int


@dataclass
class ObjectiveUpdate:
    """An optimizer update that an objective runs on a network of its own.

    Attributes:
        name: the update's name (unique within the run), e.g. "discriminator".
        module: the network it trains; every parameter that requires a gradient is optimised.
        loss: `loss(module, inputs) -> {name: weighted term}`, called with `module` as Accelerate
            prepared it; the terms are summed and logged by name.
        learning_rate / betas / weight_decay: its AdamW optimizer.
        lr_scheduler / warmup_steps: its learning-rate schedule (any `transformers.get_scheduler`
            name), over the steps the update runs.
        every: run on every `every`-th step only (>= 1).
        start_step: run from this step on (steps before it leave the module untouched).
    """

    name: str
    module: nn.Module
    loss: Callable[[nn.Module, ObjectiveInputs], dict[str, torch.Tensor]]
    learning_rate: float
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    every: int = 1
    start_step: int = 0


class TrainingObjective(Configurable, nn.Module):
    """Base class of training objectives.

    A subclass sets `name` (its key in the run config's `objectives` section), declares its options
    in `options` (checked when a run config switches it on and when it is built; `document_options`
    lists them in its docstring), takes them as keyword arguments, and implements `tokenizer_losses`
    and/or `updates`. Term names must not clash with the tokenizer's (`<name>_loss` is a good choice).
    """

    name: ClassVar[str] = ""

    reads_other_terms: bool = False
    """True for an objective whose `tokenizer_losses` reads the terms other objectives add (the
    adversarial objective's adaptive weight reads the perceptual term): it is built, and runs, after them."""

    def setup(self, tokenizer: nn.Module) -> None:
        """Build what depends on the tokenizer (its image channels, ...); called once by the trainer
        before the updates are made (nothing by default)."""

    def tokenizer_losses(self, inputs: ObjectiveInputs) -> dict[str, torch.Tensor]:
        """Named, weighted terms added to the tokenizer's loss for this micro-batch (none by default)."""
        return {}

    def updates(self) -> list[ObjectiveUpdate]:
        """The updates of the objective's own networks (none by default)."""
        return []
