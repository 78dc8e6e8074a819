"""The tokenizer training loop, on Hugging Face Accelerate (one CPU, one GPU, many of either).

`train_tokenizer` runs the loop; `training/train_tokenizer.py` wraps it in a command line with
YAML configs. The same code runs under `python` and under `accelerate launch`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from datasets import Dataset
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from .data import collate_pixel_values, stack_pixel_values
from .metrics import evaluate_tokenizer
from .visualize import save_reconstruction_grid


@dataclass
class TrainingArguments:
    """Options of the training loop.

    Args:
        output_dir: where evaluation grids (and the trained model, in the script) are written.
        max_steps: optimizer steps to run.
        batch_size: images per process per micro-batch.
        learning_rate: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        lr_scheduler: any `transformers.get_scheduler` name (`cosine`, `linear`, `constant_with_warmup`, ...).
        warmup_steps: linear warm-up steps.
        gradient_accumulation_steps: micro-batches per optimizer step.
        max_grad_norm: gradient clipping (0 disables).
        mixed_precision: `no`, `fp16` or `bf16` (quantizer maths stays fp32 regardless).
        eval_every: evaluate and write a reconstruction grid every this many steps (0: only at the end).
        eval_batch_size: images per evaluation batch.
        log_every: steps between log records.
        seed: seed for model initialisation, data order and augmentation.
        num_workers: DataLoader worker processes.
    """

    output_dir: str = "outputs/tokenizer"
    max_steps: int = 1000
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    lr_scheduler: str = "cosine"
    warmup_steps: int = 50
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    eval_every: int = 0
    eval_batch_size: int = 128
    log_every: int = 10
    seed: int = 0
    num_workers: int = 0

    @classmethod
    def from_dict(cls, values: dict) -> "TrainingArguments":
        """Build from a dict, rejecting unknown keys with a `ValueError` that lists the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def __post_init__(self):
        for name in ("max_steps", "batch_size", "gradient_accumulation_steps", "eval_batch_size", "log_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"training option `{name}` must be a positive integer, got {getattr(self, name)!r}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise ValueError(f"training option `mixed_precision` must be 'no', 'fp16' or 'bf16', got {self.mixed_precision!r}")


def infinite_batches(dataloader: DataLoader):
    """Yield batches forever, starting a new epoch (new shuffle) when one ends."""
    epoch = 0
    while True:
        if hasattr(dataloader, "set_epoch"):
            dataloader.set_epoch(epoch)
        yield from dataloader
        epoch += 1


def train_tokenizer(
    model,
    train_dataset: Dataset,
    eval_dataset: Dataset | None,
    args: TrainingArguments,
    accelerator: Accelerator | None = None,
) -> dict[str, float]:
    """Train `model` on `train_dataset` (rows with `pixel_values`) and return the final evaluation
    on `eval_dataset` (empty dict without one). `model` is trained in place."""
    accelerator = accelerator or Accelerator(
        mixed_precision=args.mixed_precision, gradient_accumulation_steps=args.gradient_accumulation_steps
    )
    set_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    dataloader = DataLoader(
        train_dataset,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=len(train_dataset) >= args.batch_size,
        collate_fn=collate_pixel_values,
        num_workers=args.num_workers,
        generator=generator,
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, weight_decay=args.weight_decay)
    scheduler = get_scheduler(
        args.lr_scheduler, optimizer, num_warmup_steps=args.warmup_steps, num_training_steps=args.max_steps
    )
    model, optimizer, dataloader, scheduler = accelerator.prepare(model, optimizer, dataloader, scheduler)
    model.train()

    progress = tqdm(total=args.max_steps, desc="training", disable=not accelerator.is_main_process)
    batches = infinite_batches(dataloader)
    step = 0
    while step < args.max_steps:
        with accelerator.accumulate(model):
            output = model(next(batches))
            accelerator.backward(output.loss)
            if accelerator.sync_gradients and args.max_grad_norm > 0:
                accelerator.clip_grad_norm_(trainable, args.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        if not accelerator.sync_gradients:
            continue
        step += 1
        progress.update(1)
        if step % args.log_every == 0 or step == args.max_steps:
            record = {name: float(value.detach()) for name, value in output.losses.items()}
            record.update({name: float(value) for name, value in output.stats.items()})
            record["loss"] = float(output.loss.detach())
            record["lr"] = scheduler.get_last_lr()[0]
            progress.set_postfix(loss=f"{record['loss']:.4f}", ppl=f"{record.get('perplexity', math.nan):.0f}")
            accelerator.log(record, step=step)
        if eval_dataset is not None and args.eval_every and step % args.eval_every == 0 and step < args.max_steps:
            _evaluate_and_draw(accelerator, model, eval_dataset, args, step)
    progress.close()
    results = _evaluate_and_draw(accelerator, model, eval_dataset, args, step) if eval_dataset is not None else {}
    accelerator.wait_for_everyone()
    return results


def _evaluate_and_draw(accelerator: Accelerator, model, eval_dataset: Dataset, args: TrainingArguments, step: int) -> dict:
    """Evaluate on the main process, log the metrics and write a reconstruction grid."""
    results: dict[str, float] = {}
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        results = evaluate_tokenizer(unwrapped, eval_dataset, args.eval_batch_size)
        accelerator.log({f"eval/{k}": v for k, v in results.items()}, step=step)
        originals = stack_pixel_values(eval_dataset, limit=16).to(unwrapped.device)
        reconstructions = unwrapped.decode(unwrapped.encode(originals))
        save_reconstruction_grid(originals, reconstructions, os.path.join(args.output_dir, f"reconstructions_step{step}.png"))
    accelerator.wait_for_everyone()
    return results
