#!/usr/bin/env python
"""Every tokenizer type side by side: reconstruction, codebook use, speed and a linear probe.

Trains one row per registered tokenizer type (`vqtok.auto.TOKENIZER_REGISTRY`) with the class
defaults of its config, plus the known variants of some types (`VARIANTS`: VQ with EMA and with a
straight-through-learnt codebook; SQ-VAE with variance parametrisations I-IV, once registered), all
on the quickstart's backbone (training/configs/quickstart.yaml: K = 512, D = 64) with its training
budget, data (the bundled sample set), seed and data order, on CPU. Then prints one table:

  - held-out MSE and PSNR, codebook perplexity and the fraction of codes used (`evaluate_tokenizer`),
  - training step time: the median seconds per optimizer step (the first few steps, which pay for
    k-means initialisation, left out), relative to EMA VQ's,
  - encode throughput: images/s of `model.encode` on the held-out images (batches of 256, best of 3),
  - linear-probe accuracy: scikit-learn's digits (shipped offline; 8x8, upscaled bilinearly to the
    tokenizer's image size) encoded, each image's feature the mean of its tokens' code vectors
    (`model.quantizer.embed(ids)`), standardised, logistic regression on a fixed stratified 70/30 split
    (the discriminative claim of the HyperVQ paper).

The table also goes to `<output_dir>/table.md` and, with the settings and the curves, to
`<output_dir>/results.json`; `<output_dir>/curves.png` plots held-out perplexity and MSE every
`--eval_every` steps for every row. The curves come from a small Accelerate tracker (`RowRecorder`)
that the trainer's per-step log record drives, unchanged trainer: it times each step and evaluates
between steps, so evaluation stays out of the step times.

    python benchmarks/compare_quantizers.py [--types vq-ema vq-ste nsvq ...] [--steps 300]
        [--eval_every 25] [--seed 0] [--output_dir outputs/compare_quantizers]

Targets (checked and printed; a miss does not change the exit status, only errors do):
  speed:  no type's training step costs more than 1.5x EMA VQ's at K = 512, D = 64;
  health: every type uses >= 80% of the codes, with held-out MSE at most 1.5x EMA VQ's.

Run it with `python` (one process); it needs matplotlib and scikit-learn besides vqtok.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import traceback

import torch
import torch.nn.functional as F
from accelerate.tracking import GeneralTracker

from vqtok import VQTokenizer
from vqtok.data import load_image_dataset, pixel_dataset, stack_pixel_values
from vqtok.metrics.evaluation import evaluate_tokenizer
from vqtok.auto import TOKENIZER_REGISTRY
from vqtok.training.run_config import RunConfig, load_run_config
from vqtok.training.trainer import THROUGHPUT_SKIP_STEPS, make_accelerator, train_tokenizer

QUICKSTART = os.path.join(os.path.dirname(__file__), "..", "training", "configs", "quickstart.yaml")
# Rows of a type other than its defaults: model_type -> [(row name, config fields)]; they replace the
# type's one default row, and appear only once the type is registered.
VARIANTS = {
    "vqtok-vq": [("vq-ema", {}), ("vq-ste", {"use_ema": False}), ("vq-ema-rotation", {"rotation_trick": True}),
                 ("vq-ste-rotation", {"use_ema": False, "rotation_trick": True})],
    # The implicit-code types at K = 512 = 8^3 = 2^9, as the table types: D follows from K.
    "vqtok-fsq": [("fsq", {"levels": [8, 8, 8], "latent_dim": 3})],
    "vqtok-lfq": [("lfq", {"latent_dim": 9})],
    "vqtok-bsq": [("bsq", {"latent_dim": 9})],
    "vqtok-sqvae": [(f"sqvae-{variance}", {"variance": variance}) for variance in ("I", "II", "III", "IV")],
}
# The row every ratio is taken against (always run, even when --types leaves it out).
REFERENCE = "vq-ema"
SPEED_TARGET = 1.5  # step time x the reference's, at most
USED_TARGET = 0.8  # fraction of codes used, at least
MSE_TARGET = 1.5  # held-out MSE x the reference's, at most
ENCODE_BATCH, ENCODE_REPEATS = 256, 3
PROBE_TEST_FRACTION, PROBE_SEED = 0.3, 0


def comparison_rows() -> dict[str, tuple[str, dict]]:
    """Row name -> (model_type, config fields over the class defaults), in registration order:
    each type's `VARIANTS`, or one row named after the type (`vqtok-nsvq` -> `nsvq`)."""
    rows = {}
    for model_type in TOKENIZER_REGISTRY:
        for name, fields in VARIANTS.get(model_type, [(model_type.removeprefix("vqtok-"), {})]):
            rows[name] = (model_type, fields)
    return rows


