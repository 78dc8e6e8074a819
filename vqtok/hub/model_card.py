"""Model cards for the Hub: rendered from `model_cards/tokenizer_card.md` with huggingface_hub's
`ModelCard`, from a tokenizer's config plus what only the caller knows (training data, metrics).

The quantizer's name, tag, papers and summary come from the config class's `reference` (declared in
the type's module), so a new tokenizer type needs nothing here. Metrics go both into the card's
table and into its `model-index` metadata, which the Hub shows as evaluation results.
`VQTokenizerPreTrainedModel.push_to_hub` uploads the card rendered here as the repo's README.md;
`save_model_card` writes the same card into a local save directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from transformers import PreTrainedConfig

from ..references import QuantizerReference, generic_reference

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
# Wheels ship model_cards/ inside the package (see pyproject.toml); a source checkout has it at the top.
TEMPLATE_PATH = next(
    (path for path in (_PACKAGE_DIR / "model_cards" / "tokenizer_card.md", _PACKAGE_DIR.parent / "model_cards" / "tokenizer_card.md") if path.is_file()),
    _PACKAGE_DIR.parent / "model_cards" / "tokenizer_card.md",
)
"""The default card template (a Jinja2 Markdown file with a YAML metadata header)."""

DEFAULT_LICENSE = "apache-2.0"
LIBRARY_NAME = "vqtok"
BASE_TAGS = ("image-tokenization", "vqtok")
# The Hub has no pipeline tag for image tokenizers (encode to ids + decode to images); a wrong one
# would make the Hub offer an inference widget that cannot work, so the card sets none.
PIPELINE_TAG = None
# How `model-index` files the metrics: encode -> decode maps an image to its reconstruction.
EVAL_TASK_TYPE = "image-to-image"
EVAL_TASK_NAME = "Image tokenization (reconstruction through the tokens)"


def card_reference(config: PreTrainedConfig) -> QuantizerReference:
    """The reference its config class declares (name, Hub tag, papers, summary), or a generic one."""
    return getattr(type(config), "reference", None) or generic_reference(config.model_type)


def render_model_card(
    model,
    *,
    repo_id: str | None = None,
    metrics: Mapping[str, object] | None = None,
    training_data: str | None = None,
    datasets: Sequence[str] | None = None,
    license: str = DEFAULT_LICENSE,  # noqa: A002 - the Hub's name for the field
    tags: Sequence[str] | None = None,
    eval_dataset: str | None = None,
    eval_split: str | None = None,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """Render the model card of a vqtok tokenizer.

    Args:
        model: a vqtok tokenizer (`VQTokenizerPreTrainedModel`) or just its config (`VQTokenizerConfig`;
            the card then has no parameter count).
        repo_id: Hub repo id shown in the title and the usage snippet (default: a placeholder path).
        metrics: the final evaluation, metric name -> value (number or string): one table row each,
            in the given order, and one result each in the card's `model-index` metadata.
        training_data: Markdown describing the training data.
        datasets: Hub dataset ids the model was trained on (card metadata `datasets`).
        license: a Hub license id (default `apache-2.0`).
        tags: extra Hub tags, after `image-tokenization`, `vqtok` and the quantizer's tag.
        eval_dataset: the dataset the metrics were measured on, as `model-index` records it (a Hub
            dataset id where there is one; default: the first of `datasets`, else "custom").
        eval_split: its split (e.g. "test"), recorded in `model-index` when given.
        template_path: a Jinja2 Markdown template to use instead of `model_cards/tokenizer_card.md`.

    Returns:
        a `huggingface_hub.ModelCard` (`.save(path)`, `.push_to_hub(repo_id)`, `str(card)`).
    """
    config = model if isinstance(model, PreTrainedConfig) else getattr(model, "config", None)
    if not isinstance(config, PreTrainedConfig):
        raise TypeError(f"model must be a vqtok tokenizer or its config, got {type(model).__name__}")
    _check_optional_str("repo_id", repo_id)
    _check_optional_str("training_data", training_data)
    _check_optional_str("eval_dataset", eval_dataset)
    _check_optional_str("eval_split", eval_split)
    if not isinstance(license, str) or not license.strip():
        raise ValueError(f"license must be a Hub license id such as 'apache-2.0', got {license!r}")
    datasets = _str_list("datasets", datasets)
    template = Path(template_path) if template_path is not None else TEMPLATE_PATH
    if not template.is_file():
        raise FileNotFoundError(f"model card template not found: {template}")

    model_type = config.model_type
    reference = card_reference(config)
    title = repo_id or f"vqtok {reference.name} tokenizer"
    metric_rows = _metric_values(metrics)
    model_tags = list(getattr(model, "model_tags", None) or [])
    evaluated_on = eval_dataset or (datasets[0] if datasets else "custom")
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        license=license,
        tags=[*BASE_TAGS, reference.tag, *_str_list("tags", tags), *model_tags],
        datasets=datasets or None,
        pipeline_tag=PIPELINE_TAG,
        model_name=title.split("/")[-1] if metric_rows else None,
        eval_results=[_eval_result(name, value, evaluated_on, eval_split) for name, value in metric_rows] or None,
    )
    grid_h, grid_w = config.token_grid
    num_parameters = model.num_parameters() if hasattr(model, "num_parameters") else None
    described = training_data.strip() if training_data and training_data.strip() else "Not documented."
    if datasets:
        described += "\n\nHub datasets: " + ", ".join(f"`{name}`" for name in datasets) + "."
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        title=title,
        repo_id=repo_id or "path/to/checkpoint",
        model_type=model_type,
        config_class=type(config).__name__,
        quantizer=reference,
        bibtex=reference.bibtex,
        config_rows=_config_rows(config),
        num_parameters=f"{num_parameters:,}" if num_parameters is not None else None,
        image_size=config.image_size,
        in_channels=config.in_channels,
        grid=f"{grid_h}×{grid_w}",
        grid_h=grid_h,
        grid_w=grid_w,
        codebook_size=config.codebook_size,
        bits_per_token=f"{math.log2(config.codebook_size):.3g}",
        training_data=described,
        metrics=[(_cell(name), _cell(f"{value:.4g}" if isinstance(value, float) else str(value)))
                 for name, value in metric_rows],
        training_metadata=_markdown_list(metadata) if (metadata := getattr(config, "training_metadata", None)) else None,
        topology=_topology_rows(model),
        license=license,
    )


def save_model_card(model, save_directory: str | os.PathLike, **card_kwargs) -> Path:
    """Render the card of `model` (keywords as in `render_model_card`) into `save_directory/README.md`.

    Returns the path written.
    """
    path = Path(save_directory) / "README.md"
    render_model_card(model, **card_kwargs).save(path)
    return path


# --- helpers ----------------------------------------------------------------------------------
def _topology_rows(model) -> list[tuple[str, str]] | None:
    """(name, value) rows of the codebook's persistent-homology signature, for a model (not a config)."""
    if not hasattr(model, "quantizer"):
        return None
    from ..metrics import codebook_topology  # the metrics import the data pipeline, which the Hub code does not need

    return [(name, f"{value:.4g}") for name, value in codebook_topology(model).items()]


