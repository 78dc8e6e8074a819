"""Training: the Accelerate loop (`trainer`), its options (`arguments`), the seeded, resumable
stream of training images (`sample_stream`), checkpoints (`checkpoints`) and YAML run configs
(`run_config`). Model code never imports from here."""

from .arguments import DataArguments, TrainingArguments
from .run_config import RunConfig, load_run_config
from .trainer import make_accelerator, train_tokenizer

__all__ = ["DataArguments", "RunConfig", "TrainingArguments", "load_run_config", "make_accelerator", "train_tokenizer"]
