"""Model cards for the Hub: rendered from `model_cards/tokenizer_card.md` with huggingface_hub's
`ModelCard`, from a tokenizer's config plus what only the caller knows (training data, metrics).

`VQTokenizerPreTrainedModel.push_to_hub` uploads the card rendered here as the repo's README.md;
`save_model_card` writes the same card into a local save directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData
from transformers import PreTrainedConfig

_PACKAGE_DIR = Path(__file__).resolve().parent
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


@dataclass(frozen=True)
class Paper:
    """A reference for a quantizer: listed on the card, and cited as BibTeX built from these fields.

    `authors` are "Last, First" names; `container` is the booktitle (`kind="inproceedings"`) or the
    journal (`kind="article"`).
    """

    key: str
    title: str
    authors: tuple[str, ...]
    year: int
    container: str
    kind: str = "inproceedings"
    volume: str | None = None
    pages: str | None = None
    arxiv_id: str | None = None
    doi: str | None = None

    @property
    def author_names(self) -> str:
        """Last names, e.g. "van den Oord, Vinyals & Kavukcuoglu"."""
        last = [name.split(",")[0].strip() for name in self.authors]
        return last[0] if len(last) == 1 else f"{', '.join(last[:-1])} & {last[-1]}"

    @property
    def venue(self) -> str:
        volume = f" {self.volume}" if self.volume else ""
        pages = f", {self.pages.replace('--', '–')}" if self.pages else ""
        return f"{self.container}{volume}{pages}"

    @property
    def url(self) -> str | None:
        if self.arxiv_id:
            return f"https://arxiv.org/abs/{self.arxiv_id}"
        return f"https://doi.org/{self.doi}" if self.doi else None

    @property
    def link_text(self) -> str | None:
        if self.arxiv_id:
            return f"arXiv:{self.arxiv_id}"
        return f"doi:{self.doi}" if self.doi else None

    @property
    def bibtex(self) -> str:
        container = "booktitle" if self.kind == "inproceedings" else "journal"
        fields = [
            ("title", f"{{{self.title}}}"),  # double braces keep the title's capitals
            ("author", " and ".join(self.authors)),
            (container, self.container),
            ("volume", self.volume),
            ("pages", self.pages),
            ("year", str(self.year)),
            ("doi", self.doi),
            ("eprint", self.arxiv_id),
            ("archivePrefix", "arXiv" if self.arxiv_id else None),
        ]
        body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields if value)
        return f"@{self.kind}{{{self.key},\n{body}\n}}"


@dataclass(frozen=True)
class QuantizerReference:
    """Display name, Hub tag, papers and one-paragraph summary of one quantizer type."""

    name: str
    tag: str
    papers: tuple[Paper, ...]
    summary: str

    @property
    def bibtex(self) -> str:
        return "\n\n".join(paper.bibtex for paper in self.papers)


_ICLR = "International Conference on Learning Representations"
_ARXIV = "arXiv preprint"
_VQVAE = Paper("vandenoord2017neural", "Neural Discrete Representation Learning",
               ("van den Oord, Aaron", "Vinyals, Oriol", "Kavukcuoglu, Koray"), 2017,
               "Advances in Neural Information Processing Systems", volume="30", arxiv_id="1711.00937")
_NSVQ = Paper("vali2022nsvq", "NSVQ: Noise Substitution in Vector Quantization for Machine Learning",
              ("Vali, Mohammad Hassan", "Bäckström, Tom"), 2022, "IEEE Access", kind="article",
              volume="10", pages="13598--13610", doi="10.1109/ACCESS.2022.3147670")
_SOFT_EM = Paper("roy2018theory", "Theory and Experiments on Vector Quantized Autoencoders",
                 ("Roy, Aurko", "Vaswani, Ashish", "Neelakantan, Arvind", "Parmar, Niki"), 2018,
                 _ARXIV, kind="article", arxiv_id="1805.11063")
_VQ_WAV2VEC = Paper("baevski2020vqwav2vec", "vq-wav2vec: Self-Supervised Learning of Discrete Speech Representations",
                    ("Baevski, Alexei", "Schneider, Steffen", "Auli, Michael"), 2020, _ICLR, arxiv_id="1910.05453")
_GUMBEL_SOFTMAX = Paper("jang2017categorical", "Categorical Reparameterization with Gumbel-Softmax",
                        ("Jang, Eric", "Gu, Shixiang", "Poole, Ben"), 2017, _ICLR, arxiv_id="1611.01144")
_SQVAE = Paper(
    "takida2022sqvae",
    "SQ-VAE: Variational Bayes on Discrete Representation with Self-annealed Stochastic Quantization",
    ("Takida, Yuhta", "Shibuya, Takashi", "Liao, WeiHsiang", "Lai, Chieh-Hsin", "Ohmura, Junki", "Uesaka, Toshimitsu",
     "Murata, Naoki", "Takahashi, Shusuke", "Kumakura, Toshiyuki", "Mitsufuji, Yuki"),
    2022, "International Conference on Machine Learning", arxiv_id="2205.07547")
_HYPERVQ = Paper("goswami2024hypervq", "HyperVQ: MLR-based Vector Quantization in Hyperbolic Space",
                 ("Goswami, Nabarun", "Mukuta, Yusuke", "Harada, Tatsuya"), 2024, _ARXIV, kind="article",
                 arxiv_id="2403.13015")

QUANTIZER_REFERENCES: dict[str, QuantizerReference] = {
    "vqtok-vq": QuantizerReference("VQ-VAE", "vq-vae", (_VQVAE,),
        "Nearest-code vector quantization with a straight-through gradient and a commitment loss; the codebook "
        "is learnt by gradient or by exponential moving averages."),
    "vqtok-nsvq": QuantizerReference("NSVQ", "nsvq", (_NSVQ,),
        "Noise-substitution vector quantization: in training the quantization error is replaced by a random "
        "direction of the same norm, so gradients reach encoder and codebook without a straight-through estimator."),
    "vqtok-softvq": QuantizerReference("Soft (EM) VQ-VAE", "soft-vq-vae", (_SOFT_EM,),
        "Soft expectation-maximisation quantization: codes are sampled from a softmax over negative distances "
        "and the codebook follows soft EMA (M-step) updates."),
    "vqtok-gumbel": QuantizerReference("Gumbel-softmax VQ", "gumbel-vq", (_VQ_WAV2VEC, _GUMBEL_SOFTMAX),
        "Codes chosen by a learnt linear map and a straight-through Gumbel-softmax sample, as in vq-wav2vec."),
    "vqtok-sqvae": QuantizerReference("SQ-VAE", "sq-vae", (_SQVAE,),
        "Stochastic quantization with a learnt variance that anneals itself during training (self-annealing), "
        "trained as a variational autoencoder."),
    "vqtok-hypervq": QuantizerReference("HyperVQ", "hypervq", (_HYPERVQ,),
        "Quantization as hyperbolic multinomial logistic regression on the Poincaré ball; the codes are "
        "representative points of the hyperbolic decision hyperplanes."),
}
"""model_type -> reference for every planned vqtok quantizer type (types not listed get a generic card)."""


def quantizer_reference(model_type: str) -> QuantizerReference:
    """The card reference of `model_type`; a generic one (no papers) for a type not listed."""
    if model_type in QUANTIZER_REFERENCES:
        return QUANTIZER_REFERENCES[model_type]
    name = model_type.removeprefix("vqtok-") if isinstance(model_type, str) else str(model_type)
    return QuantizerReference(name, name, (), f"Quantizer of the vqtok model type `{model_type}`.")


def render_model_card(
    model,
    *,
    repo_id: str | None = None,
    metrics: Mapping[str, object] | None = None,
    training_data: str | None = None,
    datasets: Sequence[str] | None = None,
    license: str = DEFAULT_LICENSE,  # noqa: A002 - the Hub's name for the field
    tags: Sequence[str] | None = None,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """Render the model card of a vqtok tokenizer.

    Args:
        model: a vqtok tokenizer (`VQTokenizerPreTrainedModel`) or just its config (`VQTokenizerConfig`;
            the card then has no parameter count).
        repo_id: Hub repo id shown in the title and the usage snippet (default: a placeholder path).
        metrics: the final evaluation, metric name -> value (number or string), one table row each,
            in the given order.
        training_data: Markdown describing the training data.
        datasets: Hub dataset ids the model was trained on (card metadata `datasets`).
        license: a Hub license id (default `apache-2.0`).
        tags: extra Hub tags, after `image-tokenization`, `vqtok` and the quantizer's tag.
        template_path: a Jinja2 Markdown template to use instead of `model_cards/tokenizer_card.md`.

    Returns:
        a `huggingface_hub.ModelCard` (`.save(path)`, `.push_to_hub(repo_id)`, `str(card)`).
    """
    config = model if isinstance(model, PreTrainedConfig) else getattr(model, "config", None)
    if not isinstance(config, PreTrainedConfig):
        raise TypeError(f"model must be a vqtok tokenizer or its config, got {type(model).__name__}")
    _check_optional_str("repo_id", repo_id)
    _check_optional_str("training_data", training_data)
    if not isinstance(license, str) or not license.strip():
        raise ValueError(f"license must be a Hub license id such as 'apache-2.0', got {license!r}")
    datasets = _str_list("datasets", datasets)
    template = Path(template_path) if template_path is not None else TEMPLATE_PATH
    if not template.is_file():
        raise FileNotFoundError(f"model card template not found: {template}")

    model_type = config.model_type
    reference = quantizer_reference(model_type)
    model_tags = list(getattr(model, "model_tags", None) or [])
    card_data = ModelCardData(
        library_name=LIBRARY_NAME,
        license=license,
        tags=[*BASE_TAGS, reference.tag, *_str_list("tags", tags), *model_tags],
        datasets=datasets or None,
        pipeline_tag=PIPELINE_TAG,
    )
    grid_h, grid_w = config.token_grid
    num_parameters = model.num_parameters() if hasattr(model, "num_parameters") else None
    described = training_data.strip() if training_data and training_data.strip() else "Not documented."
    if datasets:
        described += "\n\nHub datasets: " + ", ".join(f"`{name}`" for name in datasets) + "."
    return ModelCard.from_template(
        card_data,
        template_path=str(template),
        title=repo_id or f"vqtok {reference.name} tokenizer",
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
        metrics=_metric_rows(metrics),
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
def _config_rows(config: PreTrainedConfig) -> list[tuple[str, str]]:
    """(field, JSON value) for every field the vqtok config adds to transformers' base config."""
    base = set(PreTrainedConfig.__dataclass_fields__)
    names = [f.name for f in dataclasses.fields(config) if f.name not in base and not f.name.startswith("_")]
    return [(name, _cell(json.dumps(getattr(config, name), default=str))) for name in names]


def _metric_rows(metrics: Mapping[str, object] | None) -> list[tuple[str, str]]:
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
        rows.append((_cell(name), _cell(f"{value:.4g}" if isinstance(value, float) else str(value))))
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
