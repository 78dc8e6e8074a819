"""Training: the tokenizer's Accelerate loop (`trainer`) and what every loop shares (`loop`: a list of
updates, each a loss, a module, an optimizer, a schedule and a cadence), its options (`arguments`),
the weights' moving average (`weight_ema`),
the seeded, resumable training rows (held in memory: `in_memory_data`; read from a stream: `streamed_data`), checkpoints (`checkpoints`) and YAML
run configs (`run_config`); the prior's loop (`prior_trainer`) and run configs (`prior_run_config`)
built from the same pieces. Model code never imports from here."""

from .arguments import DataArguments, LoopArguments, TokenDataArguments, TrainingArguments
from .prior_run_config import PriorModelArguments, PriorRunConfig, load_prior_run_config
from .prior_trainer import train_prior
from .run_config import RunConfig, load_run_config
from .trainer import make_accelerator, train_tokenizer

__all__ = [
    "DataArguments",
    "LoopArguments",
    "PriorModelArguments",
    "PriorRunConfig",
    "RunConfig",
    "TokenDataArguments",
    "TrainingArguments",
    "load_prior_run_config",
    "load_run_config",
    "make_accelerator",
    "train_prior",
    "train_tokenizer",
]
