"""`PriorConfig`: an autoregressive prior over a tokenizer's token grids, tied to that tokenizer.

The prior is a small causal language model from `transformers` (GPT-2 or Llama architecture) whose
vocabulary is the tokenizer's K codes plus one BOS id (= K). Its config records what it models: the
tokenizer (repo id or path), K and the token grid; the language model's own config is nested as
`lm_config`, the way composite `transformers` configs nest theirs.
"""

from __future__ import annotations

import math

from transformers import AutoConfig, PreTrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

try:
    from transformers.configuration_utils import SubConfigSpec
except ImportError:  # transformers < 5.20: a composite config builds its sub-configs in its own __post_init__
    SubConfigSpec = None

from ..configuration import OptionsConfig
from ..options import CODEBOOK_SIZE, POSITIVE_INT, Option, check_options, document_options, option_defaults
from ..validation import grid_fields, grid_of, token_shape

ARCHITECTURES = ("gpt2", "llama")

# The size options of `PriorConfig.for_tokenizer` (and of the prior run config's `model` section).
LM_SIZE_OPTIONS = {
    "architecture": Option(str, choices=ARCHITECTURES)("gpt2", "`gpt2` or `llama`."),
    "hidden_size": POSITIVE_INT(128, "The language model's width."),
    "num_layers": POSITIVE_INT(4, "Its depth."),
    "num_heads": POSITIVE_INT(4, "Its attention heads."),
    "dropout": Option(float, low=0, high=1, high_open=True)(0.1, (
        "Dropout probability (GPT-2: embeddings, residuals and attention; Llama: attention)."
    )),
}

