#!/usr/bin/env python
"""Codebook health on two real held-out image sets, over seeds, against vector-quantize-pytorch.

Each row is one quantizer with its library's defaults (the fields listed in `ROWS` over the class
defaults), trained on the quickstart's backbone (training/configs/quickstart.yaml: conv, 32x32, 8x8
tokens, batch 64, lr 0.002) for `--steps` steps on each data set and seed, then scored on that set's
held-out images (`evaluate_tokenizer`: MSE, perplexity, the fraction of codes used):

  photos  the bundled sample set: 32x32 patches of scikit-image's photographs (2480 train, 276 test),
          trained with the quickstart's augmentation (random flips), exactly as the quickstart is
  digits  scikit-learn's handwritten digits (UCI, 1797 images, 8x8 grey, upscaled bilinearly to
          32x32 and repeated over RGB), split 90/10 with a fixed seed (1617 train, 180 test), no
          augmentation

Both ship offline with their packages (the photographs under the permissive licences listed in
scikit-image's data README; the digits are UCI's Optical Recognition of Handwritten Digits, CC BY
4.0). vector-quantize-pytorch (vqp) rows wrap its classes, with its defaults, as vqtok quantizer types
(`compare_with_vector_quantize_pytorch.py`), on the same backbone and data order. The `vqvae*` rows
are the plain VQ-VAE of the rotation-trick and HC-VQ papers (a codebook learnt by gradient, no
k-means start, no restarts), bare, with the rotation trick, and with the topology term's defaults.

Every run is a fresh process with `--threads` CPU threads (1), `--jobs` (2) of them at a time; a run's result is
kept in `<output_dir>/runs/<data>/<row>/seed<N>.json`, and a run whose file exists is not repeated
unless `--rerun`. Then one table: per data set and row, the mean over seeds of MSE, perplexity and
codes used, the MSE's spread over seeds ((max - min) / mean), the MSE relative to default VQ's, and
the health target:

  every vqtok row: codes used >= 80% and MSE <= 1.5x default VQ's;
  LFQ / BSQ:       codes used >= vqp's (defaults) at MSE <= vqp's;
  IBQ:             MSE spread over the seeds < 15%.

    python benchmarks/codebook_health_real_data.py [--rows lfq lfq-vqp ...] [--data photos digits]
        [--seeds 0 1] [--steps 300] [--jobs 2] [--threads 1] [--output_dir outputs/codebook_health_real_data]

Step times are not reported: runs share the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare_with_vector_quantize_pytorch as vqp_rows  # noqa: E402  (registers the bench-vqp-* types)
from compare_quantizers import MSE_TARGET, USED_TARGET, digits_probe_set, row_run_config  # noqa: E402

SPREAD_TARGET = 0.15  # IBQ's MSE (max - min) / mean over the seeds, below
REFERENCE = "vq"
VQP = vqp_rows.VQP_TYPES
# The plain VQ-VAE of the rotation-trick and HC-VQ papers: a codebook learnt by gradient, with neither
# k-means start nor restarts.
PLAIN_VQVAE = {"use_ema": False, "kmeans_init": False, "dead_code_threshold": 0.0}

# The implicit codebooks' class defaults (10 bits; FSQ levels [8, 5, 5, 5]) in place of the quickstart's K and D.
TEN_BITS = {"latent_dim": 10, "codebook_size": 1024}
FSQ_DEFAULT = {"latent_dim": 4, "codebook_size": 1000}

# row -> (model_type, config fields over the class defaults)
ROWS = {
    "vq": ("vqtok-vq", {}),
    "vq-vqp": (VQP["vq"], {"vqp_options": {}}),
    "lfq": ("vqtok-lfq", TEN_BITS),
    "lfq-vqp": (VQP["lfq"], {**TEN_BITS, "vqp_options": {}}),
    "bsq": ("vqtok-bsq", TEN_BITS),
    "bsq-vqp": (VQP["bsq"], {**TEN_BITS, "vqp_options": {"spherical": True}}),
    "simvq": ("vqtok-simvq", {}),
    "simvq-vqp": (VQP["simvq"], {"vqp_options": {}}),
    "ibq": ("vqtok-ibq", {}),
    "vq-rotation": ("vqtok-vq", {"rotation_trick": True}),
    "vq-rotation-vqp": (VQP["vq"], {"vqp_options": {"rotation_trick": True, **vqp_rows.VQP_EMA_VQ}}),
    "vqvae": ("vqtok-vq", PLAIN_VQVAE),
    "vqvae-rotation": ("vqtok-vq", {**PLAIN_VQVAE, "rotation_trick": True}),
    "vqvae-topology": ("vqtok-vq", {**PLAIN_VQVAE, "regularizers": {"topology": {}}}),
    "fsq": ("vqtok-fsq", FSQ_DEFAULT),
    "fsq-vqp": (VQP["fsq"], {**FSQ_DEFAULT, "vqp_options": {"levels": [8, 5, 5, 5]}}),
    "rvq": ("vqtok-rvq", {}),
}
DATA_SETS = ("photos", "digits")
DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED = 0.1, 0


# --- data ------------------------------------------------------------------------------------------
def digits_splits(image_size: int, channels: int):
    """scikit-learn's digits as (train, test) `pixel_values` datasets, split 90/10 with a fixed seed."""
    from datasets import Dataset

    images, labels = digits_probe_set(image_size, channels)
    split = Dataset.from_dict({"pixel_values": images.numpy(), "label": labels.numpy()}).with_format("torch")
    parts = split.train_test_split(test_size=DIGITS_TEST_FRACTION, seed=DIGITS_SPLIT_SEED)
    return parts["train"], parts["test"]


