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


# Papers of options that several types share, cited on a card where the option is switched on.
ROTATION_TRICK_PAPER = Paper(
    "fifty2025restructuring", "Restructuring Vector Quantization with the Rotation Trick",
    ("Fifty, Christopher", "Junkins, Ronald G.", "Duan, Dennis", "Iyengar, Aniketh", "Liu, Jerry W.", "Amid, Ehsan",
     "Thrun, Sebastian", "Ré, Christopher"), 2025, ICLR, arxiv_id="2410.06424",
)
