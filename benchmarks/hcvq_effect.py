#!/usr/bin/env python
"""HC-VQ's claim, measured: the same tokenizer trained with and without the topology term.

For each arm (a tokenizer type with its class defaults) and each seed, two runs on the quickstart's
backbone, data, budget and data order (CPU, one process): a dry run, and the same run with
`regularizers={"topology": {...}}` (the regulariser's defaults unless `--options` says otherwise).
Both runs of a pair share the seed, so they start from the same weights and draw the same batches.

Reported per run: held-out MSE, perplexity and fraction of codes used after the last step; the
codebook entropy of the training batches (ln of the batch perplexity) and the held-out perplexity
over training (plotted, `<output_dir>/curves.png`); the mean training step time. The claim holds
for a pair when the held-out perplexity is above the dry run's and the MSE within 5% of it.

The term's cost at K = 512, D = 64 is measured directly as well: the regulariser's forward and
backward at a computation step on a 512 x 64 codebook (median of 20), amortised over its
`compute_every`, relative to the dry default VQ run's mean step time (target: at most 15%).

    python benchmarks/hcvq_effect.py [--arms vq-ema sqvae] [--seeds 0 1] [--steps 300]
        [--options '{"weight": 1.0}'] [--output_dir outputs/hcvq_effect] [--cost_only]

Writes `<output_dir>/results.json`, `table.md` and `curves.png`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare_quantizers import RowRecorder, row_model_and_data, row_run_config  # noqa: E402

from vqtok.quantizers import QuantizerOutput, VectorQuantizer  # noqa: E402
from vqtok.regularizers import RegularizerInputs, TopologyRegularizer  # noqa: E402
from vqtok.training.trainer import THROUGHPUT_SKIP_STEPS, make_accelerator, train_tokenizer  # noqa: E402

# name -> (model_type, config fields over the class defaults)
ARMS = {
    "vq-ema": ("vqtok-vq", {}),
    "sqvae": ("vqtok-sqvae", {}),
    "nsvq": ("vqtok-nsvq", {}),
    "gumbel": ("vqtok-gumbel", {}),
}
DEFAULT_ARMS = ("vq-ema", "sqvae")
MSE_TOLERANCE = 1.05
COST_TARGET = 0.15
COST_CODES, COST_DIM, COST_REPEATS = 512, 64, 20


class TrainingRecorder(RowRecorder):
    """`RowRecorder` that also keeps each step's training codebook entropy (ln batch perplexity)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.entropy: list[float] = []

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        if "train/perplexity" in values:
            self.entropy.append(math.log(max(values["train/perplexity"], 1e-12)))
        super().log(values, step, **kwargs)

    def mean_step_seconds(self) -> float:
        """Mean step time without the first steps (the term runs every few steps: the mean counts it)."""
        return statistics.fmean(self.step_seconds[min(THROUGHPUT_SKIP_STEPS, len(self.step_seconds) - 1):])


def run_once(model_type: str, fields: dict, seed: int, args: argparse.Namespace, output_dir: str) -> dict:
    """Train one run; return its final held-out metrics, curves and step time."""
    run_config = row_run_config(model_type, fields, argparse.Namespace(steps=args.steps, seed=seed), output_dir)
    training = run_config.training
    model, train_set, test_set = row_model_and_data(run_config)
    recorder = TrainingRecorder(model, test_set, args.eval_every, training.max_steps)
    accelerator = make_accelerator(training)
    accelerator.trackers.append(recorder)
    train_tokenizer(model, train_set, None, training, accelerator=accelerator)
    accelerator.end_training()
    final = {k: v for k, v in recorder.curve[-1].items() if k != "step"}
    return {
        **final,
        "step_seconds": recorder.mean_step_seconds(),
        "train_codebook_entropy": recorder.entropy,
        "curve": [{"step": p["step"], "perplexity": p["perplexity"], "mse": p["mse"]} for p in recorder.curve],
    }


