"""Model cards for the Hub: rendered from `model_cards/tokenizer_card.md` with huggingface_hub's
`ModelCard`, from a tokenizer's config plus what only the caller knows (training data, metrics).

The quantizer's name, tag, papers and summary come from the config class's `reference` (declared in
the type's module), so a new tokenizer type needs nothing here. Metrics go both into the card's
table and into its `model-index` metadata, which the Hub shows as evaluation results.
`VQTokenizerPreTrainedModel.push_to_hub` uploads the card rendered here as the repo's README.md;
`save_model_card` writes the same card into a local save directory. What every vqtok card shares
(inputs, metadata, metric table) is built by `card_fields`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

from huggingface_hub import ModelCard
from transformers import PreTrainedConfig

from .references import OPTION_PAPERS, SOURCE_PROJECTS, QuantizerReference, SourceProject, generic_reference
from .card_fields import CardInputs, CardKind, card_fields, card_template, table_cell, token_shape_fields

TEMPLATE_PATH = card_template("tokenizer_card.md")
"""The default card template (a Jinja2 Markdown file with a YAML metadata header)."""

# The Hub has no pipeline tag for image tokenizers (encode to ids + decode to images); a wrong one
# would make the Hub offer an inference widget that cannot work, so the card sets none. Metrics are
# filed as image-to-image: encode -> decode maps an image to its reconstruction.
TOKENIZER_CARD = CardKind(
    tags=("image-tokenization", "vqtok"),
    task_type="image-to-image",
    task_name="Image tokenization (reconstruction through the tokens)",
    placeholder_repo_id="path/to/checkpoint",
)


def card_reference(config: PreTrainedConfig) -> QuantizerReference:
    """The reference its config class declares (name, Hub tag, papers, summary), or a generic one;
    with the papers of the options switched on in `config` (`OPTION_PAPERS`) and of the project it
    was converted from added."""
    reference = getattr(type(config), "reference", None) or generic_reference(config.model_type)
    extra = [paper for option, paper in OPTION_PAPERS.items()
             if getattr(config, option, False) is True and paper not in reference.papers]
    source = source_project(config)
    extra += [paper for paper in (source.papers if source else ()) if paper not in reference.papers + tuple(extra)]
    return dataclasses.replace(reference, papers=reference.papers + tuple(extra)) if extra else reference


def render_model_card(model, *, template_path: str | os.PathLike | None = None, location: str | None = None,
                      **card_inputs) -> ModelCard:
    """Render the model card of a vqtok tokenizer.

    Args:
        model: a vqtok tokenizer (`VQTokenizerPreTrainedModel`) or just its config (`VQTokenizerConfig`;
            the card then has no parameter count).
        template_path: a Jinja2 Markdown template to use instead of `model_cards/tokenizer_card.md`.
        location: where the usage snippet loads the model from when no `repo_id` is given (the folder
            the card is saved in).
        card_inputs: `repo_id`, `metrics`, `training_data`, `datasets`, `license`, `tags`,
            `eval_dataset`, `eval_split`: see `vqtok.hub.card_fields.CardInputs`. Extra `tags` come
            after `image-tokenization`, `vqtok` and the quantizer's tag.

    Returns:
        a `huggingface_hub.ModelCard` (`.save(path)`, `.push_to_hub(repo_id)`, `str(card)`).
    """
    config = model if isinstance(model, PreTrainedConfig) else getattr(model, "config", None)
    if not isinstance(config, PreTrainedConfig):
        raise TypeError(f"model must be a vqtok tokenizer or its config, got {type(model).__name__}")
    template = Path(template_path) if template_path is not None else TEMPLATE_PATH
    if not template.is_file():
        raise FileNotFoundError(f"model card template not found: {template}")

    reference = card_reference(config)
    source = source_project(config)
    if source is not None and "license" not in card_inputs:
        card_inputs = {**card_inputs, "license": source.license}
    card_data, common = card_fields(
        TOKENIZER_CARD, config, CardInputs.from_keywords(card_inputs), default_title=f"{source.project} tokenizer, in vqtok" if source else f"vqtok {reference.name} tokenizer",
        extra_tags=[reference.tag, *(getattr(model, "model_tags", None) or [])], location=location,
    )
    num_parameters = model.num_parameters() if hasattr(model, "num_parameters") else None
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        **common,
        model_type=config.model_type,
        config_class=type(config).__name__,
        quantizer=reference,
        bibtex=reference.bibtex,
        config_rows=_config_rows(config),
        num_parameters=f"{num_parameters:,}" if num_parameters is not None else None,
        image_size=config.image_size,
        in_channels=config.in_channels,
        **token_shape_fields(config.token_grid, config.codes_per_position),
        codebook_size=config.codebook_size,
        bits_per_token=f"{math.log2(config.codebook_size):.3g}",
        topology=_topology_rows(model),
        source=source,
        source_checkpoint=(config.training_metadata or {}).get("converted_from", {}).get("checkpoint"),
    )


def save_model_card(model, save_directory: str | os.PathLike, **card_kwargs) -> Path:
    """Render the card of `model` (keywords as in `render_model_card`) into `save_directory/README.md`.

    Returns the path written.
    """
    path = Path(save_directory) / "README.md"
    render_model_card(model, location=str(save_directory), **card_kwargs).save(path)
    return path


def source_project(config: PreTrainedConfig) -> SourceProject | None:
    """The project a tokenizer was converted from (`training_metadata["converted_from"]["source"]`,
    written by `vqtok.conversion`), or None for a tokenizer vqtok trained."""
    converted = (getattr(config, "training_metadata", None) or {}).get("converted_from")
    return SOURCE_PROJECTS.get(converted.get("source")) if isinstance(converted, dict) else None


# --- helpers ----------------------------------------------------------------------------------
def _topology_rows(model) -> list[tuple[str, str]] | None:
    """(name, value) rows of the codebook's persistent-homology signature, for a model (not a config)."""
    if not hasattr(model, "quantizer"):
        return None
    from ..metrics.evaluation import codebook_topology  # the metrics import the data pipeline, which the Hub code does not need

    return [(name, f"{value:.4g}") for name, value in codebook_topology(model).items()]


def _config_rows(config: PreTrainedConfig) -> list[tuple[str, str]]:
    """(field, JSON value) for every field the vqtok config adds to transformers' base config,
    except `training_metadata`, which the card shows as its own list."""
    base = set(PreTrainedConfig.__dataclass_fields__) | {"training_metadata"}
    names = [f.name for f in dataclasses.fields(config) if f.name not in base and not f.name.startswith("_")]
    return [(name, table_cell(json.dumps(getattr(config, name), default=str))) for name in names]
