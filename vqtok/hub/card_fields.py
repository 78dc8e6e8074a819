"""What every vqtok model card shares, whatever the model (a tokenizer, a token prior): the checked
caller inputs (repo id, metrics, training data, datasets, license, tags, evaluation dataset), the
card's YAML metadata (`ModelCardData`, with the metrics as `model-index` results) and the template
variables built from them (`CardInputs` documents and checks the caller's keywords once).
`model_card.render_model_card` and `vqtok.prior.render_prior_card` add their own model's variables on top.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from huggingface_hub import EvalResult, ModelCardData

from ..validation import token_shape

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
DEFAULT_LICENSE = "apache-2.0"
LIBRARY_NAME = "vqtok"
LICENSES_PAGE = "https://huggingface.co/docs/hub/repositories-licenses"
# The license identifiers the Hub accepts in a card's `license` field (LICENSES_PAGE); "other" is for
# any license not listed (its text then belongs in a LICENSE file of the repo).
HUB_LICENSES = (
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
    "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0",
    "etalab-2.0", "eupl-1.1", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0",
    "isc", "lppl-1.3c", "ms-pl", "mpl-2.0", "odc-by", "odbl", "openrail++", "osl-3.0", "postgresql", "ofl-1.1",
    "ncsa", "unlicense", "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license", "llama2", "llama3", "llama3.1",
    "llama3.2", "llama3.3", "llama4", "gemma", "apple-ascl", "apple-amlr", "unknown", "other",
)


def card_template(name: str) -> Path:
    """The path of the template `model_cards/<name>`: inside the package in a wheel (see
    pyproject.toml), at the top of a source checkout."""
    candidates = (_PACKAGE_DIR / "model_cards" / name, _PACKAGE_DIR.parent / "model_cards" / name)
    return next((path for path in candidates if path.is_file()), candidates[1])


@dataclass(frozen=True)
class CardKind:
    """What distinguishes one kind of model card: its tags, how `model-index` files the metrics
    (`task_type` / `task_name`), the repo id its usage snippet shows when there is none, and the Hub
    pipeline tag."""

    tags: tuple[str, ...]
    task_type: str
    task_name: str
    placeholder_repo_id: str
    pipeline_tag: str | None = None


@dataclass(frozen=True)
class CardInputs:
    """What only the caller knows about a model, for its card: the keywords that every vqtok card
    function takes (`render_model_card`, `save_model_card`, `push_to_hub`, `render_prior_card`),
    checked when built (`TypeError` / `ValueError` naming the argument at fault).

    Attributes:
        repo_id: the Hub repo id shown in the title and the usage snippet (default: a placeholder).
        metrics: the final evaluation, metric name -> value (number or string): one table row each,
            in the given order, and one result each in the card's `model-index` metadata.
        training_data: Markdown describing the training data.
        datasets: Hub dataset ids the model was trained on (card metadata `datasets`).
        license: a Hub license identifier (`HUB_LICENSES`; default `apache-2.0`).
        tags: extra Hub tags, after the card's own.
        eval_dataset: the dataset the metrics were measured on, as `model-index` records it (a Hub
            dataset id where there is one; default: the first of `datasets`, else "custom").
        eval_split: its split (e.g. "test"), recorded in `model-index` when given.
    """

    repo_id: str | None = None
    metrics: Mapping[str, object] | None = None
    training_data: str | None = None
    datasets: Sequence[str] | None = None
    license: str = DEFAULT_LICENSE  # noqa: A003 - the Hub's name for the field
    tags: Sequence[str] | None = None
    eval_dataset: str | None = None
    eval_split: str | None = None

    def __post_init__(self):
        for name in ("repo_id", "training_data", "eval_dataset", "eval_split"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"{name} must be a string or None, got {type(value).__name__} ({value!r})")
        check_license(self.license)
        _str_list("datasets", self.datasets)
        _str_list("tags", self.tags)
        _metric_values(self.metrics)

    @classmethod
    def from_keywords(cls, keywords: Mapping[str, object]) -> CardInputs:
        """The inputs of a card function's keywords; TypeError naming any keyword that is not one."""
        unknown = sorted(set(keywords) - set(CARD_INPUT_NAMES))
        if unknown:
            raise TypeError(f"unknown model card keyword(s) {unknown}; the card takes {list(CARD_INPUT_NAMES)}")
        return cls(**keywords)


CARD_INPUT_NAMES = tuple(field.name for field in fields(CardInputs))


