"""The prior's model card: `model_cards/prior_card.md` rendered with huggingface_hub's `ModelCard`.

What every vqtok card shares (library `vqtok`, metrics both in the table and in `model-index`,
license, tags, training data) comes from `vqtok.hub.card_fields`; the content is the prior's: the
tokenizer it models, K, the grid, the language model's config and held-out bits per token.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from huggingface_hub import ModelCard

from ..hub.card_fields import CardInputs, CardKind, card_fields, card_template, table_cell, token_shape_fields

PRIOR_TEMPLATE_PATH = card_template("prior_card.md")
# Sampling the prior and decoding the samples generates images from nothing.
PRIOR_CARD = CardKind(
    tags=("vqtok", "image-tokens", "autoregressive-prior"),
    task_type="unconditional-image-generation",
    task_name="Token prior (held-out code length)",
    placeholder_repo_id="path/to/prior",
)
# Language-model fields shown on the card, when the config has them.
_LM_FIELDS = ("vocab_size", "n_embd", "n_layer", "n_head", "n_positions", "resid_pdrop", "hidden_size",
              "intermediate_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings",
              "attention_dropout", "tie_word_embeddings")


def render_prior_card(prior, location: str | None = None, **card_inputs) -> ModelCard:
    """The model card of a `TokenPrior`; `card_inputs` are the card keywords of
    `vqtok.hub.card_fields.CardInputs`, `metrics` held-out bits per token, e.g.
    `{"prior bits/token": 4.1, "histogram bits/token": 8.6}`."""
    config = prior.config
    card_data, common = card_fields(PRIOR_CARD, config, CardInputs.from_keywords(card_inputs),
                                    default_title="vqtok token prior", extra_tags=[config.architecture], location=location)
    tokenizer = config.tokenizer or "unknown"
    # Only a Hub repo id ("owner/name") gets a link; a local path means nothing on the Hub.
    is_local = os.path.isabs(tokenizer) or tokenizer.startswith(".") or tokenizer.count("/") != 1 or os.path.exists(tokenizer)
    lm = config.lm_config.to_dict()
    return ModelCard.from_template(
        card_data,
        template_path=str(PRIOR_TEMPLATE_PATH),
        **common,
        tokenizer=tokenizer,
        tokenizer_link=None if is_local else f"https://huggingface.co/{tokenizer}",
        architecture=config.architecture,
        architecture_name={"gpt2": "GPT-2", "llama": "Llama"}[config.architecture],
        codebook_size=config.codebook_size,
        uniform_bits=f"{math.log2(config.codebook_size):.4g}",
        **token_shape_fields(config.token_grid, config.codes_per_position),
        sequence_length=math.prod(config.token_shape) + 1,
        num_parameters=f"{prior.num_parameters():,}",
        lm_rows=[(name, table_cell(json.dumps(lm[name]))) for name in _LM_FIELDS if name in lm],
    )


def save_prior_card(prior, save_directory: str | os.PathLike, **card_kwargs) -> Path:
    """Render the prior's card (keywords as in `render_prior_card`) into `save_directory/README.md`."""
    path = Path(save_directory) / "README.md"
    render_prior_card(prior, location=str(save_directory), **card_kwargs).save(path)
    return path
