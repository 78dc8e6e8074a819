"""The interface of a regulariser: an extra, named loss term computed from each forward of a
tokenizer, whatever its type, and switched on through the shared config.

A regulariser is an `nn.Module`, so any state it keeps (schedules, running statistics, counters)
lives in buffers that are saved with the weights and restored on resume. It may also draw figures
at each evaluation of training (`evaluation_images`), which the trainer saves and logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ..options import Configurable
from ..quantizers import Quantizer, QuantizerOutput


@dataclass
class RegularizerInputs:
    """What a regulariser sees of one tokenizer forward.

    Attributes:
        pixel_values: the input images `[B, C, H, W]`.
        latents: the encoder output z_e `[B, D, h, w]`.
        quantizer_output: the quantizer's training output (z_q, ids, its losses and statistics).
        reconstruction: the decoded images `[B, C, H, W]`.
        quantizer: the tokenizer's quantizer, to ask for (a sample of) its code vectors
            (`code_vectors`, `sampled_code_vectors`: differentiable where it learns them by gradient) and its K.
    """

    pixel_values: torch.Tensor
    latents: torch.Tensor
    quantizer_output: QuantizerOutput
    reconstruction: torch.Tensor
    quantizer: Quantizer


@dataclass
class RegularizerOutput:
    """Named loss terms (already weighted; summed into the tokenizer's loss) and named statistics."""

    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class Regularizer(Configurable, nn.Module):
    """Base class of regularisers.

    A subclass sets `name` (its key in `VQTokenizerConfig.regularizers`), declares its options in
    `options` (checked when a config switches it on and when it is built; `document_options` lists
    them in its docstring), takes them as keyword arguments, and implements
    `forward(inputs) -> RegularizerOutput`. Its loss names must not clash with the tokenizer's other
    terms (`<name>_loss` is a good choice).
    """

    name: ClassVar[str] = ""

    def forward(self, inputs: RegularizerInputs) -> RegularizerOutput:
        raise NotImplementedError

    def evaluation_images(self, model: nn.Module, output_dir: str, step: int) -> dict[str, str]:
        """PNGs drawn at each evaluation of training: tracker tag -> path written (none by default)."""
        return {}
