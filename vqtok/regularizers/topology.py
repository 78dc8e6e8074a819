"""HC-VQ: the homology-constrained entropy regulariser, for any tokenizer type.

Switched on with `config.regularizers = {"topology": {...options}}`. Each training forward it
records two entropies of the batch (over all processes):

  H(z_q) = entropy of the batch's code histogram,   H(x) = entropy of its 256-bin pixel histogram,

and every `entropy_period` forwards refreshes the scale (it starts at 0)

  eta = |1 - mean H(z_q) / mean H(x)|   over the period (0 when mean H(x) is 0).

Every `compute_every` forwards after `warmup_steps` it computes the differentiable persistence of
a point cloud (the codebook by default, or the batch's distinct quantized vectors; at most
`max_points` of them, a seeded subsample) and adds

  topology_loss = weight * eta * [(beta1 - beta1*)^2 + epsilon_weight * (eps0 - eps0*)^2]

(see `vqtok.regularizers.persistence` for beta1 and eps0). Targets left at None are taken from the cloud's own
signature at the first computation after the warm-up, times `target_scale` for eps0: the term then
holds the codebook a little more spread (1.2x by default) than it was early in training instead of
dragging it to a constant chosen for another data set (the reference's 100 loops and eps0 = 0.5 at
weight 1e4 collapsed utilisation on a new data set). The defaults (weight 10, target_scale 1.2)
were chosen on SQ-VAE runs of the bundled set over four seeds; see the README.

Distributed training: the codebook is identical on every process, so the codebook cloud's
persistence is computed on identical inputs everywhere (no collective); the entropies are taken
from histograms summed over processes, and with the quantized-vector cloud (different per process)
derived targets and logged signatures are averaged over processes. Every buffer therefore stays
identical on every process. All maths runs in fp32 with autocast off.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import nn

from ..parallel.collectives import all_reduce_mean_, all_reduce_sum_
from ..options import FLAG, NON_NEGATIVE, NON_NEGATIVE_INT, NUMBER, POSITIVE, POSITIVE_INT, Option, document_options
from ..quantizers import sampled_code_vectors
from ..quantizers.functional import code_histogram, entropy_from_counts, seeded_subset_ids
from .persistence import persistence_bars, persistence_signature, save_persistence_diagram
from .base import Regularizer, RegularizerInputs, RegularizerOutput

PIXEL_BINS = 256
POINT_CLOUDS = ("codebook", "quantized")
# Below this mean input entropy (nats) eta's ratio is meaningless (a constant batch): eta = 0.
_MIN_INPUT_ENTROPY = 1e-6


def distinct_rows(rows: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """One row of `rows` `[N, D]` per distinct id in `ids` (`[N]`-shaped, or the R ids of each row with
    R codes per position: one row per distinct tuple), its first occurrence, in increasing id order."""
    ids = ids.reshape(rows.shape[0], -1)
    unique, inverse = torch.unique(ids, dim=0, return_inverse=True)
    positions = torch.arange(rows.shape[0], device=ids.device)
    first = torch.full((unique.shape[0],), rows.shape[0], dtype=torch.long, device=ids.device)
    first.scatter_reduce_(0, inverse, positions, reduce="amin")
    return rows[first]


@document_options
class TopologyRegularizer(Regularizer):
    """HC-VQ's topology term; see the module docstring for the maths."""

    name = "topology"
    options = {
        "enabled": FLAG(True, "False keeps the module (and its state) but adds nothing to the loss."),
        "weight": NON_NEGATIVE(10.0, "Overall weight of the term."),
        "epsilon_weight": NON_NEGATIVE(1e4, "lambda, the weight of the eps0 part against the beta1 part."),
        "betti_target": Option(NUMBER, low=0, optional=True)(None, (
            "beta1*; None takes the cloud's own beta1 after the warm-up."
        )),
        "epsilon_target": Option(NUMBER, low=0, optional=True)(None, (
            "eps0*; None takes the cloud's own eps0 after the warm-up, times `target_scale`."
        )),
        "target_scale": POSITIVE(1.2, "Factor on the derived eps0 target (> 1 asks for a more spread codebook)."),
        "width": POSITIVE(1e-3, "sigma of the narrow Gaussians of the soft beta1."),
        "entropy_period": POSITIVE_INT(50, "T, forwards between refreshes of eta."),
        "point_cloud": Option(str, choices=POINT_CLOUDS)("codebook", (
            '"codebook" (the quantizer\'s codes) or "quantized" (the batch\'s distinct quantized vectors).'
        )),
        "compute_every": POSITIVE_INT(4, "Forwards between persistence computations (the term is 0 in between)."),
        "warmup_steps": NON_NEGATIVE_INT(50, "Forwards before the first persistence computation."),
        "max_points": Option(int, low=3, optional=True)(512, (
            "Cap on the cloud's size (a seeded subsample above it; None: no cap)."
        )),
    }

    def __init__(self, **options):
        super().__init__()
        settings = self.options_with_defaults(options)
        # The targets are state (buffers, below), derived after the warm-up where not given.
        betti_target, epsilon_target = settings.pop("betti_target"), settings.pop("epsilon_target")
        for name, value in settings.items():
            setattr(self, name, value)
        entropy_period = self.entropy_period
        self._warned_no_gradient = False

        self.register_buffer("step", torch.tensor(0, dtype=torch.long))
        self.register_buffer("eta", torch.tensor(0.0))
        self.register_buffer("code_entropies", torch.zeros(entropy_period))
        self.register_buffer("input_entropies", torch.zeros(entropy_period))
        targets_given = betti_target is not None and epsilon_target is not None
        self.register_buffer("targets_set", torch.tensor(targets_given))
        self.register_buffer("betti_target", torch.tensor(float(betti_target or 0.0)))
        self.register_buffer("epsilon_target", torch.tensor(float(epsilon_target or 0.0)))
        self.derive_betti_target = betti_target is None
        self.derive_epsilon_target = epsilon_target is None
        # The latest signature, for logging between computations (and after a resume).
        self.register_buffer("betti1", torch.tensor(0.0))
        self.register_buffer("epsilon0", torch.tensor(0.0))
        self.register_buffer("h0_entropy", torch.tensor(0.0))
        self.register_buffer("h1_entropy", torch.tensor(0.0))

    # --- the pieces of one forward ------------------------------------------------------------
    @torch.no_grad()
    def record_entropies(self, inputs: RegularizerInputs) -> torch.Tensor:
        """Store this batch's H(z_q) and H(x) (histograms summed over processes) at the period's
        slot; returns H(z_q)."""
        codebook_size = inputs.quantizer.codebook_size
        codes = code_histogram(inputs.quantizer_output.indices, codebook_size).float()
        pixels = torch.histc(inputs.pixel_values.detach().float(), bins=PIXEL_BINS, min=-1.0, max=1.0)
        counts = all_reduce_sum_(torch.cat([codes, pixels.to(codes.device)]))
        code_entropy = entropy_from_counts(counts[:codebook_size])
        slot = int(self.step) % self.entropy_period
        self.code_entropies[slot] = code_entropy
        self.input_entropies[slot] = entropy_from_counts(counts[codebook_size:])
        return code_entropy

    @torch.no_grad()
    def refresh_eta(self) -> None:
        """eta = |1 - mean H(z_q) / mean H(x)| over the period just recorded (0 for a zero H(x))."""
        input_entropy = self.input_entropies.mean()
        if float(input_entropy) <= _MIN_INPUT_ENTROPY:
            self.eta.zero_()
        else:
            self.eta.copy_((1 - self.code_entropies.mean() / input_entropy).abs())

    def point_cloud_of(self, inputs: RegularizerInputs) -> torch.Tensor:
        """The cloud whose persistence the term constrains (fp32, at most `max_points` rows, a seeded
        choice)."""
        if self.point_cloud == "codebook":
            return sampled_code_vectors(inputs.quantizer, self.max_points, seed=int(self.step))
        quantized = inputs.quantizer_output.quantized
        rows = distinct_rows(quantized.movedim(1, -1).reshape(-1, quantized.shape[1]), inputs.quantizer_output.indices)
        return rows.float()[seeded_subset_ids(rows.shape[0], self.max_points, int(self.step)).to(rows.device)]

    def is_computation_step(self) -> bool:
        step = int(self.step)
        return step >= self.warmup_steps and step % self.compute_every == 0

    def forward(self, inputs: RegularizerInputs) -> RegularizerOutput:
        zero = inputs.latents.new_zeros((), dtype=torch.float32)
        if not self.enabled:
            return RegularizerOutput()
        with torch.autocast(device_type=inputs.latents.device.type, enabled=False):
            loss, code_entropy = zero, None
            if self.training:
                code_entropy = self.record_entropies(inputs)
            compute = self.is_computation_step() if self.training else bool(self.targets_set)
            cloud = self.point_cloud_of(inputs) if compute else None
            if cloud is not None and torch.isfinite(cloud).all():
                loss = self._term(cloud)
            if self.training:
                self.step += 1
                if int(self.step) % self.entropy_period == 0:
                    self.refresh_eta()
        stats = {
            "topology_betti1": self.betti1.clone(),
            "topology_epsilon0": self.epsilon0.clone(),
            "topology_eta": self.eta.clone(),
            "topology_h0_persistent_entropy": self.h0_entropy.clone(),
            "topology_h1_persistent_entropy": self.h1_entropy.clone(),
        }
        if code_entropy is not None:
            stats["codebook_entropy"] = code_entropy
        return RegularizerOutput(losses={"topology_loss": loss}, stats=stats)

    def _term(self, cloud: torch.Tensor) -> torch.Tensor:
        """weight * eta * [(beta1 - beta1*)^2 + lambda (eps0 - eps0*)^2] on `cloud`, updating the
        logged signature (and the derived targets, the first time) in training."""
        if self.training and not cloud.requires_grad and not self._warned_no_gradient:
            warnings.warn(
                f"the topology regulariser's {self.point_cloud} cloud takes no gradient (an EMA codebook?): "
                "the term cannot move it; use point_cloud='quantized' to reach the encoder instead",
                stacklevel=3,
            )
            self._warned_no_gradient = True
        signature = persistence_signature(persistence_bars(cloud), self.width)
        if self.training:
            self._record_signature(signature)
        betti_part = (signature.betti1 - self.betti_target).pow(2)
        epsilon_part = (signature.epsilon0 - self.epsilon_target).pow(2)
        return self.weight * self.eta * (betti_part + self.epsilon_weight * epsilon_part)

    @torch.no_grad()
    def _record_signature(self, signature) -> None:
        observed = torch.stack([signature.betti1, signature.epsilon0, signature.h0_entropy, signature.h1_entropy]).detach()
        if self.point_cloud == "quantized":  # each process saw its own batch
            all_reduce_mean_(observed)
        for buffer, value in zip((self.betti1, self.epsilon0, self.h0_entropy, self.h1_entropy), observed):
            buffer.copy_(value)
        if not bool(self.targets_set):
            if self.derive_betti_target:
                self.betti_target.copy_(observed[0])
            if self.derive_epsilon_target:
                self.epsilon_target.copy_(observed[1] * self.target_scale)
            self.targets_set.fill_(True)

    # --- diagnosis ----------------------------------------------------------------------------
    def evaluation_images(self, model: nn.Module, output_dir: str, step: int) -> dict[str, str]:
        """The persistence diagram of the codebook (at most `max_points` codes), as
        `<output_dir>/topology_step<step>.png`."""
        with torch.no_grad():
            bars = persistence_bars(sampled_code_vectors(model.quantizer, self.max_points, seed=0))
        path = os.path.join(output_dir, f"topology_step{step}.png")
        return {"eval/persistence_diagram": save_persistence_diagram(bars, path, f"codebook at step {step}")}