def data_splits(name: str, run_config):
    """(train, held-out) `pixel_values` datasets of data set `name` at the model's size."""
    from vqtok.data import load_image_dataset, pixel_dataset

    model, data = run_config.model, run_config.data
    if name == "digits":
        return digits_splits(model.image_size, model.in_channels)
    return (pixel_dataset(load_image_dataset(data.source, data.train_split), model.image_size, model.in_channels,
                          augment=data.augment),
            pixel_dataset(load_image_dataset(data.source, data.eval_split), model.image_size, model.in_channels))


# --- one run ---------------------------------------------------------------------------------------
def result_path(args: argparse.Namespace, data: str, row: str, seed: int) -> str:
    return os.path.join(args.output_dir, "runs", data, row, f"seed{seed}.json")


def run_one(args: argparse.Namespace) -> int:
    """`--one`: train one (data, row, seed) in this process and write its held-out metrics."""
    import torch

    from vqtok import VQTokenizer
    from vqtok.training.trainer import train_tokenizer

    torch.set_num_threads(args.threads)
    data, row, seed = args.one
    seed = int(seed)
    model_type, fields = ROWS[row]
    path = result_path(args, data, row, seed)
    result = {"data": data, "row": row, "seed": seed, "model_type": model_type, "fields": fields, "steps": args.steps}
    try:
        run_args = argparse.Namespace(steps=args.steps, seed=seed)
        run_config = row_run_config(model_type, fields, run_args, os.path.dirname(path))
        torch.manual_seed(seed)
        model = VQTokenizer.from_config(run_config.model)
        train_set, test_set = data_splits(data, run_config)
        final = train_tokenizer(model, train_set, test_set, run_config.training)
        result.update({k: final[k] for k in ("mse", "psnr", "perplexity", "codes_used", "skipped_steps")})
    except Exception:  # noqa: BLE001 - reported in the result and the exit status
        result["error"] = traceback.format_exc()
        print(result["error"], file=sys.stderr, flush=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    return 1 if "error" in result else 0


def launch(args: argparse.Namespace, data: str, row: str, seed: int) -> dict:
    """Run (data, row, seed) in a fresh process (`--threads` threads) unless its result exists; return it."""
    path = result_path(args, data, row, seed)
    if not args.report_only and (args.rerun or not os.path.exists(path)):
        command = [sys.executable, os.path.abspath(__file__), "--one", data, row, str(seed), "--steps", str(args.steps),
                   "--threads", str(args.threads), "--output_dir", args.output_dir]
        log = path.removesuffix(".json") + ".log"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(log, "w", encoding="utf-8") as handle:
            subprocess.run(command, check=False, stdout=handle, stderr=subprocess.STDOUT)
    if not os.path.exists(path):
        return {"missing": path} if args.report_only else {"error": f"no result at {path}"}
    with open(path, encoding="utf-8") as handle:
        result = json.load(handle)
    status = "failed" if "error" in result else f"MSE {result['mse']:.5f}, codes used {result['codes_used']:.1%}"
    print(f"  {data} {row} seed {seed}: {status}", flush=True)
    return result


# --- the table -------------------------------------------------------------------------------------
def summarise(runs: list[dict]) -> dict:
    """Mean MSE, perplexity and codes used over the seeds, and the MSE's (max - min) / mean."""
    ok = [r for r in runs if "error" not in r]
    if not ok:
        return {"error": True}
    mses = [r["mse"] for r in ok]
    mean = statistics.fmean(mses)
    return {"seeds": len(ok), "failed": len(runs) - len(ok), "mse": mean, "mse_spread": (max(mses) - min(mses)) / mean,
            "perplexity": statistics.fmean(r["perplexity"] for r in ok),
            "codes_used": statistics.fmean(r["codes_used"] for r in ok),
            "mse_each": mses, "codes_used_each": [r["codes_used"] for r in ok]}


def verdicts(row: str, summary: dict, table: dict) -> list[str]:
    """The health targets row `row` misses on one data set (empty: all met); vqp rows are not judged."""
    if row.endswith("-vqp") or "error" in summary:
        return []
    misses = []
    reference = table.get(REFERENCE, {})
    if summary["codes_used"] < USED_TARGET:
        misses.append(f"codes used {summary['codes_used']:.1%}")
    if "mse" in reference and summary["mse"] > MSE_TARGET * reference["mse"]:
        misses.append(f"MSE {summary['mse'] / reference['mse']:.2f}x VQ's")
    theirs = table.get(f"{row}-vqp", {})
    if row in ("lfq", "bsq") and "mse" in theirs:
        if summary["codes_used"] < theirs["codes_used"]:
            misses.append(f"codes used below vqp's ({theirs['codes_used']:.1%})")
        if summary["mse"] > theirs["mse"]:
            misses.append(f"MSE {summary['mse'] / theirs['mse']:.2f}x vqp's")
    if row == "ibq" and summary["seeds"] > 1 and summary["mse_spread"] >= SPREAD_TARGET:
        misses.append(f"MSE spread {summary['mse_spread']:.0%}")
    return misses


def markdown_table(tables: dict[str, dict[str, dict]]) -> str:
    """One line per row, each data set's columns side by side: MSE (mean over seeds, with its spread),
    MSE relative to default VQ's, perplexity, codes used; then the targets the row misses."""
    data_sets = list(tables)
    rows = list(dict.fromkeys(row for table in tables.values() for row in table))
    header = f"| row | seeds ({'/'.join(data_sets)}) | " + " | ".join(f"{d} MSE (spread) | {d} × VQ | {d} perplexity | {d} codes used" for d in data_sets)
    lines = [header + " | target |", "|---|---:|" + "---:|---:|---:|---:|" * len(data_sets) + "---|"]
    for row in rows:
        cells, misses, seeds = [], [], []
        for data in data_sets:
            s = tables[data].get(row, {"error": True})
            seeds.append(str(s.get("seeds", 0)))
            if "error" in s:
                cells += ["not run" if row not in tables[data] else "failed", "", "", ""]
                continue
            reference = tables[data].get(REFERENCE, {}).get("mse")
            cells += [f"{s['mse']:.5f} ({s['mse_spread']:.0%})", f"{s['mse'] / reference:.2f}x" if reference else "",
                      f"{s['perplexity']:.1f}", f"{s['codes_used']:.1%}"]
            misses += [f"{data}: {miss}" for miss in verdicts(row, s, tables[data])]
        target = "" if row.endswith("-vqp") else ("met" if not misses else "missed: " + "; ".join(misses))
        lines.append(f"| {row} | {'/'.join(seeds)} | " + " | ".join(cells) + f" | {target} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), metavar="ROW",
                        help=f"rows (default: all): {', '.join(ROWS)}")
    parser.add_argument("--data", nargs="+", choices=DATA_SETS, default=list(DATA_SETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per run (the quickstart's 300)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run")
    parser.add_argument("--rerun", action="store_true", help="train again runs whose result exists")
    parser.add_argument("--report_only", action="store_true", help="train nothing: the table of the results already there")
    parser.add_argument("--output_dir", default="outputs/codebook_health_real_data")
    parser.add_argument("--one", nargs=3, metavar=("DATA", "ROW", "SEED"), help="internal: one run in this process")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.jobs < 1:
        parser.error("--steps and --jobs must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one:
        return run_one(args)
    rows = list(dict.fromkeys([REFERENCE, *args.rows]))
    work = [(data, row, seed) for seed in args.seeds for data in args.data for row in rows]  # every row once, first
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda job: launch(args, *job), work))
    runs: dict[str, dict[str, list[dict]]] = {}
    for (data, row, _), result in zip(work, results):
        if "missing" not in result:
            runs.setdefault(data, {}).setdefault(row, []).append(result)
    tables = {data: {row: summarise(rs) for row, rs in by_row.items()} for data, by_row in runs.items()}
    table = markdown_table(tables)
    print(f"\n{args.steps} steps, seeds {args.seeds}, quickstart backbone, vector-quantize-pytorch {vqp_rows.vqp_version()}\n")
    print(table)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "table.md"), "w", encoding="utf-8") as handle:
        handle.write(table + "\n")
    with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as handle:
        json.dump({"steps": args.steps, "seeds": args.seeds, "tables": tables}, handle, indent=2)
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
