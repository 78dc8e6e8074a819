"""Run configurations of `vqtok prior`: the same YAML sections and `section.key=value`
overrides as the tokenizer's (`run_config`), with the prior's options in `model` and the token
dataset in `data`.

Example (`training/configs/prior.yaml`)::

    model:             # the prior's language model
      architecture: gpt2
      hidden_size: 128
    data:
      tokens: outputs/quickstart/tokens
    training:
      max_steps: 600
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..options import Option, Settings, options_dataclass
from ..prior import PriorConfig
from ..prior.configuration import LM_SIZE_OPTIONS
from ..tokens.layout import TokenLayout
from .arguments import TokenDataArguments, LoopArguments, arguments_from_dict
from .run_config import read_run_config, run_metadata

PRIOR_SECTIONS = ("model", "data", "training")

@options_dataclass
class PriorModelArguments(Settings):
    """The prior to train (see `PriorConfig.for_tokenizer`)."""

    option_owner = "model option"
    options = {
        **LM_SIZE_OPTIONS,
        "tokenizer": Option(str, optional=True)(None, (
            "The tokenizer's repo id or path recorded in the prior's config (default: the one recorded with the "
            "tokens); set it to a Hub id before publishing."
        )),
        "lm_options": Option(dict)({}, "Further fields of the language model's config (e.g. `{n_inner: 256}`)."),
    }

    def build_config(self, layout: TokenLayout) -> PriorConfig:
        """The prior's config for tokens laid out as `layout`."""
        size = {name: getattr(self, name) for name in LM_SIZE_OPTIONS}
        return PriorConfig.for_tokenizer(layout, tokenizer_name=self.tokenizer, **size, **self.lm_options)


@dataclass
class PriorRunConfig:
    """Everything one prior training run needs."""

    model: PriorModelArguments = field(default_factory=PriorModelArguments)
    data: TokenDataArguments = field(default_factory=TokenDataArguments)
    training: LoopArguments = field(default_factory=LoopArguments)

    def to_dict(self) -> dict:
        """The run as plain sections (what the trackers record as hyper-parameters)."""
        return {"model": asdict(self.model), "data": asdict(self.data), "training": asdict(self.training)}

    def training_metadata(self, layout: TokenLayout, num_train_images: int, num_processes: int, results: dict) -> dict:
        """What the saved prior records about its training (`PriorConfig.training_metadata`)."""
        from .. import __version__

        return {
            "tokens": {
                "path": self.data.tokens,
                "tokenizer": layout.tokenizer,
                "train_split": self.data.train_split,
                "eval_split": self.data.eval_split,
                "num_train_images": num_train_images,
            },
            **run_metadata(self.training, num_processes),
            "weight_decay": self.training.weight_decay,
            "final_metrics": {k: float(v) for k, v in results.items()},
            "vqtok_version": __version__,
        }


def load_prior_run_config(path: str | None, overrides: list[str] | None = None) -> PriorRunConfig:
    """Read a prior's YAML run config (defaults when `path` is None) and apply overrides; every value
    is parsed to its declared type (`arguments.parse_option`); unknown sections or keys and values of
    the wrong type or range raise with the key's name."""
    raw = read_run_config(path, overrides, PRIOR_SECTIONS)
    return PriorRunConfig(
        model=arguments_from_dict(PriorModelArguments, raw.get("model") or {}, "model"),
        data=arguments_from_dict(TokenDataArguments, raw.get("data") or {}, "data"),
        training=arguments_from_dict(LoopArguments, raw.get("training") or {}, "training"),
    )
