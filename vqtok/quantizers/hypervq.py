"""HyperVQ (Goswami et al. 2024): vector quantization as hyperbolic multinomial logistic regression.

Latents are mapped onto the Poincaré ball, each code is a hyperbolic hyperplane (the HNN++
parameterisation: a normal a_k and a signed offset r_k), and the code logits are the scaled signed
distances to those hyperplanes. The decoder gets each hyperplane's representative point, mapped
back to the tangent space at the origin: C_k = r_k a_k / ||a_k||. The hyperbolic maths uses
geoopt's Poincaré-ball functions (imported when a HyperVQ quantizer first computes, so that
importing vqtok does not import geoopt) and always runs in fp32 with autocast disabled.
"""

from __future__ import annotations

import torch
from torch import nn

from ..options import POSITIVE, document_options
from .base import ParameterGroup, Quantizer, QuantizerOutput
from .gumbel import DIVERSITY_OPTIONS, gumbel_codebook_output
from .kmeans import KMEANS_OPTIONS, posterior_spread, shared_kmeans_codebook
from .schedules import TEMPERATURE_OPTIONS, TemperatureSchedule, check_temperature_order

# Floors of ||a_k|| and of the conformal term 1 - c||z_h||^2 (which geoopt's projection already keeps
# above about 8e-3 in fp32): they only guard against division by zero.
MIN_NORMAL_NORM = 1e-6
MIN_CONFORMAL = 1e-5


def poincare_ball():
    """geoopt's Poincaré-ball maths (`expmap0`, `logmap0`, `project`, ...), imported on first use."""
    from geoopt.manifolds.stereographic import math as poincare

    return poincare


