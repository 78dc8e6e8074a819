"""Gumbel-softmax vector quantizer (the vq-wav2vec baseline): a linear map to code logits, a hard
Gumbel-softmax sample with a straight-through gradient in training, the logits' argmax at encode."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..options import NON_NEGATIVE, POSITIVE, document_options
from .base import ParameterGroup, Quantizer, QuantizerOutput
from .codebook import Codebook
from .functional import code_histogram, perplexity_from_counts, usage_stats
from .kmeans import KMEANS_OPTIONS, posterior_spread
from .schedules import TEMPERATURE_OPTIONS, TemperatureSchedule, check_temperature_order


def hard_gumbel_softmax(
    logits: torch.Tensor, tau: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Straight-through Gumbel-softmax over the last dimension, in fp32.

    Draws g ~ Gumbel(0, 1), takes k = argmax(logits + g) and the soft sample
    s = softmax((logits + g) / tau). Returns `(y, k)` where `y` is exactly one-hot(k) in the forward
    pass (`one_hot + (s - sg s)`, and `s - s` is exactly 0) while its gradient is that of `s`.
    """
    soft, ids = soft_gumbel_softmax(logits, tau, generator)
    hard = torch.zeros_like(soft).scatter_(-1, ids.unsqueeze(-1), 1.0)
    return hard + (soft - soft.detach()), ids


