"""`vqtok evaluate`: evaluate a tokenizer on held-out images with the field's reconstruction metrics.

    vqtok evaluate                                  # the quickstart tokenizer, bundled test split
    vqtok evaluate --tokenizer outputs/vqgan/tokenizer --source path/to/images --split val
    vqtok evaluate --vgg_weights vgg16-397923af.pth --inception_weights weights-inception-2015-12-05-6726825d.pth

Reports PSNR, SSIM, LPIPS (VGG16), rFID (the Fréchet distance of Inception features between the
images and their reconstructions), the high-frequency energy ratio (1.0: as sharp as the originals),
MSE, and codebook usage: perplexity, entropy (bits) and the fraction of codes used. Images pass
through the tokenizer's own processor. LPIPS and rFID read their networks' weights from the torch
hub cache (downloaded there on first use) or from `--vgg_weights` / `--inception_weights`; offline
without them, the error names the missing file (or pass `--no_lpips` / `--no_rfid`).

The results are printed, written to `--output` (JSON), logged to TensorBoard under `--logdir`
(default: the `logs` folder beside a local tokenizer folder, where its training logged), and, for a
local tokenizer folder, recorded in its `config.json` (`training_metadata["evaluation"]`) and its
model card (the Evaluation table and the `model-index` metadata). Figures computed with `random`
weights (a plumbing check) are printed only.
"""

from __future__ import annotations

import argparse
import json
import os
import re

from huggingface_hub import ModelCard

from vqtok.commands import command_parser, holdout_fraction
from vqtok import save_model_card
from vqtok.data import image_splits, load_image_dataset, load_image_splits
from vqtok.metrics import evaluate_tokenizer
from vqtok.metrics import LPIPS, RANDOM_WEIGHTS, InceptionFeatures
from vqtok.tokens.tokenization import load_tokenizer_and_processor

DEFAULT_TOKENIZER = "outputs/quickstart/tokenizer"


def parse_args(argv=None) -> argparse.Namespace:
    parser = command_parser("evaluate", __doc__, announced=("tokenizer", "source", "split"))
    parser.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help="tokenizer folder or Hub repo id")
    parser.add_argument("--source", default="sample", help="'sample' (bundled), an image folder, or a Hub dataset name")
    parser.add_argument("--split", default="test",
                        help="the held-out split; a source without it (an image folder) holds out part of 'train', as "
                        "`vqtok train` did")
    parser.add_argument("--holdout_fraction", type=float, default=None,
                        help="the part of 'train' held out when the source has no --split (default: the tokenizer's "
                        "training run's data.holdout_fraction, else 0.1)")
    parser.add_argument("--image_column", default="image", help="the column holding the images")
    parser.add_argument("--max_images", type=int, default=None, help="evaluate the first N images only")
    parser.add_argument("--batch_size", type=int, default=64, help="images per batch")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--vgg_weights", default=None, help="torchvision's vgg16-397923af.pth for LPIPS ('random': plumbing check)")
    parser.add_argument("--inception_weights", default=None,
                        help="torch-fidelity's weights-inception-2015-12-05-6726825d.pth for rFID ('random': plumbing check)")
    parser.add_argument("--no_lpips", action="store_true", help="skip LPIPS")
    parser.add_argument("--no_rfid", action="store_true", help="skip rFID")
    parser.add_argument("--output", default=None, help="also write the results to this JSON file")
    parser.add_argument("--logdir", default=None, help="TensorBoard folder (default: <tokenizer>/../logs for a local folder)")
    parser.add_argument("--no_save", action="store_true", help="leave the tokenizer's config and card untouched")
    parser.add_argument("--push_to_hub", metavar="REPO_ID",
                        help="then publish the tokenizer to this Hub repo, its card with these results")
    args = parser.parse_args(argv)
    if args.max_images is not None and args.max_images < 2:
        parser.error(f"--max_images must be at least 2 (rFID needs a covariance), got {args.max_images}")
    if args.batch_size < 1:
        parser.error(f"--batch_size must be at least 1, got {args.batch_size}")
    return args