@document_options
class HyperVQQuantizer(Quantizer):
    r"""HyperVQ quantizer: codes are hyperplanes of the Poincaré ball of curvature -c.

    On rows z (fp32):
      z_h = project(expmap0_c(z)), a point strictly inside the ball (c ||z_h||^2 < 1, geoopt keeps
        a margin of 4e-3 of the radius in fp32);
      logits (unidirectional hyperbolic MLR of HNN++, one `[N, D] x [D, K]` product plus elementwise
      maths on `[N, K]`):
        v_k = (2 ||a_k|| / sqrt(c)) asinh( [2 sqrt(c) <z_h, â_k> cosh(2 sqrt(c) r_k)
                                            - (1 + c ||z_h||^2) sinh(2 sqrt(c) r_k)] / (1 - c ||z_h||^2) ),
        â_k = a_k / ||a_k||: twice geoopt's signed, scaled `dist2plane(z_h, q_k, a_k)`, the distance to
        the hyperplane through q_k = expmap0_c(r_k â_k) orthogonal to a_k, times ||a_k||;
      codebook (decoder side): C_k = r_k â_k = logmap0_c(q_k).
    Training forward: (y, k) = hard Gumbel-softmax(v, tau) (`hard_gumbel_softmax`); the decoder gets
      z_q = C[k] + (y - sg y) C, whose value is exactly C[k] while the gradient reaches the logits (so
      a, r and z) through the soft sample, and a and r again through C[k]. tau follows the
      `temperature` schedule (its step is a buffer), advanced once per training forward.
      Optional diversity_loss = diversity_weight * (K - perplexity(mean_n softmax(v_n))) / K (as in
      `GumbelQuantizer`); with weight 0 there is no quantizer loss, as in the paper.
    Eval forward and `select`: k = argmax v, no noise; the schedule does not move.

    Curvature: expmap0_c saturates once sqrt(c) ||z|| passes about 3 (the point lands on the
    projection's boundary shell and only its direction survives, and codes with a larger ||a_k||
    win whole regions). Latents of norm ~3-10 therefore want c around 0.1 rather than the paper's 1;
    a smaller c is the same as scaling the latents down before the map.

    Initialisation: a_k ~ N(0, I_D / D) and r_k ~ N(0, init_radius_std^2). HNN++ initialises r = 0,
    which puts every hyperplane through the origin and makes every C_k = 0 (the decoder could not
    tell the codes apart); a small random radius keeps the codes distinct. With `kmeans_init` the
    first training batch then replaces this (see `initialize`); the `initialized` buffer records
    that it happened, so a resumed run never repeats it. HyperVQ's codes are its hyperplanes: it
    holds no code table (`code_vectors` computes C_k from a_k and r_k).
    """

    options = {
        **TEMPERATURE_OPTIONS,
        "tau_decay": TEMPERATURE_OPTIONS["tau_decay"].changed(0.995, (
            "The default reaches the floor at about step 280 (the paper: 0.999995, about 280k)."
        )),
        "curvature": POSITIVE(0.1, (
            "c > 0: the ball has curvature -c and radius 1 / sqrt(c). expmap0 saturates once sqrt(c) * ||z|| "
            "exceeds about 3, so latents of norm 3-10 want c around 0.1 (the paper: 1)."
        )),
        "init_radius_std": POSITIVE(0.1, (
            "Standard deviation of the random initial offsets r_k (before any k-means placement). HNN++ starts at "
            "r = 0, which would make every code vector C_k = 0; a small random radius keeps the codes distinct."
        )),
        **DIVERSITY_OPTIONS,
        "diversity_weight": DIVERSITY_OPTIONS["diversity_weight"].changed(0.03, (
            "Not in the paper (0, reconstruction only); without it a short run ends with a few dozen codes in use, "
            "with 0.05 the posterior flattens and the reconstruction suffers."
        )),
        **KMEANS_OPTIONS,
        "kmeans_init": KMEANS_OPTIONS["kmeans_init"].changed(True, (
            "HyperVQ places the hyperplanes: k-means on the latents' tangent vectors u_k = logmap0(z_h), then "
            "r_k = ||u_k|| / 2 and a_k = u_k / (2 s), s the mean squared distance to the nearest centre: hyperplane "
            "k is the perpendicular bisector of the origin and the centre's point on the ball, C_k = u_k / 2, and "
            "(for small c) the logits start as the Gaussian posterior around the centres. Not in the paper."
        )),
        "quantizer_lr_multiplier": POSITIVE(10.0, (
            "Learning rate of the hyperplanes (a, r) relative to the training learning rate (no weight decay on "
            "them). At 1 (the paper) they barely move in a short run while the encoder's latents drift away from "
            "them."
        ), training_only=True),
    }
    option_rules = (check_temperature_order,)

    def __init__(self, codebook_size: int | None = None, dim: int | None = None, **options):
        super().__init__(codebook_size, dim, **options)
        self.normals = nn.Parameter(torch.randn(self.codebook_size, self.dim) / self.dim**0.5)
        self.offsets = nn.Parameter(torch.randn(self.codebook_size) * self.init_radius_std)
        self.temperature = TemperatureSchedule(self.tau_max, self.tau_min, self.tau_decay)
        self.register_buffer("initialized", torch.tensor(False))

    def parameter_groups(self) -> list[ParameterGroup]:
        return [ParameterGroup([self.normals, self.offsets], self.quantizer_lr_multiplier)]

    # --- the geometry -------------------------------------------------------------------------
    def _curvature_tensor(self, like: torch.Tensor) -> torch.Tensor:
        # geoopt takes the sectional curvature k = -c as a tensor.
        return torch.tensor(-self.curvature, dtype=torch.float32, device=like.device)

    def to_ball(self, rows: torch.Tensor) -> torch.Tensor:
        """Points z_h = project(expmap0_c(z)) `[N, D]` (fp32), strictly inside the ball."""
        k = self._curvature_tensor(rows)
        poincare = poincare_ball()
        return poincare.project(poincare.expmap0(rows.float(), k=k), k=k)

    def _unit_normals(self, ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(â, ||a||) of the codes `ids` (all K when None), fp32."""
        normals = (self.normals if ids is None else self.normals[ids]).float()
        norms = normals.norm(dim=1).clamp_min(MIN_NORMAL_NORM)
        return normals / norms[:, None], norms

    def code_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder-side code vectors C_k = r_k â_k `[n, D]` (fp32) of the codes `ids` (all K when None):
        the codes are the hyperplanes, there is no table."""
        unit, _ = self._unit_normals(ids)
        offsets = self.offsets if ids is None else self.offsets[ids]
        return offsets.float()[:, None] * unit

    def logits(self, rows: torch.Tensor) -> torch.Tensor:
        """Code logits v `[N, K]` (fp32) for rows `[N, D]`: see the class docstring."""
        c = self.curvature
        sqrt_c = c**0.5
        points = self.to_ball(rows)
        unit, norms = self._unit_normals()
        twice_offsets = 2.0 * sqrt_c * self.offsets.float()
        sq_norms = points.pow(2).sum(dim=1, keepdim=True)
        # 2 sqrt(c) <z_h, â_k> cosh(2 sqrt(c) r_k) as one [N, D] x [D, K] product.
        along = points @ (unit * (2.0 * sqrt_c * torch.cosh(twice_offsets))[:, None]).t()
        across = (1.0 + c * sq_norms) * torch.sinh(twice_offsets)
        conformal = (1.0 - c * sq_norms).clamp_min(MIN_CONFORMAL)
        return (2.0 / sqrt_c) * norms * torch.asinh((along - across) / conformal)

    # --- initialisation -----------------------------------------------------------------------
    def needs_initialization(self) -> bool:
        return self.kmeans_init and not bool(self.initialized)

    @torch.no_grad()
    def initialize(self, rows: torch.Tensor) -> None:
        """Place the hyperplanes on the data (first training batch, with `kmeans_init`).

        The tangent vectors u = logmap0_c(z_h) of the rows are clustered by k-means (rank 0's
        centres and s broadcast); code k gets r_k = ||u_k|| / 2 and a_k = u_k / (2 s), with s the
        mean squared distance of the tangent vectors to their nearest centre. Hyperplane k is then
        the perpendicular bisector of the origin and expmap0_c(u_k), C_k = u_k / 2, and in the flat
        limit (small sqrt(c) ||u||) v_k = (||u||^2 - ||u - u_k||^2) / s: the argmax starts as the
        nearest centre and softmax(v) as the Gaussian posterior around the centres, so every code
        starts with data on its side instead of a few hyperplanes owning the whole batch.
        """
        k = self._curvature_tensor(rows)
        tangent = poincare_ball().logmap0(self.to_ball(rows), k=k)
        centres = shared_kmeans_codebook(tangent, self.codebook_size, self.kmeans_iters)
        variance = posterior_spread(tangent, centres)
        self.normals.copy_(centres / (2 * variance))
        self.offsets.copy_(centres.norm(dim=1) / 2)
        self.initialized.fill_(True)

    # --- the quantizer interface --------------------------------------------------------------
    def _select_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return self.logits(rows).argmax(dim=1)

    def _forward_rows(self, rows: torch.Tensor) -> QuantizerOutput:
        return gumbel_codebook_output(
            self.logits(rows), self.code_vectors(), self.temperature, self.diversity_weight, self.training
        )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, curvature={self.curvature}"
