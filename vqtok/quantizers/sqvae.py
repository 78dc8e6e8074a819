"""Stochastic quantization of SQ-VAE (Takida et al. 2022): what the Gaussian (variants I-IV, here)
and the von Mises-Fisher (`vmf_sqvae.py`) posteriors over the codes share, and the Gaussian one: a
Gumbel-softmax soft mixture of codes in training, the posterior's argmax at encode.

Both quantizers return two loss terms per training forward, each summed over a sample's positions
(and dimensions) and averaged over the batch, the units of the reference objective:

- `distortion_loss`, R: the Gaussian's sum (z - z~)^2 / (2 sigma^2), or the vMF's kappa * sum z.(z - z~),
  with z~ the vector handed to the decoder;
- `entropy_loss`: sum_k P log P, the negative entropy of the posterior P(k | z) (minimising it
  rewards a spread-out posterior early in training, while R pulls the posterior towards the
  latents' own codes).

The posterior sharpens as the learned variance falls (or kappa rises): the "self-annealing" the paper
reports. The variance (or kappa), the mean per-position entropy of P and the temperature are
returned as statistics.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..options import Option, POSITIVE, document_options
from ..parallel.collectives import all_reduce_sum_
from .base import ParameterGroup, Quantizer, QuantizerOutput
from .codebook import DEAD_CODE_OPTIONS, Codebook
from .functional import code_histogram, fp32_no_autocast, squared_distances, usage_stats
from .gumbel import soft_gumbel_softmax
from .kmeans import KMEANS_OPTIONS
from .schedules import TEMPERATURE_OPTIONS, TemperatureSchedule, check_temperature_order

VARIANCE_PARAMETERISATIONS = ("I", "II", "III", "IV")
# sigma^2 is clamped here before it is inverted (the reference's guard).
MIN_VARIANCE = 1e-10
# The head's log-variance l is kept in this range, so exp(l) neither overflows nor vanishes.
LOG_VARIANCE_RANGE = (-20.0, 20.0)


class StochasticQuantizer(Quantizer):
    """What the Gaussian and vMF SQ-VAE quantizers share: the learned codebook `[K, D]`, the
    temperature schedule, the soft Gumbel mixture in training, the argmax at encode and the loss
    terms. A subclass gives the logits, the code vectors the decoder sees and the distortion R.

    With `kmeans_init`, the first training forward first moves the codes onto k-means centres of
    its latents (rank 0's centres, broadcast to every process): codes drawn from N(0, I) as in the
    reference start far from the encoder's latents, and most are never chosen in a short run.
    With `dead_code_threshold` > 0, codes whose moving-average count per batch (of the codes the
    mixtures weight most, over all processes) falls below it move onto latents of the batch, as
    VQ's dead codes do: a code the posterior stops choosing gets no gradient and would stay unused.
    Neither is in the paper; both keep a short run's codebook in use.

    Training forward: w = softmax((logits + g) / tau), g ~ Gumbel(0, 1); the decoder gets the soft
    mixture z~ = w B (no hard sample); tau = max(tau_max * tau_decay**step, tau_min), the step a
    buffer advanced once per training forward. Eval forward and `select`: k = argmax logits and
    z~ = B[k]. The returned `indices` are the codes the mixture weights most (argmax of logits + g)
    in training, the argmax of the logits otherwise.
    """

    options = {
        **TEMPERATURE_OPTIONS,
        "tau_max": TEMPERATURE_OPTIONS["tau_max"].changed(1.0),
        "tau_min": TEMPERATURE_OPTIONS["tau_min"].changed(0.01),
        "tau_decay": TEMPERATURE_OPTIONS["tau_decay"].changed(math.exp(-1e-5), "The reference's schedule."),
        **KMEANS_OPTIONS,
        "kmeans_init": KMEANS_OPTIONS["kmeans_init"].changed(True, (
            "Not in the paper: the reference draws the codes from N(0, I), far from the latents, and leaves most "
            "unused in a short run. SQ-VAE clusters the latents as the posterior sees them."
        )),
        **DEAD_CODE_OPTIONS,
        "dead_code_threshold": DEAD_CODE_OPTIONS["dead_code_threshold"].changed(1.0, (
            "Not in the paper (0): SQ-VAE counts, per code, the batch's codes that the mixtures weight most."
        )),
        "quantizer_lr_multiplier": POSITIVE(10.0, (
            "The learning rate of the posterior's sharpness parameter (sigma^2's scalar s, or kappa's) relative to the "
            "training learning rate. Adam moves a parameter by about one learning rate per step, so at 1 (the paper) "
            "the posterior can sharpen only by a factor of about e^(steps x lr): fine for the paper's 100k+ steps, "
            "too slow for short runs."
        ), training_only=True),
    }
    option_rules = (check_temperature_order,)

    def __init__(self, codebook_size: int | None = None, dim: int | None = None, **options):
        super().__init__(codebook_size, dim, **options)
        self.codebook = Codebook(self.codebook_size, self.dim, initial="normal", track_usage=True)
        self.temperature = TemperatureSchedule(self.tau_max, self.tau_min, self.tau_decay)

    def parameter_groups(self) -> list[ParameterGroup]:
        """The parameter that sets the posterior's sharpness (`sharpness_parameter`), at
        `quantizer_lr_multiplier`."""
        return [ParameterGroup([self.sharpness_parameter], self.quantizer_lr_multiplier)]

    # --- to implement -------------------------------------------------------------------------
    @property
    def sharpness_parameter(self) -> nn.Parameter:
        """The learned scalar that sets the posterior's sharpness (the variance's s, or kappa's)."""
        raise NotImplementedError

    def latents_of(self, rows: torch.Tensor) -> torch.Tensor:
        """The fp32 rows `[N, D]` as the method's posterior sees them."""
        raise NotImplementedError

    def _posterior(self, rows: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """`(latents, logits [N, K], context)` for fp32 rows `[N, D]` of a batch of `batch_size`
        samples: the latents as the method sees them and whatever `_distortion` needs."""
        raise NotImplementedError

    def _distortion(self, latents: torch.Tensor, quantized: torch.Tensor, context: dict) -> torch.Tensor:
        """R summed over all rows and dimensions."""
        raise NotImplementedError

    # --- shared path --------------------------------------------------------------------------
    def _quantize(self, z_e: torch.Tensor) -> QuantizerOutput:
        rows, shape = self._to_rows(z_e)
        batch_size = shape[0]
        with fp32_no_autocast(z_e.device):
            self._initialize_if_needed(rows)
            latents, logits, context = self._posterior(rows.float(), batch_size)
            codes = self.code_vectors()
            stats = {}
            if self.training:
                tau = self.temperature.value()
                self.temperature.advance()
                weights, indices = soft_gumbel_softmax(logits, tau)
                quantized = weights @ codes
                stats["temperature"] = torch.tensor(tau, device=z_e.device)
            else:
                indices = logits.argmax(dim=1)
                quantized = codes[indices]
            log_probs = torch.log_softmax(logits, dim=1)
            negative_entropy = (log_probs.exp() * log_probs).sum()
            losses = {
                "distortion_loss": self._distortion(latents, quantized, context) / batch_size,
                "entropy_loss": negative_entropy / batch_size,
            }
            counts = code_histogram(indices, self.codebook_size)
            stats.update(usage_stats(counts))
            if self.training:
                stats["restarted_codes"] = self.codebook.restart_dead_codes(
                    latents.detach(), all_reduce_sum_(counts.clone()), self.dead_code_threshold
                )
            stats["quantization_entropy"] = -negative_entropy.detach() / rows.shape[0]
            stats.update(context.get("stats", {}))
        return QuantizerOutput(
            quantized=self._from_rows(quantized, shape).to(z_e.dtype),
            indices=self._ids_from_rows(indices, shape),
            losses=losses,
            stats=stats,
        )

    def needs_initialization(self) -> bool:
        return self.kmeans_init and not bool(self.codebook.initialized)

    @torch.no_grad()
    def initialize(self, rows: torch.Tensor) -> None:
        """The codes at k-means centres of the first batch's latents as the posterior sees them."""
        self.codebook.initialize(self.latents_of(rows), self.kmeans_iters)

    @torch.no_grad()
    def select(self, z_e: torch.Tensor) -> torch.Tensor:
        rows, shape = self._to_rows(z_e)
        with fp32_no_autocast(z_e.device):
            _, logits, _ = self._posterior(rows.float(), shape[0])
        return self._ids_from_rows(logits.argmax(dim=1), shape)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {self.temperature.extra_repr()}"


@document_options
class SQVAEQuantizer(StochasticQuantizer):
    """Gaussian stochastic quantizer of SQ-VAE, variance parameterisations I-IV.

    sigma^2 = exp(l) + exp(s), clamped at 1e-10, with s a learned scalar and l:
      I: 0; II: one value per sample; III: one per position; IV: one per element (diagonal).
    For II-IV, l comes from a log-variance head on the latents (a 1x1 linear map D -> D,
    zero-initialised so training starts from variant I's sigma^2), averaged over the sample's
    positions and dimensions (II), over dimensions (III), or kept per element (IV), and clamped to
    [-20, 20].
    logits_nk = -||z_n - b_k||^2 / (2 sigma_n^2) (I-III), -sum_j (z_nj - b_kj)^2 / (2 sigma_nj^2) (IV).
    R = sum (z - z~)^2 / (2 sigma^2).
    """

    options = {
        **StochasticQuantizer.options,
        "variance": Option(str, choices=VARIANCE_PARAMETERISATIONS)("I", (
            'Parameterisation of sigma^2: "I" one learned scalar; "II" one value per image, "III" one per token '
            'position, "IV" one per latent element, each from a log-variance head on the encoder\'s output plus '
            "the learned scalar."
        )),
        "variance_init": POSITIVE(1.0, (
            "exp(s) at initialisation (the reference uses 10 on MNIST, 20 on CIFAR-10 and CelebA; larger for larger D)."
        )),
        "latent_scale": POSITIVE(4.0, (
            "A fixed factor on the latents before quantization (the decoder receives codes at that scale). "
            "sigma^2 >= 1 in variant I, so the posterior can only be sharp once the latents spread over several "
            "units; the factor gets them there from the first step instead of after a long run (it is the same as "
            "scaling the encoder's last layer)."
        )),
    }

    def __init__(self, codebook_size: int | None = None, dim: int | None = None, **options):
        super().__init__(codebook_size, dim, **options)
        self.log_variance_scale = nn.Parameter(torch.tensor(math.log(self.variance_init)))
        if self.variance != "I":
            self.log_variance_head = nn.Linear(self.dim, self.dim)
            nn.init.zeros_(self.log_variance_head.weight)
            nn.init.zeros_(self.log_variance_head.bias)

    @property
    def sharpness_parameter(self) -> nn.Parameter:
        # The scalar s only: a faster-learning D x D head made variant IV's sigma^2 diverge.
        return self.log_variance_scale

    def log_variance(self, rows: torch.Tensor, batch_size: int) -> torch.Tensor:
        """l for fp32 rows `[N, D]`: shape `[1, 1]` (I), `[N, 1]` (II, III) or `[N, D]` (IV)."""
        if self.variance == "I":
            return rows.new_zeros(1, 1)
        head = self.log_variance_head
        log_variance = F.linear(rows, head.weight.float(), head.bias.float()).clamp(*LOG_VARIANCE_RANGE)
        if self.variance == "II":
            per_sample = log_variance.reshape(batch_size, -1).mean(dim=1, keepdim=True)
            return per_sample.repeat_interleave(rows.shape[0] // batch_size, dim=0)
        if self.variance == "III":
            return log_variance.mean(dim=1, keepdim=True)
        return log_variance

    def posterior_variance(self, rows: torch.Tensor, batch_size: int) -> torch.Tensor:
        """sigma^2 = exp(l) + exp(s), clamped at 1e-10; broadcastable against rows `[N, D]`."""
        variance = self.log_variance(rows, batch_size).exp() + self.log_variance_scale.float().exp()
        return variance.clamp_min(MIN_VARIANCE)

    def latents_of(self, rows):
        return rows * self.latent_scale

    def _posterior(self, rows, batch_size):
        rows = self.latents_of(rows)
        precision = 1.0 / self.posterior_variance(rows, batch_size)
        codes = self.codebook.weight.float()
        if self.variance == "IV":
            weighted_sq = (precision * rows.pow(2)).sum(dim=1, keepdim=True)
            distances = weighted_sq - 2.0 * (precision * rows) @ codes.t() + precision @ codes.pow(2).t()
        else:
            distances = precision * squared_distances(rows, codes)
        stats = {"variance": (1.0 / precision).mean().detach()}
        return rows, -0.5 * distances, {"precision": precision, "stats": stats}

    def _distortion(self, latents, quantized, context):
        return 0.5 * (context["precision"] * (latents - quantized).pow(2)).sum()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, variance={self.variance!r}"