def main(argv=None) -> dict[str, float]:
    args = parse_args(argv)
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer, processor = load_tokenizer_and_processor(args.tokenizer)
    lpips = None if args.no_lpips else LPIPS.pretrained(args.vgg_weights)  # weights first: fail before any work
    judges = {} if args.no_rfid else {"rfid": InceptionFeatures.pretrained(args.inception_weights)}
    images = held_out_images(args, tokenizer)
    if args.max_images is not None:
        images = images.select(range(min(args.max_images, len(images))))
    dataset = images.with_transform(
        lambda batch: {"pixel_values": list(processor(batch["image"], return_tensors="pt")["pixel_values"])})
    results = evaluate_tokenizer(tokenizer.to(device), dataset, args.batch_size, lpips=lpips, feature_distances=judges)

    plumbing_only = RANDOM_WEIGHTS in (args.vgg_weights, args.inception_weights)
    print(f"\n{args.tokenizer} on {args.source} ({args.split}, {len(dataset)} images):")
    for name, value in results.items():
        print(f"  {name:28s} {value:.4f}")
    if plumbing_only:
        print("(random judging weights: LPIPS / rFID above are a plumbing check, not the metrics; nothing saved)")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    local = os.path.isdir(args.tokenizer)
    logdir = args.logdir or (os.path.join(os.path.dirname(os.path.normpath(args.tokenizer)), "logs") if local else None)
    if logdir and not plumbing_only:
        log_to_tensorboard(results, logdir, args.split, (tokenizer.config.training_metadata or {}).get("steps", 0))
    card = card_inputs(args.tokenizer if local else None, results, args.source, args.split)
    if local and not args.no_save and not plumbing_only:
        record_in_tokenizer(tokenizer, args.tokenizer, results, args.source, args.split, len(dataset), card)
        print(f"recorded in {os.path.join(args.tokenizer, 'config.json')} and its model card")
    if args.push_to_hub:
        if plumbing_only:
            raise ValueError("--push_to_hub with random judging weights would publish a plumbing check as metrics: "
                             "evaluate with the real --vgg_weights / --inception_weights, or --no_lpips / --no_rfid")
        commit = tokenizer.push_to_hub(args.push_to_hub, **card)
        print(f"pushed to {args.push_to_hub} at revision {commit.oid}")
    return results


def held_out_images(args: argparse.Namespace, tokenizer):
    """The images of `--source`'s `--split`, or, for a source without it, the part of its `train`
    split that `vqtok train` held out (said in one line)."""
    if args.split in image_splits(args.source, "--source"):
        return load_image_dataset(args.source, args.split, args.image_column, "--source")
    fraction = holdout_fraction(tokenizer, args.holdout_fraction)
    splits = load_image_splits(args.source, "train", args.split, args.image_column, fraction, "--source")
    print(f"--source {args.source!r} has no split {args.split!r}: evaluating on the {splits.split_off} of its "
          f"{splits.split_off + len(splits.train)} 'train' images held out for evaluation (fraction {fraction}, the "
          "images `vqtok train` held out)")
    return splits.held_out


def log_to_tensorboard(results: dict[str, float], logdir: str, split: str, step: int) -> None:
    """The results as scalars `evaluation/<split>/<name>` at the tokenizer's training step."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(logdir) as writer:
        for name, value in results.items():
            writer.add_scalar(f"evaluation/{split}/{name}", value, step)


def card_inputs(folder: str | None, results: dict[str, float], source: str, split: str) -> dict:
    """The model card's inputs for these results, keeping the training-data text, license and
    datasets of the card already in `folder` (a local tokenizer folder) where there is one."""
    kept = {}
    card_path = os.path.join(folder, "README.md") if folder else None
    if card_path and os.path.isfile(card_path):
        previous = ModelCard.load(card_path)
        kept = {"license": previous.data.license, "datasets": previous.data.datasets,
                "training_data": _training_data_text(previous.text)}
    dataset_id = "vqtok-sample" if source == "sample" else os.path.basename(os.path.normpath(source)) if os.path.isdir(source) else source
    return {"metrics": results, "eval_dataset": dataset_id, "eval_split": split,
            **{name: value for name, value in kept.items() if value}}


def record_in_tokenizer(tokenizer, folder: str, results: dict[str, float], source: str, split: str, images: int,
                        card: dict) -> None:
    """Write the results into the folder's `config.json` (`training_metadata["evaluation"]`) and
    re-render its model card with `card` (see `card_inputs`)."""
    from vqtok import __version__

    config = tokenizer.config
    config.training_metadata = {**(config.training_metadata or {}), "evaluation": {
        "source": source, "split": split, "num_images": images, "metrics": results, "vqtok_version": __version__}}
    config.save_pretrained(folder)
    save_model_card(tokenizer, folder, **card)


def _training_data_text(card_text: str) -> str | None:
    """The card's "Training data" paragraph, without the Hub-datasets line the card adds itself."""
    found = re.search(r"^## Training data\n(.*?)(?=^#)", card_text, flags=re.MULTILINE | re.DOTALL)
    if found is None:
        return None
    text = re.sub(r"\n*Hub datasets: .*$", "", found.group(1).strip(), flags=re.DOTALL)
    return text or None