def _config_rows(config: PreTrainedConfig) -> list[tuple[str, str]]:
    """(field, JSON value) for every field the vqtok config adds to transformers' base config,
    except `training_metadata`, which the card shows as its own list."""
    base = set(PreTrainedConfig.__dataclass_fields__) | {"training_metadata"}
    names = [f.name for f in dataclasses.fields(config) if f.name not in base and not f.name.startswith("_")]
    return [(name, _cell(json.dumps(getattr(config, name), default=str))) for name in names]


def _markdown_list(values: Mapping, depth: int = 0) -> str:
    """A nested Markdown bullet list of a (nested) mapping: `- **key**: value`, sub-mappings indented."""
    lines = []
    for key, value in values.items():
        bullet = f"{'  ' * depth}- **{key}**:"
        if isinstance(value, Mapping) and value:
            lines += [bullet, _markdown_list(value, depth + 1)]
        else:
            shown = f"{value:.4g}" if isinstance(value, float) else json.dumps(value, default=str).strip('"')
            lines.append(f"{bullet} {shown}")
    return "\n".join(lines)


def _eval_result(name: str, value: int | float | str, dataset: str, split: str | None) -> EvalResult:
    """One `model-index` result: the reconstruction metric `name` measured on `dataset`."""
    return EvalResult(
        task_type=EVAL_TASK_TYPE,
        task_name=EVAL_TASK_NAME,
        dataset_type=dataset,
        dataset_name=dataset,
        dataset_split=split,
        metric_type=re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "metric",
        metric_name=name,
        metric_value=value,
    )


def _metric_values(metrics: Mapping[str, object] | None) -> list[tuple[str, int | float | str]]:
    """(name, value) pairs, checked, with numpy / torch scalars turned into Python numbers."""
    if metrics is None:
        return []
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping of metric name -> value, got {type(metrics).__name__}")
    rows = []
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"metric names must be non-empty strings, got {name!r}")
        if hasattr(value, "item") and not isinstance(value, (int, float, str)):
            value = value.item()  # numpy / torch scalars
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError(f"metrics[{name!r}] must be a number or a string, got {type(value).__name__} ({value!r})")
        rows.append((name, value))
    return rows


def _cell(text: str) -> str:
    """`text` made safe for one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _check_optional_str(name: str, value) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a string or None, got {type(value).__name__} ({value!r})")


def _str_list(name: str, values) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str) or not all(isinstance(v, str) and v for v in values):
        raise TypeError(f"{name} must be a list of non-empty strings, got {values!r}")
    return list(values)
