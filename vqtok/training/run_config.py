"""Run configurations for the training scripts: a YAML file with `model`, `data` and `training`
sections, plus `section.key=value` overrides from the command line.

Example (`training/configs/vq.yaml`)::

    model:            # any tokenizer config; model_type picks the quantizer
      model_type: vqtok-vq
      codebook_size: 512
    data:
      source: sample  # "sample", a local image folder, or a Hub dataset name
    training:
      max_steps: 1000
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import yaml

from ..configuration import VQTokenizerConfig
from ..registry import registered_config_class
from .arguments import DataArguments, TrainingArguments, arguments_from_dict

SECTIONS = ("model", "data", "training")


@dataclass
class RunConfig:
    """Everything one training run needs."""

    model: VQTokenizerConfig
    data: DataArguments = field(default_factory=DataArguments)
    training: TrainingArguments = field(default_factory=TrainingArguments)

    def to_dict(self) -> dict:
        """The run as plain sections (what the trackers record as hyper-parameters)."""
        model = {k: v for k, v in self.model.to_diff_dict().items() if k not in ("training_metadata", "transformers_version")}
        return {"model": model, "data": asdict(self.data), "training": asdict(self.training)}

    def training_metadata(self, num_train_images: int, num_processes: int, final_metrics: dict) -> dict:
        """What the saved tokenizer records about its training (`VQTokenizerConfig.training_metadata`):
        how to prepare images for it, what it was trained on and how, and how well it did."""
        from .. import __version__

        model, data, training = self.model, self.data, self.training
        return {
            "image_size": model.image_size,
            "in_channels": model.in_channels,
            "pixel_range": [-1.0, 1.0],
            "pixel_normalization": "x / 127.5 - 1 on uint8 pixels (RGB, or L for 1 channel)",
            "resize": "short side to image_size (bicubic), then a square centre crop",
            "dataset": {
                "source": data.source,
                "train_split": data.train_split,
                "eval_split": data.eval_split,
                "image_column": data.image_column,
                "num_train_images": num_train_images,
                "augmentation": "random crop and horizontal flip" if data.augment else "none",
            },
            "steps": training.max_steps,
            "seed": training.seed,
            "batch_size_per_process": training.batch_size,
            "num_processes": num_processes,
            "gradient_accumulation_steps": training.gradient_accumulation_steps,
            "global_batch_size": training.batch_size * num_processes * training.gradient_accumulation_steps,
            "learning_rate": training.learning_rate,
            "lr_scheduler": training.lr_scheduler,
            "warmup_steps": training.warmup_steps,
            "mixed_precision": training.mixed_precision,
            "final_metrics": {k: float(v) for k, v in final_metrics.items()},
            "vqtok_version": __version__,
        }


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings to a raw config dict (values parsed as YAML scalars)."""
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"override {item!r} must look like section.key=value, e.g. training.max_steps=200")
        path, value = item.split("=", 1)
        section, key = path.split(".", 1)
        if section not in SECTIONS:
            raise ValueError(f"override {item!r}: unknown section {section!r}; sections: {list(SECTIONS)}")
        raw.setdefault(section, {})[key] = yaml.safe_load(value)
    return raw


def build_run_config(raw: dict) -> RunConfig:
    """Turn a raw dict (parsed YAML) into typed configs; unknown sections or keys raise `ValueError`."""
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown section(s) {unknown} in run config; sections: {list(SECTIONS)}")
    model_values = dict(raw.get("model") or {})
    model_type = model_values.pop("model_type", "vqtok-vq")
    try:
        config_class = registered_config_class(model_type)
    except ValueError as error:
        raise ValueError(f"model.model_type: {error}") from None
    return RunConfig(
        model=config_class(**model_values),
        data=arguments_from_dict(DataArguments, raw.get("data") or {}, "data"),
        training=arguments_from_dict(TrainingArguments, raw.get("training") or {}, "training"),
    )


def load_run_config(path: str | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (or start from defaults when `path` is None) and apply overrides."""
    raw: dict = {}
    if path is not None:
        with open(path, encoding="utf-8") as handle:
            raw = yaml.safe_load(handle) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"run config {path} must be a mapping with sections {list(SECTIONS)}")
    return build_run_config(apply_overrides(raw, overrides or []))
