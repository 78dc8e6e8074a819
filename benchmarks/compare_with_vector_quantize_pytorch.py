#!/usr/bin/env python
"""vqtok's modern quantizers against vector-quantize-pytorch's implementation of the same method.

For every method (`METHODS`) two rows are trained: vqtok's own type, and the same method from
vector-quantize-pytorch (vqp) wrapped as a tokenizer type registered by this script only
(`bench-vqp-<method>`, see `VQPytorchQuantizer`). Both rows use the quickstart's backbone, data
(the bundled sample set), training budget, seed and data order on CPU
(`compare_quantizers.row_run_config`, training/configs/quickstart.yaml), overriding only the type and
its fields; they differ in the quantizer alone. Then one table, per method and implementation:

  - held-out MSE and PSNR, codebook perplexity and the fraction of codes used (`evaluate_tokenizer`;
    for residual VQ the ids of all levels are counted together),
  - the median training step time (s; the first steps, which pay for k-means, left out),
  - peak memory: each row runs in a fresh Python process (`--one-row`), which reports its own peak
    resident set size (`ru_maxrss`); it covers the whole row (imports, data, training, the held-out
    evaluation and `compare_quantizers.run_row`'s encode-throughput and probe measurements), all of
    which are the same for the two rows of a method except the quantizer,
  - on the vqtok line: MSE vqtok / vqp and codes used vqtok - vqp (percentage points), and whether
    the target holds.

Target (printed per method as `holds` / `fails`; a miss does not change the exit status, only a row
that crashes does): vqtok uses at least as many codes as vqp, with a held-out MSE at most 5% above
vqp's.

The rows (K = 512 everywhere; D = 64 unless said):

  fsq         vqtok-fsq levels [8, 8, 8] (D = 3)          vqp FSQ(levels=[8, 8, 8], dim=3)
  lfq         vqtok-lfq D = 9 bits                        vqp LFQ(dim=9, codebook_size=512)
  bsq         vqtok-bsq D = 9 bits                        vqp LFQ(..., spherical=True)
  rvq         vqtok-rvq R = 4 levels                      vqp ResidualVQ(num_quantizers=4, ...)
  simvq       vqtok-simvq                                 vqp SimVQ(...)
  vq-rotation vqtok-vq rotation_trick=True (EMA, k-means) vqp VectorQuantize(rotation_trick=True, ...)
  ibq         vqtok-ibq                                   none: vqp has no index-backpropagation quantizer

Options matched, and the differences that remain (vqp 1.32.0):

  - LFQ / BSQ: commitment 0.25 (vqp `commitment_loss_weight`, default 0 there), entropy weight 0.1
    (MAGVIT-v2's and vqp's; vqtok's LFQ default is 0.05),
    diversity gamma 1.0, and the soft assignment's temperature 0.01 (vqp's `inv_temperature=100`, a
    forward argument). vqp forms the `[N, K]` code probabilities and clamps them at 1e-5 inside the
    logs; vqtok computes the same entropies exactly without that matrix. BSQ in vqp is `LFQ` with
    `spherical=True` (latents and codes l2-normalised, codes +-1/sqrt(D)). vqp numbers the codes
    with bit 0 most significant, vqtok least (irrelevant to the metrics).
  - FSQ: no options besides the levels; the same tanh bound and straight-through rounding on both
    sides (they draw no random numbers, so the two rows can train identically).
  - VQ with the rotation trick, and RVQ: EMA codebooks (decay 0.99, epsilon 1e-5), k-means on the
    first batch (10 iterations), commitment 0.25 (RVQ: summed over the levels, on both sides),
    dead-code restarts below 1. vqp's k-means starts from randomly sampled rows and its cluster
    sizes start at the last iteration's counts, zeros included; vqtok clamps them at 1 and starts its
    usage measure at the batch average. vqp finds dead codes by the EMA cluster size (decay 0.99)
    and gives a restarted code the threshold as its size; vqtok by a moving average of use with
    decay 0.9, and gives a restarted code max(N/K, 1). vqp's `VectorQuantize` (and so each level of
    its `ResidualVQ`) uses the rotation trick by default: the RVQ rows both pass straight through,
    without quantizer dropout.
  - SimVQ: on both sides a frozen N(0, 1/D) codebook through a learnt D x D linear map, straight
    through (vqp's default is the rotation trick, turned off here), codebook loss weight 1 and
    commitment 0.25 (vqp: `commitment_weight=1`, `input_to_quantize_commit_loss_weight=0.25`). vqtok's
    map has a bias (as the SimVQ reference code's), vqp's has none.
  - Initial weights: the seed is the same and the encoder is built before the quantizer, so it starts
    identical; the decoder does too where both quantizers draw the same random numbers when they are
    built (FSQ, LFQ, BSQ: none), not for SimVQ (vqtok's map has a bias), VQ and
    RVQ (vqtok draws an initial table that k-means then replaces, vqp starts from zeros).

A side that cannot run is listed with the reason instead of numbers: a vqtok type that is not
registered (yet), a field the type does not take, vqp not installed, or a vqp class or argument that
this vqp version lacks.

    python benchmarks/compare_with_vector_quantize_pytorch.py [--methods fsq vq-rotation ...]
        [--steps 300] [--eval_every 25] [--seed 0] [--output_dir outputs/compare_with_vqp]

Writes `<output_dir>/table.md`, `results.json` (settings, rows with their curves and step times,
the comparisons) and `curves.png` (held-out perplexity and MSE over training, every row). Needs
vector-quantize-pytorch (`pip install -e .[bench]`) and, for `compare_quantizers.run_row`'s probe
and the plot, scikit-learn and matplotlib (`.[dev]`).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import inspect
import json
import math
import os
import resource
import subprocess
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_quantizers  # noqa: E402

from vqtok import VQTokenizerConfig, VQTokenizerPreTrainedModel, register_tokenizer  # noqa: E402
from vqtok.auto import TOKENIZER_REGISTRY, registered_config_class  # noqa: E402
from vqtok.options import Option  # noqa: E402
from vqtok.quantizers import CodeSpace, Quantizer, QuantizerOutput, code_histogram, usage_stats  # noqa: E402
from vqtok.quantizers.base import fixed_size  # noqa: E402
from vqtok.training.run_config import load_run_config  # noqa: E402

VQP_PACKAGE = "vector_quantize_pytorch"
VQP_DISTRIBUTION = "vector-quantize-pytorch"
MSE_TOLERANCE = 1.05  # vqtok's held-out MSE x vqp's, at most
SIDES = ("vqtok", "vqp")
ROW_RESULT = "row.json"


# --- vector-quantize-pytorch behind vqtok's quantizer interface ---------------------------------



class VQPytorchQuantizer(Quantizer):
    """A vector-quantize-pytorch module (`inner`, built from `vqp_options`) as a vqtok quantizer.

    Rows `[N, D]` go in as one sequence `[1, N, D]` (vqp's channel-last layout). The training forward
    returns vqp's output and ids, its auxiliary loss (all its terms, already weighted by vqp, summed)
    as the one term `vqp_aux_loss`, and vqtok's usage statistics of the ids. `select` runs the
    module in eval mode (no EMA update, no dead-code restart, no entropy loss). Subclasses name the
    vqp class (`vqp_class`), say how K and R follow from the options, and how ids become vectors.
    """

    vqp_class: ClassVar[str] = ""
    forward_options: ClassVar[tuple[str, ...]] = ()
    """Keys of `vqp_options` that vqp takes as forward arguments instead of constructor arguments."""
    options = {
        "vqp_options": Option(dict, optional=True)(None, (
            "Keyword arguments of the vector-quantize-pytorch class besides `dim` (and `codebook_size` where it "
            "takes one), plus its forward arguments listed in `forward_options`."
        )),
    }

    def __init__(self, codebook_size: int | None = None, dim: int | None = None, **options):
        super().__init__(codebook_size, dim, **options)
        self.vqp_options = dict(self.vqp_options or {})
        constructor = {k: v for k, v in self.vqp_options.items() if k not in self.forward_options}
        self.forward_kwargs = {k: v for k, v in self.vqp_options.items() if k in self.forward_options}
        vqp_class = getattr(importlib.import_module(VQP_PACKAGE), self.vqp_class)
        self.inner = vqp_class(**self.constructor_kwargs(self.dim, self.codebook_size, constructor))
        if int(self.inner.codebook_size) != self.codebook_size:
            raise ValueError(f"{self.vqp_class} has {self.inner.codebook_size} codes, the config {self.codebook_size}")

    def constructor_kwargs(self, dim: int, codebook_size: int, options: dict) -> dict:
        """The vqp class's keyword arguments: `dim`, `codebook_size` and the options."""
        return {"dim": dim, "codebook_size": codebook_size, **options}

    def decode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """vqp's vectors `[n, D]` of ids `[n]` (level 0's for several codes per position)."""
        return self.inner.indices_to_codes(ids)

    def code_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        if ids is None:
            ids = torch.arange(self.codebook_size, device=next(self.inner.buffers()).device)
        return self.decode_ids(ids).float()

    def _forward_rows(self, rows: torch.Tensor) -> QuantizerOutput:
        out = self.inner(rows[None], **self.forward_kwargs)
        quantized, ids = out[0][0], out[1][0].long()
        losses = {"vqp_aux_loss": out[2].sum()} if len(out) > 2 else {}
        return QuantizerOutput(quantized, ids, losses, usage_stats(code_histogram(ids, self.codebook_size)))

    @torch.no_grad()
    def _select_rows(self, rows: torch.Tensor) -> torch.Tensor:
        was_training = self.inner.training
        self.inner.eval()  # vqp updates its EMA statistics in train mode
        try:
            return self.inner(rows[None], **self.forward_kwargs)[1][0].long()
        finally:
            self.inner.train(was_training)


class VQPFSQ(VQPytorchQuantizer):
    """vqp's `FSQ`; K = prod(levels)."""

    vqp_class = "FSQ"

    @classmethod
    def code_space(
        cls, options: Mapping[str, Any], codebook_size: int | None, dim: int | None, where: str
    ) -> CodeSpace:
        levels = (options["vqp_options"] or {}).get("levels", [])
        space = super().code_space(options, codebook_size, dim, where)
        if not levels:
            return space
        return replace(space, codebook_size=fixed_size("`codebook_size`", codebook_size, math.prod(levels),
                                                       f"the {math.prod(levels)} codes of levels {levels}", where))

    def constructor_kwargs(self, dim: int, codebook_size: int, options: dict) -> dict:
        return {"dim": dim, **options}


class VQPLFQ(VQPytorchQuantizer):
    """vqp's `LFQ` (BSQ with `spherical=True`); K = 2^D; `inv_temperature` is a forward argument."""

    vqp_class = "LFQ"
    forward_options = ("inv_temperature",)

    @classmethod
    def code_space(
        cls, options: Mapping[str, Any], codebook_size: int | None, dim: int | None, where: str
    ) -> CodeSpace:
        space = super().code_space(options, None, dim, where)
        return replace(space, codebook_size=fixed_size("`codebook_size`", codebook_size, 2**space.dim,
                                                       f"the {2**space.dim} codes of {space.dim} bits", where))


class VQPVectorQuantize(VQPytorchQuantizer):
    """vqp's `VectorQuantize`."""

    vqp_class = "VectorQuantize"

    def decode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.inner.get_output_from_indices(ids)


class VQPResidualVQ(VQPytorchQuantizer):
    """vqp's `ResidualVQ`; R = `num_quantizers`, the decoder gets the sum of the levels' codes."""

    vqp_class = "ResidualVQ"

    @classmethod
    def code_space(
        cls, options: Mapping[str, Any], codebook_size: int | None, dim: int | None, where: str
    ) -> CodeSpace:
        depth = (options["vqp_options"] or {}).get("num_quantizers", 1)
        return replace(super().code_space(options, codebook_size, dim, where), codes_per_position=depth)

    def decode_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return self.inner.layers[0].get_output_from_indices(ids)

    def _embed_rows(self, ids: torch.Tensor) -> torch.Tensor:
        return self.inner.get_output_from_indices(ids[None])[0].float()


class VQPSimVQ(VQPytorchQuantizer):
    """vqp's `SimVQ`."""

    vqp_class = "SimVQ"


def register_vqp_type(method: str, quantizer_class: type[VQPytorchQuantizer]) -> str:
    """Register the tokenizer type `bench-vqp-<method>` with `quantizer_class`; returns its model_type."""
    model_type = f"bench-vqp-{method}"
    name = "VQP" + "".join(part.capitalize() for part in method.split("-"))
    config_class = type(f"{name}Config", (VQTokenizerConfig,), {
        "__doc__": f"Benchmark-only type: vector-quantize-pytorch's {quantizer_class.vqp_class} ({method}).",
        "model_type": model_type,
    }, quantizer=quantizer_class)
    register_tokenizer(type(f"{name}Model", (VQTokenizerPreTrainedModel,), {"config_class": config_class}))
    return model_type


VQP_TYPES = {
    method: register_vqp_type(method, quantizer_class)
    for method, quantizer_class in (
        ("fsq", VQPFSQ), ("lfq", VQPLFQ), ("bsq", VQPLFQ), ("rvq", VQPResidualVQ), ("simvq", VQPSimVQ),
        ("vq", VQPVectorQuantize),
    )
}


# --- the rows -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    """One method's two rows: (model_type, config fields over the quickstart's) per implementation;
    `vqp` None with the reason in `no_vqp` where vector-quantize-pytorch has no counterpart."""

    vqtok: tuple[str, dict]
    vqp: tuple[str, dict] | None
    no_vqp: str = ""

    def side(self, side: str) -> tuple[str, dict] | None:
        """(model_type, fields) of implementation `side` ("vqtok" or "vqp"), or None."""
        return getattr(self, side)


# LFQ / BSQ: vqtok's fields and the same settings under vqp's names (tau = 1 / inv_temperature).
BINARY = {"latent_dim": 9, "commitment_cost": 0.25, "entropy_weight": 0.1, "diversity_gamma": 1.0, "entropy_temperature": 0.01}
VQP_BINARY = {"commitment_loss_weight": 0.25, "entropy_loss_weight": 0.1, "diversity_gamma": 1.0, "inv_temperature": 100.0}
# vqtok's VQ defaults (EMA decay 0.99, k-means init, dead codes below 1, commitment 0.25) under vqp's names;
# vqp's `eps` default is vqtok's `ema_epsilon`, 1e-5.
VQP_EMA_VQ = {"kmeans_init": True, "kmeans_iters": 10, "decay": 0.99, "threshold_ema_dead_code": 1,
              "commitment_weight": 0.25}

METHODS = {
    "fsq": Method(("vqtok-fsq", {"latent_dim": 3, "levels": [8, 8, 8]}),
                  (VQP_TYPES["fsq"], {"latent_dim": 3, "vqp_options": {"levels": [8, 8, 8]}})),
    "lfq": Method(("vqtok-lfq", BINARY), (VQP_TYPES["lfq"], {"latent_dim": 9, "vqp_options": VQP_BINARY})),
    "bsq": Method(("vqtok-bsq", BINARY),
                  (VQP_TYPES["bsq"], {"latent_dim": 9, "vqp_options": {**VQP_BINARY, "spherical": True}})),
    "rvq": Method(("vqtok-rvq", {"num_quantizers": 4, "quantizer_dropout": 0.0, "rotation_trick": False}),
                  (VQP_TYPES["rvq"], {"vqp_options": {"num_quantizers": 4, "rotation_trick": False, **VQP_EMA_VQ}})),
    "simvq": Method(("vqtok-simvq", {"commitment_cost": 0.25, "rotation_trick": False}),
                    (VQP_TYPES["simvq"], {"vqp_options": {"rotation_trick": False, "commitment_weight": 1.0,
                                                          "input_to_quantize_commit_loss_weight": 0.25}})),
    "vq-rotation": Method(("vqtok-vq", {"rotation_trick": True}),
                          (VQP_TYPES["vq"], {"vqp_options": {"rotation_trick": True, **VQP_EMA_VQ}})),
    "ibq": Method(("vqtok-ibq", {}), None,
                  "no counterpart in vector-quantize-pytorch (no index-backpropagation quantizer)"),
}


def row_name(method: str, side: str) -> str:
    """The row of `method` by implementation `side`: `fsq-vqtok`, `fsq-vqp`, ..."""
    return f"{method}-{side}"


def all_rows() -> dict[str, tuple[str, str, tuple[str, dict] | None]]:
    """Row name -> (method, side, (model_type, fields) or None), methods in `METHODS` order."""
    return {row_name(m, s): (m, s, method.side(s)) for m, method in METHODS.items() for s in SIDES}


def vqp_version() -> str | None:
    """The installed vector-quantize-pytorch version, or None."""
    try:
        return importlib.metadata.version(VQP_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def vqp_unavailable(quantizer_class: type, fields: dict) -> str | None:
    """Why the installed vqp cannot run this wrapped row (not installed, no such class, or a
    constructor argument it does not take), or None."""
    version = vqp_version()
    if version is None:
        return f"{VQP_DISTRIBUTION} is not installed (pip install -e '.[bench]')"
    vqp_class = getattr(importlib.import_module(VQP_PACKAGE), quantizer_class.vqp_class, None)
    if vqp_class is None:
        return f"{VQP_DISTRIBUTION} {version} has no {quantizer_class.vqp_class}"
    parameters = inspect.signature(vqp_class).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    options = fields.get("vqp_options") or {}
    unknown = [k for k in options if k not in parameters and k not in quantizer_class.forward_options]
    return f"{quantizer_class.vqp_class} of {VQP_DISTRIBUTION} {version} takes no {', '.join(unknown)}" if unknown else None


def unavailable(method: str, side: str) -> str | None:
    """Why row (`method`, `side`) cannot run, or None: no counterpart, a type that is not registered,
    fields its config does not declare, or (wrapped types) what the installed vqp lacks."""
    spec = METHODS[method].side(side)
    if spec is None:
        return METHODS[method].no_vqp
    model_type, fields = spec
    if model_type not in TOKENIZER_REGISTRY:
        return f"{model_type} not registered"
    config_class = registered_config_class(model_type)
    undeclared = [k for k in fields if k not in config_class.declared_options()]
    if undeclared:
        return f"{model_type} has no option {', '.join(undeclared)}"
    if issubclass(config_class.quantizer_class or object, VQPytorchQuantizer):
        return vqp_unavailable(config_class.quantizer_class, fields)
    return None


# --- one row per process ---------------------------------------------------------------------------
def peak_rss_mib() -> float:
    """This process's peak resident set size so far, MiB (`ru_maxrss`: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**20 if sys.platform == "darwin" else 2**10)


def row_path(args: argparse.Namespace, name: str) -> str:
    """Where row `name`'s process writes its result."""
    return os.path.join(args.output_dir, "runs", name, ROW_RESULT)


def run_one_row(name: str, args: argparse.Namespace) -> int:
    """`--one-row`: train row `name` in this process (`compare_quantizers.run_row`) and write its
    result, with this process's peak RSS, to `<output_dir>/runs/<name>/row.json`; 1 if it failed."""
    method, side, (model_type, fields) = all_rows()[name]
    result: dict[str, Any] = {"method": method, "implementation": side, "model_type": model_type, "fields": fields}
    try:
        quickstart = load_run_config(compare_quantizers.QUICKSTART).model
        probe_set = compare_quantizers.digits_probe_set(quickstart.image_size, quickstart.in_channels)
        result["rss_mib_before_row"] = peak_rss_mib()
        result.update(compare_quantizers.run_row(name, model_type, fields, args, probe_set))
        result["peak_rss_mib"] = peak_rss_mib()
    except Exception:  # noqa: BLE001 - reported in the row's result and by the exit status
        result["error"] = traceback.format_exc()
        print(result["error"], file=sys.stderr, flush=True)
    os.makedirs(os.path.dirname(row_path(args, name)), exist_ok=True)
    with open(row_path(args, name), "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    return 1 if "error" in result else 0


def run_row_in_subprocess(name: str, args: argparse.Namespace) -> dict:
    """Run row `name` in a fresh Python process (`--one-row`) and return its result."""
    path = row_path(args, name)
    if os.path.exists(path):
        os.remove(path)
    command = [sys.executable, os.path.abspath(__file__), "--one-row", name, "--steps", str(args.steps),
               "--eval_every", str(args.eval_every), "--seed", str(args.seed), "--output_dir", args.output_dir]
    status = subprocess.run(command, check=False).returncode
    if not os.path.exists(path):
        return {"error": f"the row's process ended with status {status} without writing {path}"}
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


# --- comparison and report -------------------------------------------------------------------------
def compare(vqtok_row: dict, vqp_row: dict) -> dict:
    """MSE vqtok / vqp, codes used vqtok - vqp and the target's verdict (`holds`, `fails` or
    `not checked` with the reason when a side has no numbers)."""
    for side, row in zip(SIDES, (vqtok_row, vqp_row)):
        if "skipped" in row or "error" in row:
            reason = row.get("skipped") or "failed"
            return {"verdict": "not checked", "reason": f"{side}: {reason}"}
    mse_ratio = vqtok_row["mse"] / vqp_row["mse"]
    used_difference = vqtok_row["codes_used"] - vqp_row["codes_used"]
    holds = used_difference >= 0 and mse_ratio <= MSE_TOLERANCE
    return {"verdict": "holds" if holds else "fails", "mse_ratio": mse_ratio, "codes_used_difference": used_difference}


def markdown_table(results: dict[str, dict], comparisons: dict[str, dict]) -> str:
    """Two lines per method (vqtok, vqp); the comparison columns on the vqtok line."""
    lines = [
        "| method | implementation | MSE | PSNR dB | perplexity | codes used | step s | peak RSS MiB "
        "| MSE vqtok/vqp | codes used vqtok−vqp | target |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for method, comparison in comparisons.items():
        for side in SIDES:
            r = results[row_name(method, side)]
            cells = [method, side]
            if "skipped" in r or "error" in r:
                reason = r.get("skipped") or "failed: " + r["error"].strip().splitlines()[-1][:80]
                cells += [reason.replace("|", "/")] + [""] * 5
            else:
                cells += [f"{r['mse']:.5f}", f"{r['psnr']:.2f}", f"{r['perplexity']:.1f}", f"{r['codes_used']:.1%}",
                          f"{r['step_seconds']:.3f}", f"{r['peak_rss_mib']:.0f}"]
            if side == "vqtok" and "mse_ratio" in comparison:
                cells += [f"{comparison['mse_ratio']:.3f}x", f"{comparison['codes_used_difference'] * 100:+.1f} pp",
                          comparison["verdict"]]
            elif side == "vqtok":
                cells += ["", "", comparison["verdict"]]
            else:
                cells += ["", "", ""]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict_line(method: str, comparison: dict, results: dict[str, dict]) -> str:
    """`method: holds (codes used a vs b, MSE x)`, or why it was not checked."""
    if "mse_ratio" not in comparison:
        return f"{method}: not checked ({comparison['reason']})"
    ours, theirs = (results[row_name(method, side)] for side in SIDES)
    return (f"{method}: {comparison['verdict']} (codes used {ours['codes_used']:.1%} vs {theirs['codes_used']:.1%}, "
            f"MSE {comparison['mse_ratio']:.3f}x vqp's)")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), metavar="METHOD",
                        help=f"methods to compare (default: all): {', '.join(METHODS)}")
    parser.add_argument("--one-row", dest="one_row", choices=list(all_rows()), metavar="ROW",
                        help="internal: train this one row in this process and write <output_dir>/runs/ROW/row.json")
    return compare_quantizers.parse_run_arguments(parser, argv, "outputs/compare_with_vqp")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one_row:
        return run_one_row(args.one_row, args)
    methods = args.methods or list(METHODS)
    os.makedirs(args.output_dir, exist_ok=True)
    results: dict[str, dict] = {}
    names = [row_name(m, s) for m in methods for s in SIDES]
    for index, name in enumerate(names, 1):
        method, side, spec = all_rows()[name]
        reason = unavailable(method, side)
        if reason:
            print(f"\n[{index}/{len(names)}] {name}: skipped, {reason}", flush=True)
            results[name] = {"method": method, "implementation": side, "skipped": reason}
            continue
        print(f"\n[{index}/{len(names)}] {name}: {spec[0]} {spec[1]}, {args.steps} steps, in a fresh process", flush=True)
        results[name] = {"method": method, "implementation": side, **run_row_in_subprocess(name, args)}
    comparisons = {m: compare(results[row_name(m, "vqtok")], results[row_name(m, "vqp")]) for m in methods}
    table = markdown_table(results, comparisons)
    quickstart = load_run_config(compare_quantizers.QUICKSTART).model
    print(f"\nafter {args.steps} steps (quickstart backbone, bundled sample set, seed {args.seed}, "
          f"{torch.get_num_threads()} CPU threads; vector-quantize-pytorch {vqp_version()}, torch {torch.__version__})\n")
    print(table)
    print(f"\ntarget (vqtok uses at least as many codes as vqp, with MSE <= {MSE_TOLERANCE}x vqp's):")
    for method, comparison in comparisons.items():
        print("  " + verdict_line(method, comparison, results))
    failed = [name for name, r in results.items() if "error" in r]
    if failed:
        print(f"rows that failed (traceback above and in results.json): {', '.join(failed)}")
    settings = {"steps": args.steps, "eval_every": args.eval_every, "seed": args.seed,
                "config": os.path.normpath(compare_quantizers.QUICKSTART), "backbone": quickstart.to_diff_dict(),
                "cpu_threads": torch.get_num_threads(), "vector_quantize_pytorch": vqp_version(),
                "torch": torch.__version__, "mse_tolerance": MSE_TOLERANCE}
    with open(os.path.join(args.output_dir, "table.md"), "w", encoding="utf-8") as handle:
        handle.write(table + "\n")
    with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as handle:
        json.dump({"settings": settings, "rows": results, "comparisons": comparisons}, handle, indent=2)
    trained = {name: r for name, r in results.items() if "curve" in r}
    compare_quantizers.save_curves(trained, os.path.join(args.output_dir, "curves.png"))
    print(f"\nwrote {args.output_dir}/table.md, results.json and curves.png")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