def causal_lm_settings(architecture: str, hidden_size: int, num_layers: int, num_heads: int, dropout: float) -> dict:
    """The `lm_config` entries of a GPT-2 or Llama model of the given size (a head width of
    `hidden_size / num_heads`, a feed-forward width of 4 x `hidden_size`)."""
    check_options(LM_SIZE_OPTIONS, dict(architecture=architecture, hidden_size=hidden_size, num_layers=num_layers,
                                        num_heads=num_heads, dropout=dropout), "prior option")
    if hidden_size % num_heads:
        raise ValueError(f"prior option `hidden_size` ({hidden_size}) must be a multiple of `num_heads` ({num_heads})")
    if architecture == "gpt2":
        return dict(model_type="gpt2", n_embd=hidden_size, n_layer=num_layers, n_head=num_heads,
                    resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    return dict(model_type="llama", hidden_size=hidden_size, intermediate_size=4 * hidden_size,
                num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
                attention_dropout=dropout, tie_word_embeddings=True)


@document_options
class PriorConfig(OptionsConfig):
    r"""Configuration of a `TokenPrior`.

    The causal language model is `lm_config`: a `GPT2Config` (default) or a `LlamaConfig`, or a dict
    with its `model_type`. Whatever it says, its vocabulary size, BOS/EOS/PAD ids and number of
    positions are set from K and the token shape (K + 1, K / none / none, h*w*R + 1).
    """

    model_type = "vqtok-prior"
    option_owner = "prior config"
    options = {
        "tokenizer": Option(str, optional=True)(None, (
            "Repo id or path of the tokenizer whose tokens the prior models (used to decode samples)."
        )),
        "codebook_size": CODEBOOK_SIZE(512, (
            "K, the tokenizer's number of codes. The language model's vocabulary is K + 1: the codes 0 ... K-1 and "
            "BOS = K, which starts every sequence and is never generated."
        )),
        "grid_height": Option(int, low=1, optional=True)(8, (
            "h of the token grid (h, w) of one image; a sequence is BOS then the h*w codes in row-major order. None "
            "for a 1-D token sequence (`num_latent_tokens`)."
        )),
        "grid_width": Option(int, low=1, optional=True)(8, "w of the token grid (None for a 1-D sequence)."),
        "num_latent_tokens": Option(int, low=1, optional=True)(None, (
            "L of a 1-D token sequence (a `titok` tokenizer's), in place of the grid: a sequence is BOS then the L codes."
        )),
        "codes_per_position": POSITIVE_INT(1, (
            "R, the tokenizer's codes per grid position; with R > 1 a position's R codes follow one another in the "
            "sequence (depth last), which then holds h*w*R codes."
        )),
        "training_metadata": Option(dict, optional=True)(None, (
            "Written by `vqtok prior`: the token data, the run's settings and the held-out bits per "
            "token. Informational only."
        )),
    }
    if SubConfigSpec is not None:
        sub_configs_defaults = {"lm_config": SubConfigSpec(config_class=AutoConfig, model_type="gpt2")}
    else:
        sub_configs = {"lm_config": AutoConfig}

    lm_config: dict | PreTrainedConfig | None = None

    def __post_init__(self, **kwargs):
        if SubConfigSpec is None:
            self.lm_config = _lm_config(self.lm_config)
        super().__post_init__(**kwargs)
        check_options(self.options, {name: getattr(self, name) for name in self.options}, "prior config field")
        self.token_grid  # noqa: B018 - the fields hold a grid or a sequence, or this raises
        if self.lm_config.model_type not in ARCHITECTURES:
            raise ValueError(
                f"prior config field `lm_config` must be one of the architectures {list(ARCHITECTURES)}, "
                f"got model_type {self.lm_config.model_type!r}"
            )
        _check_lm_values(self.lm_config)
        self._tie_lm_config()

    def _tie_lm_config(self) -> None:
        """Set the language model's vocabulary, special ids and positions from K and the grid."""
        lm = self.lm_config
        lm.vocab_size = self.codebook_size + 1
        lm.bos_token_id, lm.eos_token_id, lm.pad_token_id = self.codebook_size, None, None
        positions = math.prod(self.token_shape) + 1
        if lm.model_type == "gpt2":
            lm.n_positions = positions
        else:
            lm.max_position_embeddings = positions
        lm.loss_type = "ForCausalLM"

    @classmethod
    def for_tokenizer(cls, tokenizer, tokenizer_name: str | None = None, **options) -> PriorConfig:
        """A prior for the tokens of `tokenizer` (a vqtok tokenizer, its config, or a `TokenLayout`):
        K, the grid and the codes per position from it, a language model of the architecture and size
        given by the `LM_SIZE_OPTIONS` in `options` (`architecture`, `hidden_size`, `num_layers`,
        `num_heads`, `dropout`; each with its default), the other `options` being further fields of
        the language model's config.

        `tokenizer_name` is recorded as `tokenizer` (default: the tokenizer's `name_or_path`, or the
        layout's `tokenizer`).
        """
        source = getattr(tokenizer, "config", tokenizer)
        grid = source.token_grid if hasattr(source, "token_grid") else source.grid
        name = tokenizer_name or getattr(source, "tokenizer", None) or getattr(source, "name_or_path", None) or None
        size = {**option_defaults(LM_SIZE_OPTIONS), **{k: v for k, v in options.items() if k in LM_SIZE_OPTIONS}}
        lm_options = {k: v for k, v in options.items() if k not in LM_SIZE_OPTIONS}
        settings = causal_lm_settings(**size)
        default = AutoConfig.for_model(settings["model_type"])
        unknown = sorted(key for key in lm_options if key not in default.to_dict())
        if unknown:
            raise ValueError(f"unknown {settings['model_type']} config option(s) {unknown} in lm_options "
                             f"(model.lm_options in a prior run config); see transformers' {type(default).__name__}")
        lm_config = {**settings, **lm_options}
        return cls(tokenizer=name, codebook_size=source.codebook_size, **grid_fields(grid),
                   codes_per_position=source.codes_per_position, lm_config=lm_config)

    @property
    def token_grid(self) -> tuple[int, ...]:
        """(h, w) of the token grid, or (L,) of a 1-D sequence."""
        return grid_of(self.grid_height, self.grid_width, self.num_latent_tokens, "prior config fields")

    @property
    def token_shape(self) -> tuple[int, ...]:
        """The shape of one image's codes: `(h, w)` (or `(L,)`), then R for R > 1 codes per position."""
        return token_shape(self.token_grid, self.codes_per_position)

    @property
    def bos_token_id(self) -> int:
        """The id that starts every sequence: K."""
        return self.codebook_size

    @property
    def architecture(self) -> str:
        """The language model's `model_type` (`gpt2` or `llama`)."""
        return self.lm_config.model_type


__all__ = ["PriorConfig"]


def _lm_config(value) -> PreTrainedConfig:
    """`lm_config` as a config object, the way `SubConfigSpec(AutoConfig, model_type="gpt2")` builds it on
    transformers >= 5.20: a dict by its `model_type` (GPT-2 without one), None as the default GPT-2 config."""
    if isinstance(value, PreTrainedConfig):
        return value
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise TypeError(f"`lm_config` must be a `dict`, `PreTrainedConfig`, or `None`, got `{type(value)}`")
    model_type = value.get("model_type", "gpt2")
    if model_type not in CONFIG_MAPPING:
        raise ValueError(f"Unrecognized model type for subconfig: {model_type}. "
                         f"Should contain one of {', '.join(CONFIG_MAPPING.keys())}")
    return CONFIG_MAPPING[model_type](**value)


def _check_lm_values(lm_config: PreTrainedConfig) -> None:
    """ValueError naming `lm_config.<field>` for a non-finite number, a size below 1 or a dropout
    probability outside [0, 1] in the language model's config."""
    for name, value in lm_config.to_dict().items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if not math.isfinite(value):
            raise ValueError(f"prior config field `lm_config.{name}` must be finite, got {value!r}")
        if name in _LM_SIZE_FIELDS and value < 1:
            raise ValueError(f"prior config field `lm_config.{name}` must be a positive int, got {value!r}")
        if ("dropout" in name or "pdrop" in name) and not 0 <= value <= 1:
            raise ValueError(f"prior config field `lm_config.{name}` must lie in [0, 1], got {value!r}")


# The language models' size fields (GPT-2's and Llama's names).
_LM_SIZE_FIELDS = frozenset({"n_embd", "n_layer", "n_head", "n_inner", "hidden_size", "num_hidden_layers",
                             "num_attention_heads", "num_key_value_heads", "intermediate_size", "head_dim"})
