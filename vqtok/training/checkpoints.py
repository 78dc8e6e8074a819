"""Training checkpoints: `accelerator.save_state` folders `output_dir/checkpoints/step_N`,
written atomically, pruned to a limit, and found again for `resume_from_checkpoint`."""

from __future__ import annotations

import os
import re
import shutil

from accelerate import Accelerator

from .arguments import TrainingArguments

CHECKPOINT_PREFIX = "step_"


def checkpoint_dir(output_dir: str, step: int) -> str:
    return os.path.join(output_dir, "checkpoints", f"{CHECKPOINT_PREFIX}{step}")


def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoint folders under `output_dir/checkpoints`, oldest first."""
    root = os.path.join(output_dir, "checkpoints")
    if not os.path.isdir(root):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(root) if (m := re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", name))]
    return [os.path.join(root, name) for _, name in sorted(found)]


def resolve_checkpoint(args: TrainingArguments) -> str | None:
    """The folder `args.resume_from_checkpoint` names (None: start fresh)."""
    choice = args.resume_from_checkpoint
    if not choice:
        return None
    if choice == "latest":
        found = list_checkpoints(args.output_dir)
        return found[-1] if found else None
    if not os.path.isdir(choice):
        raise ValueError(f"resume_from_checkpoint={choice!r} is neither 'latest' nor an existing checkpoint folder")
    return choice


def save_checkpoint(accelerator: Accelerator, args: TrainingArguments, step: int) -> str:
    """`save_state` into `step_N` (written as `step_N.partial`, renamed when every process is done,
    so an interrupted save is never taken for a checkpoint), then prune to the total limit."""
    final = checkpoint_dir(args.output_dir, step)
    partial = final + ".partial"
    if accelerator.is_main_process and os.path.isdir(partial):
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(partial)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if os.path.isdir(final):
            shutil.rmtree(final)
        os.replace(partial, final)
        if args.checkpoints_total_limit:
            for old in list_checkpoints(args.output_dir)[: -args.checkpoints_total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final
