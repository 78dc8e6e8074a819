"""FSQ tokenizer (Mentzer et al. 2024): finite scalar quantization, a fixed grid of codes with no
table and no codebook loss."""

from __future__ import annotations

from ..configuration import VQTokenizerConfig
from ..hub.references import ICLR, Paper, QuantizerReference
from ..modeling import VQTokenizerPreTrainedModel
from ..options import document_options
from ..quantizers import FSQuantizer

FSQ_PAPER = Paper(
    "mentzer2024finite", "Finite Scalar Quantization: VQ-VAE Made Simple",
    ("Mentzer, Fabian", "Minnen, David", "Agustsson, Eirikur", "Tschannen, Michael"), 2024, ICLR,
    arxiv_id="2309.15505",
)


@document_options
class FSQConfig(VQTokenizerConfig, quantizer=FSQuantizer):
    r"""FSQ tokenizer (Mentzer et al. 2024): each of the D = len(levels) latent dimensions is bounded
    and rounded to one of its levels (straight-through); the codes are the grid of all combinations,
    K = prod(levels), so there is no codebook to learn, initialise or restart, and every code keeps
    its place. `latent_dim` and `codebook_size` follow from the levels (filled in; a given value must agree).
    """

    model_type = "vqtok-fsq"
    reference = QuantizerReference(
        "FSQ", "fsq", (FSQ_PAPER,),
        "Finite scalar quantization: each latent dimension is bounded and rounded to a few levels; the codes are "
        "the fixed grid of level combinations (no codebook, no codebook loss).",
    )


class FSQModel(VQTokenizerPreTrainedModel):
    """FSQ tokenizer (`FSQConfig`): finite scalar quantization."""

    config_class = FSQConfig
