"""`vqtok train`: train an image tokenizer, then tokenize the held-out images, report metrics and draw them.

    vqtok train --config training/configs/quickstart.yaml
    vqtok train --config training/configs/vq.yaml training.max_steps=200 data.source=path/to/images
    vqtok train --config training/configs/vq.yaml --resume_from_checkpoint latest
    torchrun --standalone --nproc_per_node 2 training/train_tokenizer.py --config training/configs/vq.yaml   # 2 CPU processes
    accelerate launch --num_processes 8 training/train_tokenizer.py --config training/configs/vq.yaml   # 8 GPUs

(`training/train_tokenizer.py` is the same command, as a script the launchers can start.)

Overrides are `section.key=value` (sections `model`, `data`, `training`, `objectives`; values parsed
as YAML; a nested key names its path, e.g. `model.backbone_config.base_channels=16`).
Writes to `training.output_dir`: the tokenizer (`tokenizer/`: model.safetensors, config.json with
`training_metadata`, preprocessor_config.json for `VQImageProcessor` and a README.md model card), `metrics.json`, `reconstructions.png` (held-out originals above their
reconstructions, drawn by the saved tokenizer), `reconstructions_stepN.png` from the periodic
evaluations, `checkpoints/step_N` (with `training.checkpoint_every`) and tracker logs in `logs/`.

Images of a local folder or Hub dataset that cannot be read stop the run before training with one
error listing them (`data.on_bad_image=fail`, the default), or are dropped with a warning and
counted in `training_metadata.dataset.skipped_images` (`data.on_bad_image=skip`).
"""

from __future__ import annotations

import argparse
import functools
import json
import os

import torch
from accelerate.utils import set_seed

from vqtok import VQImageProcessor, VQTokenizer, save_model_card
from vqtok.data import (
    SAMPLE_SOURCE, PixelTransform, check_images, load_image_dataset, load_image_splits, pixel_dataset, stack_pixel_values,
)
from vqtok.metrics.pictures import save_reconstruction_grid
from vqtok.losses import build_objectives
from vqtok.parallel.collectives import gather_json
from vqtok.data.tar_shards import is_shard_source
from vqtok.data.image_streams import open_image_stream, stream_split_files, take_images
from vqtok.validation import describe_tokens
from vqtok.commands import overrides_of, run_config_parser
from vqtok.training.run_config import SECTIONS, load_run_config
from vqtok.training.streamed_data import StreamingImages
from vqtok.training.trainer import make_accelerator, train_tokenizer


def parse_args(argv=None) -> argparse.Namespace:
    return run_config_parser("train", __doc__, "tokenizer", SECTIONS).parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    run = load_run_config(args.config, overrides_of(args))
    config, data, training = run.model, run.data, run.training
    accelerator = make_accelerator(training)
    set_seed(training.seed)

    skipped_images: dict[str, int] = {}

    def checked(images, split: str):
        if data.source != SAMPLE_SOURCE:  # the bundled set is made in memory: nothing to check
            images, bad = check_images(images, data.on_bad_image, warn=accelerator.is_main_process)
            skipped_images[split] = len(bad)
            if bad:
                accelerator.print(f"skipped {len(bad)} unreadable image(s) of split {split!r} (data.on_bad_image=skip)")
        return images

    def prepared(images, split: str, augment: bool):
        return pixel_dataset(checked(images, split), config.image_size, config.in_channels, augment=augment)

    eval_source, split_off = held_out_source(data), 0
    if eval_source is None:
        accelerator.print("no held-out images: evaluation skipped (data.eval_split=null)")

    def say_held_out(split_off: int, kept: int) -> None:
        accelerator.print(
            f"data.source {data.source!r} has no split {data.eval_split!r}: holding out {split_off} of its "
            f"{split_off + kept} {data.train_split!r} images for evaluation "
            f"(data.holdout_fraction={data.holdout_fraction}, the same images in every run)"
        )

    if data.streaming:
        read = [data.train_split] + ([data.eval_split] if eval_source == data.source else [])
        folder = stream_split_files(data.source, read, data.holdout_fraction, "data.source", data.train_split)
        train_set = StreamingImages(
            data.source, data.train_split, PixelTransform(config.image_size, config.in_channels, data.augment, data.augment),
            training.seed, data.shuffle_buffer, data.image_column, data.on_bad_image,
            accelerator.num_processes, accelerator.process_index,
            files=folder.files[data.train_split] if folder is not None else None,
        )
        eval_set = None
        if eval_source is not None:
            files = folder.files[data.eval_split] if folder is not None and eval_source == data.source else None
            stream = open_image_stream(eval_source, data.eval_split, data.image_column, **({"files": files} if files else {}))
            eval_set = pixel_dataset(checked(take_images(stream, data.eval_images), data.eval_split),
                                     config.image_size, config.in_channels)
        if folder is not None and folder.held_out:
            split_off = folder.split_off
            say_held_out(split_off, len(folder.files[data.train_split]))
    elif eval_source in (data.source, None):
        splits = load_image_splits(data.source, data.train_split, data.eval_split if eval_source else None,
                                   data.image_column, data.holdout_fraction, "data.source")
        train_set = prepared(splits.train, data.train_split, data.augment)
        eval_set = prepared(splits.held_out, data.eval_split, False) if splits.held_out is not None else None
        split_off = splits.split_off
        if split_off:
            say_held_out(split_off, len(splits.train))
    else:
        load = functools.partial(load_image_dataset, image_column=data.image_column)
        train_set = prepared(load(data.source, data.train_split, option="data.source"), data.train_split, data.augment)
        eval_set = prepared(load(eval_source, data.eval_split, option="data.eval_source"), data.eval_split, False)
    num_train_images = None if data.streaming else len(train_set)
    model = run.build_model()
    accelerator.print(
        f"{type(model).__name__}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
        f"K={config.codebook_size}, {describe_tokens(config.token_grid, config.codes_per_position)} tokens per image, "
        + (f"streaming {data.source!r}" if data.streaming else f"{num_train_images} training images")
        + f", {accelerator.num_processes} process(es)"
        + (f", fine-tuning {run.init_from}" + (f" with its {' and '.join(training.freeze)} frozen" if training.freeze else "")
           if run.init_from else "")
    )

    results = train_tokenizer(model, train_set, eval_set, training, accelerator, hparams=run.to_dict(),
                              objectives=build_objectives(run.objectives))
    throughput = {k: results.pop(k) for k in ("images_per_second", "train_seconds", "skipped_steps") if k in results}
    if "skipped_images" in results:  # a streamed run meets its unreadable images while training
        skipped_images[data.train_split] = int(sum(gather_json(results.pop("skipped_images"))))

    if accelerator.is_main_process:
        save_dir = os.path.join(training.output_dir, "tokenizer")
        model.config.training_metadata = {
            **run.training_metadata(num_train_images, accelerator.num_processes, results, skipped_images, split_off),
            **throughput,
        }
        model.save_pretrained(save_dir)
        VQImageProcessor.for_tokenizer(config).save_pretrained(save_dir)
        card = dict(
            metrics=results,
            training_data=_describe_data(data, num_train_images, config),
            datasets=[data.source] if _is_hub_dataset(data.source) else None,
            eval_dataset=_dataset_id(eval_source or data.source),
            eval_split=data.eval_split,
        )
        save_model_card(model, save_dir, **card)
        _report(model, save_dir, eval_set, training, results, throughput)
        with open(os.path.join(training.output_dir, "metrics.json"), "w", encoding="utf-8") as handle:
            json.dump({**results, **throughput}, handle, indent=2)
        if args.push_to_hub:
            commit = model.push_to_hub(args.push_to_hub, **card)
            print(f"pushed to {args.push_to_hub} at revision {commit.oid}")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return {**results, **throughput}