def term_cost_seconds(options: dict) -> tuple[float, int]:
    """Median seconds of the term's forward + backward at a computation step on a 512 x 64 learnt
    codebook, and the regulariser's `compute_every`."""
    settings = {**options, "warmup_steps": 0, "compute_every": 1, "entropy_period": 1}
    regularizer = TopologyRegularizer(**settings).train()
    generator = torch.Generator().manual_seed(0)
    quantizer = VectorQuantizer(COST_CODES, COST_DIM, use_ema=False)  # a codebook learnt by gradient
    with torch.no_grad():
        quantizer.codebook.weight.copy_(torch.randn(COST_CODES, COST_DIM, generator=generator))
    ids = torch.randint(0, COST_CODES, (64, 8, 8), generator=generator)
    pixels = torch.rand(64, 3, 32, 32, generator=generator) * 2 - 1
    quantized = quantizer.codebook.weight.detach()[ids].movedim(-1, 1)
    inputs = RegularizerInputs(pixels, quantized, QuantizerOutput(quantized, ids), pixels, quantizer)
    regularizer(inputs)  # eta > 0 from here on
    seconds = []
    for _ in range(COST_REPEATS):
        started = time.perf_counter()
        loss = regularizer(inputs).losses["topology_loss"]
        loss.backward()
        seconds.append(time.perf_counter() - started)
    compute_every = TopologyRegularizer(**options).compute_every
    return statistics.median(seconds), compute_every


def verdict(dry: dict, term: dict) -> str:
    higher = term["perplexity"] > dry["perplexity"]
    stable = term["mse"] <= MSE_TOLERANCE * dry["mse"]
    return "holds" if higher and stable else "fails (" + ", ".join(
        reason for reason, bad in (("perplexity not higher", not higher), ("MSE > 1.05x", not stable)) if bad
    ) + ")"


