"""Residual VQ tokenizer (Zeghidour et al. 2021; Lee et al. 2022): R nearest-code levels per position,
each coding the residual of the ones before it; ids `[B, h, w, R]`."""

from __future__ import annotations

from ..configuration import VQTokenizerConfig
from ..hub.references import Paper, QuantizerReference
from ..modeling import VQTokenizerPreTrainedModel
from ..options import document_options
from ..quantizers import ResidualVectorQuantizer

RQ_VAE_PAPER = Paper(
    "lee2022autoregressive", "Autoregressive Image Generation using Residual Quantization",
    ("Lee, Doyup", "Kim, Chiheon", "Kim, Saehoon", "Cho, Minsu", "Han, Wook-Shin"), 2022,
    "IEEE/CVF Conference on Computer Vision and Pattern Recognition", pages="11523--11532", arxiv_id="2203.01941",
)
SOUNDSTREAM_PAPER = Paper(
    "zeghidour2021soundstream", "SoundStream: An End-to-End Neural Audio Codec",
    ("Zeghidour, Neil", "Luebs, Alejandro", "Omran, Ahmed", "Skoglund, Jan", "Tagliasacchi, Marco"), 2022,
    "IEEE/ACM Transactions on Audio, Speech, and Language Processing", kind="article", volume="30",
    pages="495--507", arxiv_id="2107.03312",
)


@document_options
class RVQConfig(VQTokenizerConfig, quantizer=ResidualVectorQuantizer):
    r"""Residual VQ tokenizer (SoundStream, RQ-VAE): `num_quantizers` nearest-code levels per position,
    level l coding what levels 0..l-1 left, so a position's token is R ids (`[B, h, w, R]`, level 0
    first) and the decoder receives the sum of their codes. Each level's codebook learns by EMA
    with a k-means start and dead-code restarts (as `vqtok-vq`), or one codebook serves all levels;
    quantizer dropout trains the first levels to decode well on their own.
    """

    model_type = "vqtok-rvq"
    reference = QuantizerReference(
        "Residual VQ", "residual-vq", (SOUNDSTREAM_PAPER, RQ_VAE_PAPER),
        "Residual vector quantization: R nearest-code quantizers in a row, each coding the residual of the ones "
        "before it; a position's token is its R ids.",
    )


class RVQModel(VQTokenizerPreTrainedModel):
    """Residual VQ tokenizer (`RVQConfig`): R codes per position."""

    config_class = RVQConfig
