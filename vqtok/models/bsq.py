"""BSQ tokenizer (Zhao et al. 2024, BSQ-ViT): binary spherical quantization, LFQ on the unit sphere."""

from __future__ import annotations

from ..hub.references import ARXIV, Paper, QuantizerReference
from ..modeling import VQTokenizerPreTrainedModel
from ..options import document_options
from ..quantizers import BSQuantizer
from .lfq import LFQConfig

BSQ_PAPER = Paper(
    "zhao2024image", "Image and Video Tokenization with Binary Spherical Quantization",
    ("Zhao, Yue", "Xiong, Yuanjun", "Krähenbühl, Philipp"), 2024, ARXIV, kind="article", arxiv_id="2406.07548",
)


@document_options
class BSQConfig(LFQConfig, quantizer=BSQuantizer):
    r"""BSQ tokenizer (Zhao et al. 2024): the latent is l2-normalised, u = z / ||z||, and each dimension
    is one bit, q = sign(u) / sqrt(D), so codes and latents lie on the unit sphere and the
    quantization error is bounded; K = 2^latent_dim (filled in). The entropy loss is LFQ's, on the
    sphere's codes, computed exactly.
    """

    model_type = "vqtok-bsq"
    paper_settings = {}
    reference = QuantizerReference(
        "BSQ", "bsq", (BSQ_PAPER,),
        "Binary spherical quantization: the latent is projected onto the unit sphere and each dimension is one "
        "bit, q = sign(u)/sqrt(D); an entropy loss keeps the bits confident and the codes used.",
    )


class BSQModel(VQTokenizerPreTrainedModel):
    """BSQ tokenizer (`BSQConfig`): binary spherical quantization."""

    config_class = BSQConfig
