"""Schedules whose position is model state: the step counter is a registered buffer, so it is saved
with the weights and a resumed run continues where it stopped."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from ..options import NUMBER, POSITIVE, Option, check_options

# The options of an exponentially decaying temperature, shared by every quantizer that anneals one
# (with `check_temperature_order` among its option rules).
TEMPERATURE_OPTIONS = {
    "tau_max": POSITIVE(2.0, "Temperature at the first training step.", training_only=True),
    "tau_min": POSITIVE(0.5, "Floor of the temperature; must not exceed `tau_max`.", training_only=True),
    "tau_decay": Option(NUMBER, low=0, high=1, low_open=True)(0.995, (
        "delta: the temperature at training forward j is `max(tau_max * delta**j, tau_min)`; j is saved with "
        "the weights, so a resumed run continues the schedule."
    ), training_only=True),
}


def check_temperature_order(values: Mapping, where: str) -> None:
    """`tau_min` must not exceed `tau_max`."""
    if values["tau_min"] > values["tau_max"]:
        raise ValueError(f"{where} `tau_min` ({values['tau_min']}) must not exceed `tau_max` ({values['tau_max']})")


class TemperatureSchedule(nn.Module):
    """Exponentially decaying temperature with a floor: tau_j = max(tau_max * tau_decay**j, tau_min).

    `j` is the `step` buffer (a long scalar), advanced by `advance()`. Quantizers call `advance()`
    once per training forward and never in eval mode, so evaluation does not move the schedule.

    Args:
        tau_max: temperature at step 0 (> 0).
        tau_min: floor of the temperature (> 0, at most `tau_max`).
        tau_decay: factor per step, in (0, 1] (1 keeps `tau_max` for ever).
    """

    def __init__(self, tau_max: float, tau_min: float, tau_decay: float):
        super().__init__()
        values = dict(tau_max=tau_max, tau_min=tau_min, tau_decay=tau_decay)
        check_options(TEMPERATURE_OPTIONS, values, "TemperatureSchedule argument")
        check_temperature_order(values, "TemperatureSchedule argument")
        self.tau_max = float(tau_max)
        self.tau_min = float(tau_min)
        self.tau_decay = float(tau_decay)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def value(self) -> float:
        """The temperature at the current step (computed in float64 on the host)."""
        return max(self.tau_max * self.tau_decay ** int(self.step), self.tau_min)

    @torch.no_grad()
    def advance(self) -> None:
        """Move the schedule one step on."""
        self.step.add_(1)

    def extra_repr(self) -> str:
        return f"tau_max={self.tau_max}, tau_min={self.tau_min}, tau_decay={self.tau_decay}"
