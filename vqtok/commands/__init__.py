"""The command line: `vqtok <command> ...`, one command per job of the library.

    vqtok train --config training/configs/quickstart.yaml        # train a tokenizer
    vqtok evaluate --tokenizer outputs/quickstart/tokenizer       # the field's metrics on held-out images
    vqtok tokenize --tokenizer outputs/quickstart/tokenizer       # images -> token datasets
    vqtok prior --config training/configs/prior.yaml              # train an autoregressive prior on tokens
    vqtok sample                                                  # images from sampled tokens
    vqtok convert --source llamagen --input vq_ds16_c2i.pt --output outputs/llamagen-vq16
    vqtok shards --source path/to/images --output shards         # images -> webdataset tar shards

Each command is a module here with a `main(argv)` that raises on bad input (for Python callers and
tests); `run` is how the command line calls it: a user error (a bad option, a missing file, data that
cannot be read) is printed as one line naming it, `vqtok <command>: error: ...`, with exit status 2;
`--debug` shows the traceback instead. The scripts in `training/` run the same commands.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import torch

COMMANDS = {
    "train": "train a tokenizer from a YAML run config",
    "evaluate": "measure a tokenizer on held-out images (PSNR, SSIM, LPIPS, rFID, codes used)",
    "tokenize": "turn image datasets into token datasets for transformers",
    "prior": "train an autoregressive prior (a transformers causal LM) on tokens",
    "sample": "sample token grids (uniform, histogram or the prior) and decode them into images",
    "convert": "import a pretrained tokenizer of another project (LlamaGen, Janus, Chameleon, taming, diffusers)",
    "shards": "write images into webdataset tar shards",
}
# Training and tokenizing let a GPU's float32 matmuls run in TF32; evaluating and sampling keep full precision.
TF32_COMMANDS = ("train", "tokenize", "prior")
USER_ERRORS = (ValueError, TypeError, OSError)
"""What a user's input can raise (bad options and values, missing or unreadable files, data and Hub
errors): shown as one line. Anything else is a bug in vqtok or below, shown with its traceback."""


class CommandParser(argparse.ArgumentParser):
    """An argument parser that says, in one line, which of its `announced` options the command line
    left at their defaults (where to read and write: `defaults in use: --tokenizer ..., --source ...`)."""

    def __init__(self, *args, announced: tuple[str, ...] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.announced = announced

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        given = {word.split("=")[0] for word in (sys.argv[1:] if args is None else args)}
        defaults = [f"{action.option_strings[0]} {_shown(getattr(parsed, action.dest))}" for action in self._actions
                    if action.dest in self.announced and not given & set(action.option_strings)]
        if defaults:
            print(f"defaults in use: {', '.join(defaults)}")
        return parsed


def _shown(value) -> str:
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def command_parser(command: str, doc: str, announced: tuple[str, ...] = ()) -> CommandParser:
    """The argument parser of `command`, described by its module's `doc`, with `--debug`; the options
    named in `announced` are said in one line when left at their defaults."""
    parser = CommandParser(prog=f"vqtok {command}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
                           announced=announced)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error instead of one line")
    return parser


def run_config_parser(command: str, doc: str, model_name: str, sections: tuple[str, ...]) -> argparse.ArgumentParser:
    """The arguments of a command that trains from a run config: `--config` (a YAML run config of
    `sections`), `--resume_from_checkpoint`, `--push_to_hub` (publishing the trained `model_name`) and
    `section.key=value` overrides."""
    parser = command_parser(command, doc)
    parser.add_argument("--config", required=True,
                        help=f"YAML run config (sections: {', '.join(sections)}); see training/configs/")
    parser.add_argument(
        "--resume_from_checkpoint",
        help="'latest' (newest checkpoint in output_dir/checkpoints, or a fresh start if none) or a checkpoint "
        "folder; same as training.resume_from_checkpoint=...",
    )
    parser.add_argument("--push_to_hub", metavar="REPO_ID", help=f"after training, publish the {model_name} to this Hub repo")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. training.max_steps=200")
    return parser


def overrides_of(args: argparse.Namespace) -> list[str]:
    """The overrides of a parsed `run_config_parser`, `--resume_from_checkpoint` included."""
    overrides = list(args.overrides)
    if args.resume_from_checkpoint:
        overrides.append(f"training.resume_from_checkpoint={args.resume_from_checkpoint}")
    return overrides


def holdout_fraction(tokenizer, given: float | None = None) -> float:
    """The part of a source's `train` split held out where the source has no held-out split: `given`,
    else what the tokenizer's training run held out (its `training_metadata`), else the default of
    `data.holdout_fraction`: so `vqtok evaluate` and `vqtok tokenize` hold out what `vqtok train` did."""
    from vqtok.training.arguments import DataArguments

    if given is not None:
        return given
    dataset = (tokenizer.config.training_metadata or {}).get("dataset", {})
    return dataset.get("held_out_from_train", {}).get("fraction", DataArguments.options["holdout_fraction"].default)


def run(command: str, argv: list[str] | None = None) -> int:
    """Run `command` with the arguments `argv` (default: the process's) as the command line does;
    returns the exit status (2 for a user error, reported in one line unless `--debug`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    module = importlib.import_module(f"{__name__}.{command}")
    if command in TF32_COMMANDS:
        torch.set_float32_matmul_precision("high")
    try:
        module.main(argv)
    except USER_ERRORS as error:
        if "--debug" in argv:
            raise
        message = str(error) or type(error).__name__
        print(f"vqtok {command}: error: {message}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """The `vqtok` console command (also `python -m vqtok`): `vqtok <command> [options]`; returns
    the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in COMMANDS:
        parser = argparse.ArgumentParser(
            prog="vqtok", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog="Run `vqtok <command> --help` for a command's options.",
        )
        parser.add_argument("command", choices=list(COMMANDS), help="; ".join(f"{k}: {v}" for k, v in COMMANDS.items()))
        parser.parse_args(argv[:1])  # prints the usage (exit 0 for --help, 2 for an unknown command)
        return 2
    return run(argv[0], argv[1:])


def script(command: str) -> None:
    """What the scripts in `training/` run: `command`, then exit with its status."""
    sys.exit(run(command))