def markdown_table(results: dict) -> str:
    lines = [
        "| arm | seed | run | MSE | perplexity | codes used | MSE × dry | perplexity × dry | mean step s | claim |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for arm, seeds in results["runs"].items():
        for seed, pair in seeds.items():
            dry, term = pair["dry"], pair["topology"]
            for label, run in (("dry", dry), ("topology", term)):
                ratio_mse = run["mse"] / dry["mse"]
                ratio_ppl = run["perplexity"] / dry["perplexity"]
                claim = verdict(dry, term) if label == "topology" else ""
                lines.append(
                    f"| {arm} | {seed} | {label} | {run['mse']:.5f} | {run['perplexity']:.1f} | {run['codes_used']:.1%} "
                    f"| {ratio_mse:.3f} | {ratio_ppl:.3f} | {run['step_seconds']:.3f} | {claim} |"
                )
    return "\n".join(lines)


def save_curves(results: dict, path: str) -> None:
    """Per arm: training codebook entropy (smoothed) and held-out perplexity, dry vs topology, every seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(results["runs"])
    figure, axes = plt.subplots(2, len(arms), figsize=(6 * len(arms), 8), squeeze=False, constrained_layout=True)
    for column, arm in enumerate(arms):
        for seed, pair in results["runs"][arm].items():
            for label, colour in (("dry", "tab:grey"), ("topology", "tab:red")):
                run = pair[label]
                entropy = torch.tensor(run["train_codebook_entropy"])
                window = 10
                smooth = torch.nn.functional.avg_pool1d(entropy[None, None], window, 1).flatten() if len(entropy) >= window else entropy
                style = {"color": colour, "linestyle": "-" if seed == min(results["runs"][arm]) else "--", "label": f"{label} seed {seed}"}
                axes[0][column].plot(range(window, window + len(smooth)), smooth.tolist(), **style)
                axes[1][column].plot([p["step"] for p in run["curve"]], [p["perplexity"] for p in run["curve"]], marker=".", **style)
        axes[0][column].set(title=f"{arm}: codebook entropy of training batches", xlabel="step", ylabel="nats (10-step mean)")
        axes[1][column].set(title=f"{arm}: held-out perplexity", xlabel="step", ylabel="perplexity")
        for row in (0, 1):
            axes[row][column].grid(True, alpha=0.3)
            axes[row][column].legend(fontsize="small")
    figure.savefig(path, dpi=110)
    plt.close(figure)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=list(DEFAULT_ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval_every", type=int, default=50)
    parser.add_argument("--options", default="{}", help="the topology regulariser's options, as JSON (default: its defaults)")
    parser.add_argument("--output_dir", default="outputs/hcvq_effect")
    parser.add_argument("--cost_only", action="store_true",
                        help="only the cost figure: a dry default VQ run of --steps steps and the term's timing")
    return parser.parse_args(argv)


def cost_only(args: argparse.Namespace, options: dict) -> int:
    """The term's cost relative to a dry default VQ run's mean step (nothing else trained)."""
    model_type, fields = ARMS["vq-ema"]
    step_seconds = run_once(model_type, fields, args.seeds[0], args, os.path.join(args.output_dir, "runs", "cost"))["step_seconds"]
    term_seconds, compute_every = term_cost_seconds(options)
    print(f"default VQ step {step_seconds * 1000:.1f} ms; term at a computation step {term_seconds * 1000:.1f} ms, "
          f"every {compute_every} steps -> {term_seconds / compute_every / step_seconds:.1%} of a step "
          f"(target <= {COST_TARGET:.0%}; {torch.get_num_threads()} CPU threads)")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    options = json.loads(args.options)
    TopologyRegularizer.check_options(options)
    os.makedirs(args.output_dir, exist_ok=True)
    if args.cost_only:
        return cost_only(args, options)
    results = {"steps": args.steps, "options": options, "runs": {}}
    for arm in args.arms:
        model_type, fields = ARMS[arm]
        results["runs"][arm] = {}
        for seed in args.seeds:
            pair = {}
            for label, extra in (("dry", {}), ("topology", {"regularizers": {"topology": options}})):
                print(f"\n{arm} seed {seed}: {label}", flush=True)
                run_dir = os.path.join(args.output_dir, "runs", f"{arm}-{seed}-{label}")
                pair[label] = run_once(model_type, {**fields, **extra}, seed, args, run_dir)
            results["runs"][arm][seed] = pair
    dry_vq = [pair["dry"]["step_seconds"] for pair in results["runs"].get("vq-ema", {}).values()]
    term_seconds, compute_every = term_cost_seconds(options)
    results["term_seconds_at_computation"] = term_seconds
    results["compute_every"] = compute_every
    if dry_vq:
        results["default_step_seconds"] = statistics.fmean(dry_vq)
        results["term_cost_fraction"] = term_seconds / compute_every / results["default_step_seconds"]
    table = markdown_table(results)
    print(f"\nafter {args.steps} steps (quickstart backbone and data, {torch.get_num_threads()} CPU threads), "
          f"topology options {json.dumps(options) or '{}'}\n")
    print(table)
    print(f"\nterm at a computation step (K={COST_CODES}, D={COST_DIM}, forward + backward): {term_seconds * 1000:.1f} ms; "
          f"every {compute_every} steps")
    if "term_cost_fraction" in results:
        print(f"default VQ step: {results['default_step_seconds'] * 1000:.1f} ms -> term cost {results['term_cost_fraction']:.1%} "
              f"of a step (target <= {COST_TARGET:.0%})")
    with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle, indent=2)
    with open(os.path.join(args.output_dir, "table.md"), "w", encoding="utf-8") as handle:
        handle.write(table + "\n")
    save_curves(results, os.path.join(args.output_dir, "curves.png"))
    print(f"wrote {args.output_dir}/results.json, table.md and curves.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