def row_run_config(model_type: str, fields: dict, args: argparse.Namespace, output_dir: str) -> RunConfig:
    """The quickstart run (backbone, data, budget) with the row's type and fields, no trackers,
    evaluation or checkpoints of the trainer's own, and one log record per step (see `RowRecorder`)."""
    overrides = [f"model.model_type={model_type}", *(f"model.{key}={json.dumps(value)}" for key, value in fields.items())]
    overrides += [
        f"training.max_steps={args.steps}",
        f"training.seed={args.seed}",
        f"training.output_dir={output_dir}",
        "training.report_to=none",
        "training.log_every=1",
        "training.eval_every=0",
        "training.checkpoint_every=0",
    ]
    return load_run_config(QUICKSTART, overrides)


class RowRecorder(GeneralTracker):
    """An Accelerate tracker that times training steps and records held-out curves.

    With `log_every=1` the trainer logs one record per optimizer step, right after the step; the
    time between two records is one step (data, forward, backward, optimizer, the record itself).
    Every `eval_every` steps, and after the last one, the recorder evaluates `model` on `eval_set`
    before it restarts the clock, so evaluation never counts as step time, and under a forked RNG,
    so it leaves training exactly as it would have run without it.
    """

    name = "compare_quantizers"
    requires_logging_directory = False

    def __init__(self, model, eval_set, eval_every: int, max_steps: int):
        super().__init__()
        self.model, self.eval_set, self.eval_every, self.max_steps = model, eval_set, eval_every, max_steps
        self.step_seconds: list[float] = []
        self.curve: list[dict] = []
        self.clock = time.perf_counter()

    @property
    def tracker(self):
        return None

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        if "train/loss" not in values:
            return
        self.step_seconds.append(time.perf_counter() - self.clock)
        if step == self.max_steps or (self.eval_every and step % self.eval_every == 0):
            with torch.random.fork_rng():
                self.curve.append({"step": step, **evaluate_tokenizer(self.model, self.eval_set, progress=False)})
        self.clock = time.perf_counter()

    def median_step_seconds(self) -> float:
        """Median step time, leaving out the first `THROUGHPUT_SKIP_STEPS` steps (but keeping one)."""
        skip = min(THROUGHPUT_SKIP_STEPS, len(self.step_seconds) - 1)
        return statistics.median(self.step_seconds[skip:])


@torch.no_grad()
def encode_throughput(model, pixel_values: torch.Tensor) -> float:
    """Images/s of `model.encode` over `pixel_values` in batches of `ENCODE_BATCH`, best of `ENCODE_REPEATS`."""
    model.eval()
    pixel_values = pixel_values.to(model.device)
    best = math.inf
    for _ in range(ENCODE_REPEATS):
        started = time.perf_counter()
        for start in range(0, len(pixel_values), ENCODE_BATCH):
            model.encode(pixel_values[start : start + ENCODE_BATCH])
        best = min(best, time.perf_counter() - started)
    return len(pixel_values) / best


