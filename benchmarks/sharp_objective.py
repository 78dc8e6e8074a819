#!/usr/bin/env python
"""The adversarial objective's effect, measured offline: the same tokenizer trained with pixel MSE
only and with the recipe's objectives (a PatchGAN discriminator with VQGAN's adaptive weight), at
equal steps, on the bundled images at quickstart size (`training/configs/vqgan_cpu.yaml`).

Both runs share the seed, so they start from the same weights and draw the same batches. Measured
on the held-out split after the last step: PSNR, SSIM, the fraction of codes used and perplexity,
and two sharpness measures that need no downloaded weights:

- the high-frequency energy ratio: the reconstructions' spectral energy above half the Nyquist
  frequency over the originals' (1.0 is as sharp as the originals; blur pulls it below 1);
- the Fréchet distance between originals and reconstructions in the features of a fixed, seeded,
  randomly initialised conv net (`vqtok.metrics.RandomConvFeatures`; lower is closer).

Target: the adversarial run closer to 1.0 on the energy ratio and lower on the distance, with PSNR
no more than 1 dB below the MSE run. The objective's step cost is timed in short runs with every
term active from the first step (mean seconds a step, first steps left out), as a ratio to MSE only.

`--plumbing` adds LPIPS on a randomly initialised VGG16 to the timed runs (not to the compared
ones): a check that the perceptual term trains end to end here (finite losses and weights, no
skipped step) and what it costs, never a quality claim (random features are not LPIPS).

    python benchmarks/sharp_objective.py [--steps 300] [--seed 0] [--plumbing] [--timing_steps 20]
        [--output_dir outputs/sharp_objective] [--picture docs/sharp_objective.png]

Writes `<output_dir>/results.json`, `table.md` and the side-by-side picture (held-out originals,
then the MSE run's reconstructions, then the adversarial run's).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import torch
from accelerate.utils import set_seed

from vqtok import VQTokenizer
from vqtok.data import load_image_dataset, pixel_dataset, stack_pixel_values
from vqtok.metrics import evaluate_tokenizer, save_reconstruction_grid
from vqtok.losses import build_objectives
from vqtok.metrics import RandomConvFeatures
from vqtok.training.run_config import load_run_config
from vqtok.training.trainer import make_accelerator, train_tokenizer

DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "training", "configs", "vqgan_cpu.yaml")
PSNR_TOLERANCE_DB = 1.0
PICTURE_IMAGES = 16
REPORTED = ("psnr", "ssim", "codes_used", "perplexity", "high_frequency_energy_ratio", "random_conv_fd")


PLUMBING_RUN = "adversarial+lpips(random vgg)"


def arms(recipe_objectives: dict, plumbing: bool = False) -> dict[str, dict]:
    """Run name -> its `objectives` section."""
    runs = {"mse": {}, "adversarial": recipe_objectives}
    if plumbing:
        runs[PLUMBING_RUN] = {**recipe_objectives, "perceptual": {"weight": 1.0, "vgg_weights": "random"}}
    return runs


def train(run, objectives: dict, train_set, training) -> tuple[VQTokenizer, dict]:
    """A tokenizer trained from the run's seed with `objectives`; returns it and the loop's results."""
    set_seed(training.seed)
    model = VQTokenizer.from_config(run.model)
    results = train_tokenizer(model, train_set, None, training, make_accelerator(training),
                              objectives=build_objectives(objectives))
    return model.eval(), results


def timed_run(run, objectives: dict, train_set, training, steps: int) -> dict[str, float]:
    """A short run with every term active from the first step: mean seconds a step (the loop's timed
    steps), skipped steps, and whether every weight ended finite."""
    active = {name: {**options, "start_step": 0} if name == "adversarial" else options for name, options in objectives.items()}
    model, results = train(run, active, train_set, dataclasses.replace(training, max_steps=steps))
    finite = all(torch.isfinite(tensor).all() for tensor in model.state_dict().values() if tensor.is_floating_point())
    return {"seconds_per_step": training.batch_size / results["images_per_second"],
            "skipped_steps": results["skipped_steps"], "weights_finite": float(finite)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=DEFAULT_CONFIG)
    parser.add_argument("--steps", type=int, default=None, help="training steps of each run (default: the config's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plumbing", action="store_true", help="time a run with LPIPS on a random VGG16 as well (plumbing only)")
    parser.add_argument("--timing_steps", type=int, default=20, help="steps of each step-cost run (0: skip timing)")
    parser.add_argument("--output_dir", default="outputs/sharp_objective")
    parser.add_argument("--picture", default=None, help="where to write the picture (default: <output_dir>/side_by_side.png)")
    args = parser.parse_args(argv)

    run = load_run_config(args.config)
    training = dataclasses.replace(run.training, seed=args.seed, max_steps=args.steps or run.training.max_steps,
                                   report_to="none", eval_every=0, checkpoint_every=0)
    data = run.data
    train_set = pixel_dataset(load_image_dataset(data.source, split=data.train_split), run.model.image_size,
                              run.model.in_channels, augment=data.augment)
    eval_set = pixel_dataset(load_image_dataset(data.source, split=data.eval_split), run.model.image_size,
                             run.model.in_channels, augment=False)
    originals = stack_pixel_values(eval_set, limit=PICTURE_IMAGES)

    table, pictures = {}, []
    for name, objectives in arms(run.objectives).items():
        print(f"\n== {name}: {training.max_steps} steps, objectives {sorted(objectives) or 'none'}")
        model, _ = train(run, objectives, train_set,
                         dataclasses.replace(training, output_dir=os.path.join(args.output_dir, name)))
        row = evaluate_tokenizer(model, eval_set, progress=False, feature_distances={"random_conv_fd": RandomConvFeatures()})
        table[name] = {key: row[key] for key in REPORTED}
        with torch.no_grad():
            pictures.append(model.decode(model.encode(originals)))
    costs = {}
    if args.timing_steps:
        for name, objectives in arms(run.objectives, args.plumbing).items():
            print(f"\n== timing {name}: {args.timing_steps} steps, every term from the first")
            timing = dataclasses.replace(training, output_dir=os.path.join(args.output_dir, f"timing-{name}"))
            costs[name] = timed_run(run, objectives, train_set, timing, args.timing_steps)
        for cost in costs.values():
            cost["step_cost_vs_mse"] = cost["seconds_per_step"] / costs["mse"]["seconds_per_step"]

    verdict = judge(table["mse"], table["adversarial"])
    picture = save_reconstruction_grid(originals, pictures, args.picture or os.path.join(args.output_dir, "side_by_side.png"))
    markdown = render(table, costs, verdict, training.max_steps, args.seed, args.timing_steps)
    print("\n" + markdown)
    print(f"wrote {picture}")
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "results.json"), "w", encoding="utf-8") as handle:
        json.dump({"steps": training.max_steps, "seed": args.seed, "runs": table, "step_costs": costs,
                   "verdict": verdict}, handle, indent=2)
    with open(os.path.join(args.output_dir, "table.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown + "\n")
    return {"runs": table, "step_costs": costs, "verdict": verdict}


def judge(mse: dict, adversarial: dict) -> dict[str, bool]:
    """The issue's three targets, each as holds (True) or fails (False)."""
    return {
        "energy_ratio_closer_to_1": abs(1 - adversarial["high_frequency_energy_ratio"]) < abs(1 - mse["high_frequency_energy_ratio"]),
        "random_conv_fd_lower": adversarial["random_conv_fd"] < mse["random_conv_fd"],
        "psnr_within_1_db": adversarial["psnr"] >= mse["psnr"] - PSNR_TOLERANCE_DB,
    }


def render(table: dict, costs: dict, verdict: dict, steps: int, seed: int, timing_steps: int) -> str:
    lines = [f"held-out results after {steps} steps (seed {seed}):", "",
             "| run | " + " | ".join(REPORTED) + " |", "|---|" + "---:|" * len(REPORTED)]
    lines += [f"| {name} | " + " | ".join(f"{row[key]:.5g}" for key in REPORTED) + " |" for name, row in table.items()]
    lines += ["", "targets (adversarial vs mse): " + ", ".join(f"{key} {'holds' if held else 'fails'}" for key, held in verdict.items())]
    if costs:
        lines += ["", f"step cost ({timing_steps} steps, every term active from the first):", "",
                  "| run | seconds per step | x mse | skipped steps | weights finite |", "|---|---:|---:|---:|---|"]
        lines += [f"| {name} | {cost['seconds_per_step']:.3f} | {cost['step_cost_vs_mse']:.2f} | {cost['skipped_steps']} | "
                  f"{'yes' if cost['weights_finite'] else 'no'} |" for name, cost in costs.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