def soft_gumbel_softmax(
    logits: torch.Tensor, tau: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gumbel-softmax sample over the last dimension, in fp32: `(softmax((logits + g) / tau), k)`
    with g ~ Gumbel(0, 1) and k = argmax(logits + g), the code the sample weights most."""
    perturbed = logits.float() - torch.empty_like(logits, dtype=torch.float32).exponential_(generator=generator).log()
    return torch.softmax(perturbed / tau, dim=-1), perturbed.argmax(dim=-1)


def gumbel_codebook_output(
    logits: torch.Tensor,
    codebook: torch.Tensor,
    temperature: TemperatureSchedule,
    diversity_weight: float,
    training: bool,
) -> QuantizerOutput:
    """The output of a quantizer that picks codes of `codebook` `[K, D]` by `logits` `[N, K]`.

    Eval: the logits' argmax, no noise. Training: a hard straight-through Gumbel-softmax sample y at
    the schedule's temperature (which then advances one step); z_q = C[k] + (y - sg y) C, exactly
    C[k] in value with the soft sample's gradient; diversity_loss = diversity_weight *
    (K - perplexity(mean_n softmax(logits_n))) / K when the weight is positive. Stats: usage, and in
    training `prob_perplexity` and `temperature`.
    """
    codebook_size = codebook.shape[0]
    if not training:
        indices = logits.argmax(dim=1)
        stats = usage_stats(code_histogram(indices, codebook_size))
        return QuantizerOutput(codebook[indices], indices, {}, stats)

    tau = temperature.value()
    temperature.advance()
    one_hot, indices = hard_gumbel_softmax(logits, tau)
    quantized = codebook[indices] + (one_hot - one_hot.detach()) @ codebook
    losses = {}
    with torch.set_grad_enabled(torch.is_grad_enabled() and diversity_weight > 0):
        prob_perplexity = perplexity_from_counts(torch.softmax(logits, dim=1).mean(dim=0))
    if diversity_weight > 0:
        losses["diversity_loss"] = diversity_weight * (codebook_size - prob_perplexity) / codebook_size
    stats = usage_stats(code_histogram(indices, codebook_size))
    stats["prob_perplexity"] = prob_perplexity.detach()
    stats["temperature"] = torch.tensor(tau, device=logits.device)
    return QuantizerOutput(quantized, indices, losses, stats)


# The option of a quantizer with the diversity loss of vq-wav2vec (0 in vq-wav2vec and HyperVQ).
DIVERSITY_OPTIONS = {
    "diversity_weight": NON_NEGATIVE(0.0, (
        "Weight of the diversity loss `(K - perplexity(batch-mean softmax of the logits)) / K`, which spreads the "
        "use over the codebook (0 leaves it out)."
    ), training_only=True),
}


@document_options
class GumbelQuantizer(Quantizer):
    """Gumbel-softmax vector quantizer.

    On rows z (fp32): logits = W z + b (a `Linear(D, K)`, applied in fp32).
    Training forward: (y, k) = hard Gumbel-softmax(logits, tau) (see `hard_gumbel_softmax`);
      the decoder gets z_q = y V with V the learned `[K, D]` table (the `codebook`), computed as
      V[k] + (y - sg y) V so its value is exactly V[k] while the gradient reaches the logits through
      the soft sample; tau = max(tau_max * tau_decay**step, tau_min), and `step` (a buffer of the
      `temperature` schedule) advances once per training forward.
      Optional diversity_loss = diversity_weight * (K - perplexity(mean_n softmax(logits_n))) / K.
    Eval forward and `select`: k = argmax logits (no noise); the schedule does not move.

    k-means initialisation (`kmeans_init`, on the first training batch): V <- the k-means centres
    c_k of the batch's rows, and the logit layer is set to W_k = 2 c_k / s, b_k = -||c_k||^2 / s, so
    that logits_k = (||z||^2 - ||z - c_k||^2) / s: the argmax is the nearest centre and
    softmax(logits) is proportional to exp(-||z - c_k||^2 / s), with s the mean squared distance of
    the batch's rows to their nearest centre (floored at 1e-6 of their mean squared norm). Rank 0's
    centres (and s) are broadcast, so every process starts alike. Without it: V ~ N(0, I) and
    PyTorch's default `Linear` initialisation.
    """

    options = {
        **TEMPERATURE_OPTIONS,
        "tau_decay": TEMPERATURE_OPTIONS["tau_decay"].changed(0.995, (
            "The default, 0.995, brings tau from 2 to its floor 0.5 in about 280 steps, a short run's length "
            "(vq-wav2vec's 0.999995 takes about 280k)."
        )),
        **DIVERSITY_OPTIONS,
        "diversity_weight": DIVERSITY_OPTIONS["diversity_weight"].changed(0.03, (
            "The default, 0.03, keeps the codes in use without flattening every vector's posterior (at 0.1 the "
            "decoder gets nearly random codes). It balances `quantizer_lr_multiplier`: with a fast logit layer and a "
            "small weight (0.01 or less) most codes fall out of use."
        )),
        **KMEANS_OPTIONS,
        "kmeans_init": KMEANS_OPTIONS["kmeans_init"].changed(True, (
            "Gumbel VQ also sets the logit layer to the Gaussian posterior around the centres, "
            "`logits_k = (||z||^2 - ||z - c_k||^2) / s` with `s` the mean squared distance to the nearest centre, so "
            "training starts from a posterior that already separates the codes."
        )),
        "quantizer_lr_multiplier": POSITIVE(30.0, (
            "The learning rate of the quantizer's parameters (logit layer and code table) relative to the training "
            "learning rate (no weight decay on them). The posterior sharpens only as fast as the logit layer moves; "
            "at the training learning rate (the reference, 1) it stays so flat in a short run that the decoder "
            "learns from nearly random codes."
        ), training_only=True),
    }
    option_rules = (check_temperature_order,)

    def __init__(self, codebook_size: int | None = None, dim: int | None = None, **options):
        super().__init__(codebook_size, dim, **options)
        self.to_logits = nn.Linear(self.dim, self.codebook_size)
        self.codebook = Codebook(self.codebook_size, self.dim, initial="normal")
        self.temperature = TemperatureSchedule(self.tau_max, self.tau_min, self.tau_decay)

    def parameter_groups(self) -> list[ParameterGroup]:
        return [ParameterGroup(list(self.parameters()), self.quantizer_lr_multiplier)]

    def logits(self, rows: torch.Tensor) -> torch.Tensor:
        """Code logits `[N, K]` in fp32 for rows `[N, D]`."""
        return F.linear(rows.float(), self.to_logits.weight.float(), self.to_logits.bias.float())

    def needs_initialization(self) -> bool:
        return self.kmeans_init and not bool(self.codebook.initialized)

    @torch.no_grad()
    def initialize(self, rows: torch.Tensor) -> None:
        """k-means centres of the first training batch as the code table, and the logit layer of the
        Gaussian posterior around them (see the class docstring); rank 0's values on every process."""
        self.codebook.initialize(rows, self.kmeans_iters)
        centres = self.codebook.weight.data
        variance = posterior_spread(rows, centres)
        self.to_logits.weight.data.copy_(2 * centres / variance)
        self.to_logits.bias.data.copy_(-centres.pow(2).sum(dim=1) / variance)

    def _select_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return self.logits(rows).argmax(dim=1)

    def _forward_rows(self, rows: torch.Tensor) -> QuantizerOutput:
        return gumbel_codebook_output(
            self.logits(rows), self.codebook.weight.float(), self.temperature, self.diversity_weight, self.training
        )
