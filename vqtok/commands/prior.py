"""`vqtok prior`: train an autoregressive prior (a GPT-2 or Llama causal LM from transformers) on a token dataset.

    vqtok prior --config training/configs/prior.yaml
    vqtok prior --config training/configs/prior.yaml model.architecture=llama training.max_steps=2000
    vqtok prior --config training/configs/prior.yaml --resume_from_checkpoint latest
    torchrun --standalone --nproc_per_node 2 training/train_prior.py --config training/configs/prior.yaml   # 2 CPU processes
    accelerate launch --num_processes 8 training/train_prior.py --config training/configs/prior.yaml   # 8 GPUs

(`training/train_prior.py` is the same command, as a script the launchers can start.) Overrides are
`section.key=value` (sections `model`: the prior's size, `data`: the token dataset written by
`vqtok tokenize`, `training`: the loop, as for the tokenizer). Writes to
`training.output_dir`: the prior itself (model.safetensors, config.json with `training_metadata` and a
README.md model card; `TokenPrior.from_pretrained(output_dir)` loads it), `metrics.json` (held-out bits
per token of the uniform, histogram and prior codes), `checkpoints/step_N` (with
`training.checkpoint_every`) and tracker logs in `logs/`.
"""

from __future__ import annotations

import argparse
import json
import math
import os

import torch
from accelerate.utils import set_seed

from vqtok import TokenPrior, codes_from_dataset, load_tokenized, tokenized_split
from vqtok.prior import histogram_bits_per_token, save_prior_card
from vqtok.training import load_prior_run_config, make_accelerator, train_prior
from vqtok.training.prior_run_config import PRIOR_SECTIONS
from vqtok.commands import overrides_of, run_config_parser


def parse_args(argv=None) -> argparse.Namespace:
    return run_config_parser("prior", __doc__, "prior", PRIOR_SECTIONS).parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    run = load_prior_run_config(args.config, overrides_of(args))
    data, training = run.data, run.training
    accelerator = make_accelerator(training)
    set_seed(training.seed)

    tokens, layout = load_tokenized(data.tokens)
    train_split = tokenized_split(tokens, data.train_split, data.tokens, option="data.train_split")
    eval_split = tokenized_split(tokens, data.eval_split, data.tokens, option="data.eval_split") if data.eval_split else None
    train_codes = codes_from_dataset(train_split, layout)
    eval_codes = codes_from_dataset(eval_split, layout) if eval_split is not None else None
    prior = TokenPrior(run.model.build_config(layout))
    accelerator.print(
        f"TokenPrior ({prior.config.architecture}): {prior.num_parameters() / 1e6:.2f}M parameters, "
        f"K={layout.codebook_size} codes + BOS, {layout.describe()} tokens per image, "
        f"{len(train_codes)} training images, {accelerator.num_processes} process(es)"
    )
    results = train_prior(prior, train_codes, eval_codes, training, accelerator, hparams=run.to_dict())

    if accelerator.is_main_process and eval_codes is not None:
        results = {
            "uniform_bits": math.log2(layout.codebook_size),
            **histogram_bits_per_token(train_codes, eval_codes, layout.codebook_size),
            "prior_bits": results.pop("bits_per_token"),
            **results,
        }
        results["prior_vs_histogram"] = results["prior_bits"] / results["histogram_entropy_bits"]
    if accelerator.is_main_process:
        save_dir = training.output_dir
        prior.config.training_metadata = run.training_metadata(layout, len(train_codes), accelerator.num_processes, results)
        prior.save_pretrained(save_dir)
        card = dict(metrics=_card_metrics(results), training_data=_describe(run, layout, len(train_codes)),
                    eval_dataset=data.tokens, eval_split=data.eval_split)
        save_prior_card(prior, save_dir, **card)
        with open(os.path.join(training.output_dir, "metrics.json"), "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
        _report(results, save_dir)
        if args.push_to_hub:
            commit = prior.push_to_hub(args.push_to_hub, **card)
            print(f"pushed to {args.push_to_hub} at revision {commit.oid}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


def _card_metrics(results: dict) -> dict:
    names = {"prior_bits": "prior bits/token", "histogram_entropy_bits": "histogram bits/token (train entropy)",
             "histogram_held_out_bits": "histogram bits/token (held-out)", "uniform_bits": "uniform bits/token"}
    return {label: results[key] for key, label in names.items() if key in results}


def _describe(run, layout, num_images: int) -> str:
    return (f"{num_images} token grids ({layout.describe()}, K={layout.codebook_size}) from "
            f"`{run.data.tokens}` (split `{run.data.train_split}`), made by the tokenizer `{layout.tokenizer}`.")


def _report(results: dict, save_dir: str) -> None:
    if "prior_bits" in results:
        print("\nheld-out bits per token (lower is better):")
        print(f"  uniform (log2 K)            {results['uniform_bits']:.4f}")
        print(f"  histogram (train entropy)   {results['histogram_entropy_bits']:.4f}")
        print(f"  histogram (held-out)        {results['histogram_held_out_bits']:.4f}")
        print(f"  prior                       {results['prior_bits']:.4f}")
        print(f"  prior / histogram           {results['prior_vs_histogram']:.3f}")
    print(f"training: {results['train_seconds']:.0f} s, {results['sequences_per_second']:.0f} sequences/s")
    print(f"saved prior to {save_dir}")

