"""References of the methods behind each tokenizer type: papers (rendered on model cards and
cited as BibTeX) and a one-paragraph summary. Each type module under `vqtok/models/` declares its own."""

from __future__ import annotations

from dataclasses import dataclass

ICLR = "International Conference on Learning Representations"
ICML = "International Conference on Machine Learning"
NEURIPS = "Advances in Neural Information Processing Systems"
ARXIV = "arXiv preprint"


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
    """Display name, Hub tag, papers and one-paragraph summary of one tokenizer type."""

    name: str
    tag: str
    papers: tuple[Paper, ...]
    summary: str

    @property
    def bibtex(self) -> str:
        return "\n\n".join(paper.bibtex for paper in self.papers)


def generic_reference(model_type: str) -> QuantizerReference:
    """The reference shown for a type that declares none: its name, no papers."""
    name = model_type.removeprefix("vqtok-") if isinstance(model_type, str) else str(model_type)
    return QuantizerReference(name, name, (), f"Quantizer of the vqtok model type `{model_type}`.")


ROTATION_TRICK_PAPER = Paper(
    "fifty2025restructuring", "Restructuring Vector Quantization with the Rotation Trick",
    ("Fifty, Christopher", "Junkins, Ronald G.", "Duan, Dennis", "Iyengar, Aniketh", "Liu, Jerry W.", "Amid, Ehsan",
     "Thrun, Sebastian", "Ré, Christopher"), 2025, ICLR, arxiv_id="2410.06424",
)
OPTION_PAPERS = {"rotation_trick": ROTATION_TRICK_PAPER}
"""Papers of options that several types share (flags), cited on a card where the option is switched on."""


# --- the projects whose pretrained tokenizers `vqtok.conversion` imports ---------------------------
CVPR = "Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition"

TAMING_PAPER = Paper(
    "esser2021taming", "Taming Transformers for High-Resolution Image Synthesis",
    ("Esser, Patrick", "Rombach, Robin", "Ommer, Björn"), 2021, CVPR, pages="12873--12883", arxiv_id="2012.09841",
)
LDM_PAPER = Paper(
    "rombach2022high", "High-Resolution Image Synthesis with Latent Diffusion Models",
    ("Rombach, Robin", "Blattmann, Andreas", "Lorenz, Dominik", "Esser, Patrick", "Ommer, Björn"), 2022, CVPR,
    pages="10684--10695", arxiv_id="2112.10752",
)
LLAMAGEN_PAPER = Paper(
    "sun2024autoregressive", "Autoregressive Model Beats Diffusion: Llama for Scalable Image Generation",
    ("Sun, Peize", "Jiang, Yi", "Chen, Shoufa", "Zhang, Shilong", "Peng, Bingyue", "Luo, Ping", "Yuan, Zehuan"),
    2024, ARXIV, kind="article", arxiv_id="2406.06525",
)
JANUS_PAPER = Paper(
    "wu2024janus", "Janus: Decoupling Visual Encoding for Unified Multimodal Understanding and Generation",
    ("Wu, Chengyue", "Chen, Xiaokang", "Wu, Zhiyu", "Ma, Yiyang", "Liu, Xingchao", "Pan, Zizheng", "Liu, Wen",
     "Xie, Zhenda", "Yu, Xingkai", "Ruan, Chong", "Luo, Ping"), 2024, ARXIV, kind="article", arxiv_id="2410.13848",
)
CHAMELEON_PAPER = Paper(
    "team2024chameleon", "Chameleon: Mixed-Modal Early-Fusion Foundation Models", ("Chameleon Team",), 2024, ARXIV,
    kind="article", arxiv_id="2405.09818",
)


@dataclass(frozen=True)
class SourceProject:
    """A project whose pretrained tokenizers vqtok imports (`vqtok.conversion`): named and cited on the
    card of every tokenizer converted from it, under its `license` (a Hub identifier) unless the caller
    gives another."""

    name: str
    project: str
    url: str
    license: str
    license_note: str
    papers: tuple[Paper, ...]


SOURCE_PROJECTS = {
    source.name: source
    for source in (
        SourceProject(
            "janus", "Janus / Janus-Pro (DeepSeek)", "https://github.com/deepseek-ai/Janus", "other",
            "the DeepSeek Model License (the code is MIT-licensed); read it before use or redistribution",
            (JANUS_PAPER, LLAMAGEN_PAPER),
        ),
        SourceProject(
            "llamagen", "LlamaGen", "https://github.com/FoundationVision/LlamaGen", "mit", "MIT", (LLAMAGEN_PAPER,),
        ),
        SourceProject(
            "chameleon", "Chameleon (Meta)", "https://github.com/facebookresearch/chameleon", "other",
            "the Chameleon Research License of Meta; read it before use or redistribution", (CHAMELEON_PAPER,),
        ),
        SourceProject(
            "taming", "taming-transformers", "https://github.com/CompVis/taming-transformers", "mit", "MIT",
            (TAMING_PAPER,),
        ),
        SourceProject(
            "diffusers", "a diffusers VQModel", "https://github.com/huggingface/diffusers", "unknown",
            "the license of the converted checkpoint's repository (not recorded by diffusers; pass it to the converter)",
            (LDM_PAPER, TAMING_PAPER),
        ),
    )
}