def digits_probe_set(image_size: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as tokenizer input: `[N, channels, image_size, image_size]` in [-1, 1]
    (values 0..16 scaled, upscaled bilinearly, grey repeated over the channels), and the labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    images = F.interpolate(images, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return (images * 2.0 - 1.0).clamp(-1.0, 1.0).repeat(1, channels, 1, 1), torch.as_tensor(digits.target)


@torch.no_grad()
def mean_code_vectors(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """`[N, D]`: each image's tokens' code vectors (`quantizer.embed`), averaged over the token grid."""
    model.eval()
    features = []
    for start in range(0, len(pixel_values), ENCODE_BATCH):
        ids = model.encode(pixel_values[start : start + ENCODE_BATCH].to(model.device))
        features.append(model.quantizer.embed(ids).flatten(2).mean(dim=2).cpu())
    return torch.cat(features)


def probe_accuracy(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Held-out accuracy of a standardised logistic regression on a fixed stratified split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x_train, x_test, y_train, y_test = train_test_split(
        features.double().numpy(), labels.numpy(), test_size=PROBE_TEST_FRACTION, stratify=labels.numpy(),
        random_state=PROBE_SEED,
    )
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    return float(probe.fit(x_train, y_train).score(x_test, y_test))


def row_model_and_data(run_config: RunConfig):
    """The row's freshly initialised model (seeded by the run's seed), training set and held-out set."""
    config, data = run_config.model, run_config.data
    torch.manual_seed(run_config.training.seed)
    model = VQTokenizer.from_config(config)
    train_set = pixel_dataset(load_image_dataset(data.source, data.train_split), config.image_size, config.in_channels,
                              augment=data.augment)
    test_set = pixel_dataset(load_image_dataset(data.source, data.eval_split), config.image_size, config.in_channels)
    return model, train_set, test_set


def run_row(name: str, model_type: str, fields: dict, args: argparse.Namespace, probe_set: tuple) -> dict:
    """Train row `name`; return its final held-out metrics, step time, curve, throughput and probe accuracy."""
    run_config = row_run_config(model_type, fields, args, os.path.join(args.output_dir, "runs", name))
    training = run_config.training
    model, train_set, test_set = row_model_and_data(run_config)
    recorder = RowRecorder(model, test_set, args.eval_every, training.max_steps)
    accelerator = make_accelerator(training)
    accelerator.trackers.append(recorder)  # a ready tracker: `accelerator.log` calls it on the main process
    started = time.perf_counter()
    train_tokenizer(model, train_set, None, training, accelerator=accelerator)
    accelerator.end_training()
    seconds = time.perf_counter() - started
    final = {k: v for k, v in recorder.curve[-1].items() if k != "step"}
    return {
        "model_type": model_type,
        "fields": fields,
        **final,
        "step_seconds": recorder.median_step_seconds(),
        "step_seconds_each": recorder.step_seconds,
        "encode_images_per_second": encode_throughput(model, stack_pixel_values(test_set)),
        "probe_accuracy": probe_accuracy(mean_code_vectors(model, probe_set[0]), probe_set[1]),
        "wall_seconds": seconds,
        "curve": [{"step": p["step"], "mse": p["mse"], "perplexity": p["perplexity"]} for p in recorder.curve],
    }


def add_ratios(results: dict[str, dict]) -> None:
    """Step time and MSE of every row relative to the reference row's (NaN without one)."""
    reference = results.get(REFERENCE, {})
    for row in results.values():
        if "error" not in row:
            row["step_time_vs_reference"] = row["step_seconds"] / reference.get("step_seconds", math.nan)
            row["mse_vs_reference"] = row["mse"] / reference.get("mse", math.nan)


def markdown_table(results: dict[str, dict]) -> str:
    """The comparison as a markdown table, one line per row (failed rows say so)."""
    lines = [
        "| type | MSE | PSNR dB | perplexity | codes used | step time × EMA VQ | encode img/s | probe acc |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error'].splitlines()[-1][:60].replace('|', '/')} | | | | | | |")
            continue
        lines.append(
            f"| {name} | {r['mse']:.5f} | {r['psnr']:.2f} | {r['perplexity']:.1f} | {r['codes_used']:.1%} "
            f"| {r['step_time_vs_reference']:.2f}x | {r['encode_images_per_second']:.0f} | {r['probe_accuracy']:.3f} |"
        )
    return "\n".join(lines)


def target_misses(results: dict[str, dict]) -> dict[str, list[str]]:
    """Rows that miss the speed target and rows that miss the health target (with the reason)."""
    ok = {name: r for name, r in results.items() if "error" not in r}
    slow = [f"{n} ({r['step_time_vs_reference']:.2f}x)" for n, r in ok.items() if not r["step_time_vs_reference"] <= SPEED_TARGET]
    unhealthy = []
    for name, r in ok.items():
        reasons = []
        if r["codes_used"] < USED_TARGET:
            reasons.append(f"codes used {r['codes_used']:.1%}")
        if not r["mse_vs_reference"] <= MSE_TARGET:
            reasons.append(f"MSE {r['mse_vs_reference']:.2f}x")
        if reasons:
            unhealthy.append(f"{name} ({', '.join(reasons)})")
    return {"speed": slow, "health": unhealthy}


def save_curves(results: dict[str, dict], path: str) -> None:
    """Two panels, one line per row: held-out perplexity and held-out MSE (log scale) against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    figure, (ppl_axes, mse_axes) = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True)
    colours = plt.get_cmap("tab10").colors
    for index, (name, r) in enumerate(results.items()):
        if "error" in r:
            continue
        steps = [p["step"] for p in r["curve"]]
        style = {"label": name, "color": colours[index % len(colours)], "linestyle": ("-", "--", ":")[index // len(colours) % 3],
                 "marker": "." if len(steps) < 30 else None}
        ppl_axes.plot(steps, [p["perplexity"] for p in r["curve"]], **style)
        mse_axes.plot(steps, [p["mse"] for p in r["curve"]], **style)
    ppl_axes.set(xlabel="training step", ylabel="held-out perplexity", title="codebook perplexity")
    mse_axes.set(xlabel="training step", ylabel="held-out MSE ([0, 1] pixels)", title="reconstruction MSE", yscale="log")
    for axes in (ppl_axes, mse_axes):
        axes.grid(True, alpha=0.3)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    mse_axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    figure.savefig(path, dpi=120)
    plt.close(figure)


def parse_args(argv=None) -> argparse.Namespace:
    rows = comparison_rows()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--types", nargs="+", choices=sorted(rows), metavar="ROW",
                        help=f"rows to run (default: all); known now: {', '.join(rows)}. {REFERENCE} always runs.")
    return parse_run_arguments(parser, argv, "outputs/compare_quantizers")


def parse_run_arguments(parser: argparse.ArgumentParser, argv, output_dir: str) -> argparse.Namespace:
    """`parser` with the arguments every comparison run takes (`--steps`, `--eval_every`, `--seed`,
    `--output_dir`, default `output_dir`), parsed from `argv` and checked."""
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per row (quickstart: 300)")
    parser.add_argument("--eval_every", type=int, default=25, help="steps between points of the held-out curves")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output_dir", default=output_dir)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.eval_every < 1:
        parser.error("--steps and --eval_every must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = comparison_rows()
    if REFERENCE not in rows:
        sys.exit(f"the reference row {REFERENCE} is missing: is vqtok-vq registered?")
    names = [name for name in rows if args.types is None or name in args.types or name == REFERENCE]
    os.makedirs(args.output_dir, exist_ok=True)
    quickstart = load_run_config(QUICKSTART).model
    probe_set = digits_probe_set(quickstart.image_size, quickstart.in_channels)
    results: dict[str, dict] = {}
    for index, name in enumerate(names, 1):
        model_type, fields = rows[name]
        print(f"\n[{index}/{len(names)}] {name}: {model_type} {fields or '(class defaults)'}, {args.steps} steps", flush=True)
        try:
            results[name] = run_row(name, model_type, fields, args, probe_set)
        except Exception:  # noqa: BLE001 - one broken type must not cost the other rows; reported, exit status 1
            results[name] = {"model_type": model_type, "fields": fields, "error": traceback.format_exc()}
            print(results[name]["error"], file=sys.stderr, flush=True)
    add_ratios(results)
    table = markdown_table(results)
    misses = target_misses(results)
    reference_seconds = results[REFERENCE].get("step_seconds", math.nan)
    print(f"\nafter {args.steps} steps (quickstart backbone, K={quickstart.codebook_size}, D={quickstart.latent_dim}, "
          f"bundled sample set, seed {args.seed}, {torch.get_num_threads()} CPU threads); "
          f"EMA VQ step: {reference_seconds:.3f} s\n")
    print(table)
    print(f"\nspeed target (step <= {SPEED_TARGET}x EMA VQ's): missed by {', '.join(misses['speed']) or 'none'}")
    print(f"health target (codes used >= {USED_TARGET:.0%}, MSE <= {MSE_TARGET}x EMA VQ's): "
          f"missed by {', '.join(misses['health']) or 'none'}")
    failed = [name for name, r in results.items() if "error" in r]
    if failed:
        print(f"rows that failed (traceback above and in results.json): {', '.join(failed)}")
    settings = {"steps": args.steps, "eval_every": args.eval_every, "seed": args.seed, "config": os.path.normpath(QUICKSTART),
                "backbone": quickstart.to_diff_dict(), "cpu_threads": torch.get_num_threads()}
    with open(os.path.join(args.output_dir, "table.md"), "w", encoding="utf-8") as handle:
        handle.write(table + "\n")
    with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as handle:
        json.dump({"settings": settings, "rows": results, "target_misses": misses}, handle, indent=2)
    save_curves(results, os.path.join(args.output_dir, "curves.png"))
    print(f"\nwrote {args.output_dir}/table.md, results.json and curves.png")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
