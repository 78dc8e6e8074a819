"""Weight EMA: an exponential moving average of a model's trained parameters, the copy the field
publishes (LlamaGen's `--ema`, the LDM's `LitEma`, TiTok).

After each optimizer step that went through, every trained parameter's average moves towards it:
`average = d * average + (1 - d) * parameter`, with `d = min(decay, (1 + n) / (10 + n))` at the
n-th update, so that the first weights, far from trained, fade fast (the LDM's schedule). The
averages are kept in fp32. Everything else (frozen parameters, the quantizers' buffers: EMA codebook
statistics, usage, schedules) is not averaged: the averaged model takes them from the live one.
Every process updates from the same parameters, so the averages stay identical across processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["WeightEMA"]


class WeightEMA:
    """The moving average of the parameters of `model` that take a gradient.

    Args:
        model: the model as built (not wrapped by DDP).
        decay: the largest decay of an update, in [0, 1).
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0 <= decay < 1:
            raise ValueError(f"the decay of a weight EMA must lie in [0, 1), got {decay!r}")
        self.decay = decay
        self.updates = 0
        self.averages = {name: parameter.detach().float().clone()
                         for name, parameter in model.named_parameters() if parameter.requires_grad}

    @torch.no_grad()
    def restart(self, model: nn.Module) -> None:
        """Start the averages afresh from `model`'s parameters (a run's start: after the processes
        received the same weights)."""
        for name, parameter in self._parameters(model):
            self.averages[name] = parameter.detach().float().clone()
        self.updates = 0

    def current_decay(self) -> float:
        """The decay of the next update."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move every average towards the parameter it follows in `model`."""
        weight = 1.0 - self.current_decay()
        for name, parameter in self._parameters(model):
            average = self.averages[name]
            if average.device != parameter.device:
                average = self.averages[name] = average.to(parameter.device)
            average.lerp_(parameter.detach().float(), weight)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Put the averages into `model`'s parameters (in their dtype)."""
        for name, parameter in self._parameters(model):
            parameter.copy_(self.averages[name])

    @contextmanager
    def averaged(self, model: nn.Module) -> Iterator[nn.Module]:
        """`model` with the averaged parameters inside the block, its own ones restored after."""
        live = {name: parameter.detach().clone() for name, parameter in self._parameters(model)}
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, parameter in self._parameters(model):
                    parameter.copy_(live[name])

    def _parameters(self, model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
        parameters = dict(model.named_parameters())
        missing = sorted(set(self.averages) - set(parameters))
        if missing:
            raise ValueError(f"the weight EMA follows parameters this model lacks: {missing[:5]}")
        return ((name, parameters[name]) for name in self.averages)

    # --- checkpoints (a loop state, registered with Accelerate) -------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"updates": torch.tensor(self.updates),
                **{f"average.{name}": average.detach().cpu().clone() for name, average in self.averages.items()}}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        saved = {key[len("average."):] for key in state if key.startswith("average.")}
        if saved != set(self.averages):
            raise ValueError(
                f"the checkpoint's weight EMA follows other parameters than this run trains (only in the checkpoint: "
                f"{sorted(saved - set(self.averages))[:5]}, only in this run: {sorted(set(self.averages) - saved)[:5]}): "
                "resume with the training.freeze that wrote it"
            )
        self.updates = int(state["updates"])
        with torch.no_grad():
            for name, average in self.averages.items():
                average.copy_(state[f"average.{name}"])
