"""Run configurations for the training scripts: a YAML file with `model`, `data`, `training` and
(optionally) `objectives` sections, plus `section.key=value` overrides from the command line.

Example (`training/configs/vq.yaml`)::

    model:            # any tokenizer config; model_type picks the quantizer
      model_type: vqtok-vq
      codebook_size: 512
    data:
      source: sample  # "sample", a local image folder, or a Hub dataset name
    training:
      max_steps: 1000
    objectives: {}    # training objectives with networks of their own, name -> options (see vqtok.losses)

A run that fine-tunes a tokenizer names it in `model.init_from` (a folder or a Hub repo id): the
rest of its `model` section then changes that tokenizer's config, where it may change (see
`VQTokenizerConfig.with_training_changes`).
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field

import yaml

from ..backbones import DEFAULT_BACKBONE, backbone_class
from ..configuration import VQTokenizerConfig
from ..losses import OBJECTIVES
from ..auto import VQTokenizer, registered_config_class
from .arguments import DataArguments, TrainingArguments, arguments_from_dict, parse_options
from .trainer import RAW_WEIGHTS_FOLDER

SECTIONS = ("model", "data", "training", "objectives")


@dataclass
class RunConfig:
    """Everything one training run needs."""

    model: VQTokenizerConfig
    data: DataArguments = field(default_factory=DataArguments)
    training: TrainingArguments = field(default_factory=TrainingArguments)
    objectives: dict[str, dict] = field(default_factory=dict)
    """Training objectives switched on, name -> options (see `vqtok.losses.build_objectives`)."""
    init_from: str | None = None
    """The tokenizer the run fine-tunes (a folder or a Hub repo id; `model` is its config, changed
    where the run asks), or None for a run from scratch."""

    def build_model(self):
        """The tokenizer this run trains: `init_from`'s weights under `model`, or a fresh one."""
        if self.init_from is None:
            return VQTokenizer.from_config(self.model)
        return VQTokenizer.from_pretrained(self.init_from, config=self.model)

    def to_dict(self) -> dict:
        """The run as plain sections (what the trackers record as hyper-parameters)."""
        model = {k: v for k, v in self.model.to_diff_dict().items() if k not in ("training_metadata", "transformers_version")}
        if self.init_from is not None:
            model["init_from"] = self.init_from
        return {"model": model, "data": asdict(self.data), "training": asdict(self.training), "objectives": self.objectives}

    def training_metadata(self, num_train_images: int | None, num_processes: int, final_metrics: dict,
                          skipped_images: dict[str, int] | None = None, held_out_from_train: int = 0) -> dict:
        """What the saved tokenizer records about its training (`VQTokenizerConfig.training_metadata`):
        how to prepare images for it, what it was trained on and how, and how well it did.
        `skipped_images`: split name -> unreadable images dropped (`data.on_bad_image=skip`);
        `num_train_images` is None for a streamed run; `held_out_from_train`: the images of the
        training split held out for evaluation (a source without `eval_split`)."""
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
                "eval_source": data.eval_source,
                "streaming": data.streaming,
                "num_train_images": num_train_images,
                "augmentation": "random crop and horizontal flip" if data.augment else "none",
                "on_bad_image": data.on_bad_image,
                "skipped_images": dict(skipped_images or {}),
                **({"held_out_from_train": {"images": held_out_from_train, "fraction": data.holdout_fraction}}
                   if held_out_from_train else {}),
            },
            **run_metadata(training, num_processes),
            **self._fine_tuning_metadata(),
            **({"weight_ema": {"decay": training.ema_decay,
                               "raw_weights": os.path.join(training.output_dir, RAW_WEIGHTS_FOLDER)}}
               if training.ema_decay is not None else {}),
            "objectives": self.objectives,
            "final_metrics": {k: float(v) for k, v in final_metrics.items()},
            "vqtok_version": __version__,
        }


    def _fine_tuning_metadata(self) -> dict:
        """What a fine-tuned tokenizer records of where it started: the tokenizer, the parts kept
        frozen and, for a tokenizer converted from another project, that project (its card keeps
        naming it and its license)."""
        if self.init_from is None:
            return {}
        started = self.model.training_metadata or {}
        return {"fine_tuned_from": {"tokenizer": self.init_from, "frozen": list(self.training.freeze)},
                **({"converted_from": started["converted_from"]} if "converted_from" in started else {})}


def run_metadata(training: TrainingArguments, num_processes: int) -> dict:
    """How a model was trained, for its config's `training_metadata`: steps, seed, batch sizes,
    processes, learning rate and schedule, precision."""
    return {
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
    }


def apply_overrides(raw: dict, overrides: list[str], sections: tuple[str, ...] = SECTIONS) -> dict:
    """Apply `section.key=value` strings to a raw config dict; a nested key names its path
    (`model.backbone_config.base_channels=16`). Values are parsed as YAML scalars, except that only
    true/false are booleans (`training.mixed_precision=no` stays the string `no`; a boolean option
    takes yes/no/on/off too, see `parse_option`)."""
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ValueError(f"override {item!r} must look like section.key=value, e.g. training.max_steps=200")
        path, value = item.split("=", 1)
        section, *keys = path.split(".")
        if section not in sections:
            raise ValueError(f"override {item!r}: unknown section {section!r}; sections: {list(sections)}")
        table, where = raw, "the run config"
        for key in [section, *keys[:-1]]:
            if table.get(key) is None:
                table[key] = {}
            if not isinstance(table[key], dict):
                raise ValueError(f"`{key}` of {where} must be a mapping of keys to values, got {table[key]!r}")
            table, where = table[key], f"`{key}`"
        table[keys[-1]] = _override_value(value)
    return raw