def _is_hub_dataset(source: str) -> bool:
    return source != "sample" and not os.path.isdir(source) and not is_shard_source(source)


def _dataset_id(source: str) -> str:
    """How the model card's `model-index` names the evaluation data: the Hub id, the bundled set, or
    a local folder's name."""
    if source == "sample":
        return "vqtok-sample"
    return source if _is_hub_dataset(source) else os.path.basename(os.path.normpath(source))


def held_out_source(data) -> str | None:
    """Where the held-out images come from: `data.eval_source`, else `data.source` (None: no
    evaluation). Tar shards are one split, so their held-out images need an `eval_source`."""
    if not data.eval_split:
        return None
    if data.eval_source is not None:
        return data.eval_source
    if is_shard_source(data.source):
        raise ValueError(
            f"data.source {data.source!r} names tar shards, which hold one split: set data.eval_source to the held-out "
            "shards (or folder, or dataset), or data.eval_split=null to train without evaluation"
        )
    return data.source


def _describe_data(data, num_images: int | None, config) -> str:
    """One line on the training images for the model card."""
    source = "the vqtok bundled sample set (patches of scikit-image's photographs)" if data.source == "sample" else f"`{data.source}`"
    count = "Images streamed" if num_images is None else f"{num_images} images"
    return (
        f"{count} from {source}, split `{data.train_split}`, resized and cropped to "
        f"{config.image_size}x{config.image_size}{', with random crops and flips' if data.augment else ''}."
    )


def _report(model, save_dir: str, eval_set, training, results: dict, throughput: dict) -> None:
    """Reload what was saved, check it tokenizes like the trained model, draw and print the results.
    Both tokenize on the CPU: a model trained on a GPU (TF32 matmuls) may break near-ties otherwise."""
    tokenizer = VQTokenizer.from_pretrained(save_dir).eval()
    if eval_set is not None:
        originals = stack_pixel_values(eval_set, limit=32)
        ids = tokenizer.encode(originals)
        if not torch.equal(ids, model.eval().to("cpu").encode(originals)):
            raise RuntimeError(f"the tokenizer saved in {save_dir} does not tokenize like the trained model")
        grid_path = save_reconstruction_grid(
            originals, tokenizer.decode(ids), os.path.join(training.output_dir, "reconstructions.png")
        )
        shape = describe_tokens(tokenizer.config.token_grid, tokenizer.config.codes_per_position)
        print(f"\ntoken ids of the first held-out image ({shape}):\n{ids[0].tolist()}")
        print(f"\nheld-out results on {len(eval_set)} images after {training.max_steps} steps:")
        for name, value in results.items():
            print(f"  {name:28s} {value:.4f}")
        print(f"wrote {grid_path}")
    if "images_per_second" in throughput:
        print(f"training throughput: {throughput['images_per_second']:.1f} images/s")
    if throughput.get("skipped_steps"):
        print(f"skipped {throughput['skipped_steps']} steps whose loss or gradients were not finite")
    print(f"saved tokenizer to {save_dir}")