def card_fields(
    kind: CardKind, config, inputs: CardInputs, *, default_title: str, extra_tags: Sequence[str] = (),
    location: str | None = None,
) -> tuple[ModelCardData, dict]:
    """Build `(card_data, variables)` from the caller's (checked) `inputs`.

    `card_data` holds library, license, tags (`kind.tags`, `extra_tags`, then `inputs.tags`),
    datasets and one `model-index` result per metric (on `eval_dataset`, default the first of
    `datasets`, else "custom"). `variables` are the template variables every card has: `title` (the
    repo id, else `default_title`), `repo_id` (where the usage snippet loads the model from: the repo
    id, else the folder the card is saved in, `location`, else a placeholder), `training_data` (Markdown, with the Hub datasets
    named), `metrics` (table rows), `training_metadata` (a Markdown list of
    `config.training_metadata`, or None) and `license`.
    """
    datasets = _str_list("datasets", inputs.datasets)
    metric_rows = _metric_values(inputs.metrics)
    title = inputs.repo_id or default_title
    evaluated_on = inputs.eval_dataset or (datasets[0] if datasets else "custom")
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        license=inputs.license,
        tags=[*kind.tags, *extra_tags, *_str_list("tags", inputs.tags)],
        datasets=datasets or None,
        pipeline_tag=kind.pipeline_tag,
        model_name=title.split("/")[-1] if metric_rows else None,
        eval_results=[_eval_result(kind, name, value, evaluated_on, inputs.eval_split) for name, value in metric_rows] or None,
    )
    training_data = inputs.training_data
    described = training_data.strip() if training_data and training_data.strip() else "Not documented."
    if datasets:
        described += "\n\nHub datasets: " + ", ".join(f"`{name}`" for name in datasets) + "."
    metadata = getattr(config, "training_metadata", None)
    variables = dict(
        title=title,
        repo_id=inputs.repo_id or location or kind.placeholder_repo_id,
        training_data=described,
        metrics=[(table_cell(name), table_cell(f"{value:.4g}" if isinstance(value, float) else str(value)))
                 for name, value in metric_rows],
        training_metadata=markdown_list(metadata) if metadata else None,
        license=inputs.license,
    )
    return card_data, variables


def token_shape_fields(grid: tuple[int, ...], codes_per_position: int = 1) -> dict[str, str]:
    """The template variables of one image's token positions `(h, w)` or `(L,)` with R codes each:
    `grid` ("8×8", "8×8 (×4 codes per position)", "32-token 1-D") and `id_shape` ("8, 8", "8, 8, 4",
    "32", for `[B, ...]`)."""
    text = f"{grid[0]}×{grid[1]}" if len(grid) == 2 else f"{grid[0]}-token 1-D"
    text += f" (×{codes_per_position} codes per position)" if codes_per_position > 1 else ""
    return {"grid": text, "id_shape": ", ".join(map(str, token_shape(grid, codes_per_position)))}


def check_license(license: str) -> None:  # noqa: A002 - the Hub's name for the field
    """ValueError unless `license` is one of the Hub's license identifiers (`HUB_LICENSES`), suggesting
    the nearest one."""
    if isinstance(license, str) and license in HUB_LICENSES:
        return
    near = []
    if isinstance(license, str):  # "MIT license", "Apache 2.0" -> "mit", "apache-2.0"
        written = re.sub(r"-?licen[cs]e$", "", re.sub(r"[\s_]+", "-", license.strip().lower()))
        near = difflib.get_close_matches(written, HUB_LICENSES, n=1, cutoff=0.8)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    raise ValueError(
        f"license must be a Hub license identifier such as 'apache-2.0' or 'mit' (the list: {LICENSES_PAGE}; "
        f"'other' for a license not listed, with its text in a LICENSE file), got {license!r}{hint}"
    )


def markdown_list(values: Mapping, depth: int = 0) -> str:
    """A nested Markdown bullet list of a (nested) mapping: `- **key**: value`, sub-mappings indented."""
    lines = []
    for key, value in values.items():
        bullet = f"{'  ' * depth}- **{key}**:"
        if isinstance(value, Mapping) and value:
            lines += [bullet, markdown_list(value, depth + 1)]
        else:
            shown = f"{value:.4g}" if isinstance(value, float) else json.dumps(value, default=str).strip('"')
            lines.append(f"{bullet} {shown}")
    return "\n".join(lines)


def table_cell(text: str) -> str:
    """`text` made safe for one Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _eval_result(kind: CardKind, name: str, value: int | float | str, dataset: str, split: str | None) -> EvalResult:
    """One `model-index` result: the metric `name` measured on `dataset`, filed under the kind's task."""
    return EvalResult(
        task_type=kind.task_type,
        task_name=kind.task_name,
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


def _str_list(name: str, values) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str) or not all(isinstance(v, str) and v for v in values):
        raise TypeError(f"{name} must be a list of non-empty strings, got {values!r}")
    return list(values)