class _RunConfigLoader(yaml.SafeLoader):
    """YAML's safe loader, also reading `1e-5` (no dot) as a float, as YAML 1.2 and Python do: PyYAML
    follows YAML 1.1, where it is the string "1e-5"."""


_RunConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _load_yaml(stream):
    return yaml.load(stream, Loader=_RunConfigLoader)


def _override_value(text: str):
    value = _load_yaml(text)
    if isinstance(value, bool) and text.strip().lower() not in ("true", "false"):
        return text.strip()  # YAML 1.1 reads yes/no/on/off as booleans; a string option wants the word
    return value


def parse_model_section(config_class: type[VQTokenizerConfig], values: dict,
                        backbone_type: str = DEFAULT_BACKBONE) -> dict:
    """The `model` section's values parsed to their declared types, the backbone's fields with the
    options of their `backbone_type` (`backbone_type` where they name none)."""
    values = parse_options(config_class.declared_options(), values, "model")
    backbone = values.get("backbone_config")
    if isinstance(backbone, dict):
        backbone = dict(backbone)
        backbone_type = backbone.pop("backbone_type", backbone_type)
        options = backbone_class(backbone_type).options if isinstance(backbone_type, str) else {}
        values["backbone_config"] = {"backbone_type": backbone_type,
                                     **parse_options(options, backbone, "model.backbone_config")}
    return values


def build_run_config(raw: dict) -> RunConfig:
    """Turn a raw dict (parsed YAML) into typed configs; unknown sections or keys raise `ValueError`."""
    check_sections(raw, SECTIONS)
    model_values = raw.get("model") or {}
    if not isinstance(model_values, dict):
        raise ValueError(f"section `model` of the run config must be a mapping of keys to values, got {model_values!r}")
    model_values = dict(model_values)
    init_from = model_values.pop("init_from", None)
    model = fine_tuned_config(init_from, model_values) if init_from is not None else fresh_config(model_values)
    return RunConfig(
        model=model,
        data=arguments_from_dict(DataArguments, raw.get("data") or {}, "data"),
        training=arguments_from_dict(TrainingArguments, raw.get("training") or {}, "training"),
        objectives=parse_objectives_section(raw.get("objectives") or {}),
        init_from=init_from,
    )


def fresh_config(values: dict) -> VQTokenizerConfig:
    """The config of the `model` section of a run from scratch (its `model_type`, `vqtok-vq` by default)."""
    model_type = values.pop("model_type", "vqtok-vq")
    try:
        config_class = registered_config_class(model_type)
    except (TypeError, ValueError) as error:
        raise ValueError(f"model.model_type: {error}") from None
    return config_class(**parse_model_section(config_class, values))


def fine_tuned_config(init_from, values: dict) -> VQTokenizerConfig:
    """The config of the tokenizer at `init_from` with the `model` section's `values` applied, where
    a fine-tuning run may change them."""
    if not isinstance(init_from, str) or not init_from:
        raise ValueError(f"model.init_from must name a tokenizer folder or Hub repo id, got {init_from!r}")
    config = VQTokenizer.config_from_pretrained(init_from)
    model_type = values.pop("model_type", config.model_type)
    if model_type != config.model_type:
        raise ValueError(f"model.model_type is {model_type!r}, but model.init_from={init_from!r} is a "
                         f"{config.model_type!r} tokenizer: a fine-tuning run keeps its type; leave model_type out")
    parsed = parse_model_section(type(config), values, config.backbone_config.backbone_type)
    return config.with_training_changes(parsed, "model")


def parse_objectives_section(values) -> dict[str, dict]:
    """The `objectives` section (name -> options, options may be left empty) with each option
    parsed to its declared type; unknown objectives or options raise `ValueError`."""
    if not isinstance(values, dict):
        raise ValueError(f"section `objectives` of the run config must map objective names to options, got {values!r}")
    parsed = {}
    for name, options in values.items():
        options = {} if options is None else options
        if name in OBJECTIVES.classes and isinstance(options, dict):
            options = parse_options(OBJECTIVES.classes[name].options, options, f"objectives.{name}")
        parsed[name] = options
    OBJECTIVES.check_settings(parsed)
    return parsed


def read_run_config(path: str | None, overrides: list[str] | None = None, sections: tuple[str, ...] = SECTIONS) -> dict:
    """The raw sections of a YAML run config (empty when `path` is None) with overrides applied;
    `ValueError` for a section not among `sections`."""
    raw: dict = {}
    if path is not None:
        with open(path, encoding="utf-8") as handle:
            raw = _load_yaml(handle) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"run config {path} must be a mapping with sections {list(sections)}")
    raw = apply_overrides(raw, overrides or [], sections)
    check_sections(raw, sections)
    return raw


def check_sections(raw: dict, sections: tuple[str, ...]) -> None:
    """ValueError naming the sections of `raw` that are not among `sections`."""
    unknown = sorted(set(raw) - set(sections))
    if unknown:
        raise ValueError(f"unknown section(s) {unknown} in run config; sections: {list(sections)}")


def load_run_config(path: str | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML run config (or start from defaults when `path` is None) and apply overrides."""
    return build_run_config(read_run_config(path, overrides))
