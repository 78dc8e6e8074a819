"""Schedules whose position is model state: the step counter is a registered buffer, so it is saved
with the weights and a resumed run continues where it stopped."""

from __future__ import annotations

import torch
from torch import nn


class TemperatureSchedule(nn.Module):
    """Exponentially decaying temperature with a floor: tau_j = max(tau_max * decay**j, tau_min).

    `j` is the `step` buffer (a long scalar), advanced by `advance()`. Quantizers call `advance()`
    once per training forward and never in eval mode, so evaluation does not move the schedule.

    Args:
        tau_max: temperature at step 0 (> 0).
        tau_min: floor of the temperature (> 0, at most `tau_max`).
        decay: factor per step, in (0, 1] (1 keeps `tau_max` for ever).
    """

    def __init__(self, tau_max: float = 2.0, tau_min: float = 0.5, decay: float = 0.999995):
        super().__init__()
        if not tau_max > 0:
            raise ValueError(f"tau_max must be > 0, got {tau_max}")
        if not 0 < tau_min <= tau_max:
            raise ValueError(f"tau_min must lie in (0, tau_max={tau_max}], got {tau_min}")
        if not 0 < decay <= 1:
            raise ValueError(f"decay must lie in (0, 1], got {decay}")
        self.tau_max = float(tau_max)
        self.tau_min = float(tau_min)
        self.decay = float(decay)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def value(self) -> float:
        """The temperature at the current step (computed in float64 on the host)."""
        return max(self.tau_max * self.decay ** int(self.step), self.tau_min)

    @torch.no_grad()
    def advance(self) -> None:
        """Move the schedule one step on."""
        self.step.add_(1)

    def extra_repr(self) -> str:
        return f"tau_max={self.tau_max}, tau_min={self.tau_min}, decay={self.decay}"
