"""SimVQ tokenizer (Zhu et al. 2025): a frozen random codebook reparameterised by one learnt linear map."""

from __future__ import annotations

from ..configuration import VQTokenizerConfig
from ..hub.references import Paper, QuantizerReference
from ..modeling import VQTokenizerPreTrainedModel
from ..options import document_options
from ..quantizers import SimVQuantizer

ICCV = "IEEE/CVF International Conference on Computer Vision"

SIMVQ_PAPER = Paper(
    "zhu2025addressing", "Addressing Representation Collapse in Vector Quantized Models with One Linear Layer",
    ("Zhu, Yongxin", "Li, Bocheng", "Xin, Yifei", "Xia, Zhihua", "Xu, Linli"), 2025, ICCV, arxiv_id="2411.02038",
)


@document_options
class SimVQConfig(VQTokenizerConfig, quantizer=SimVQuantizer):
    r"""SimVQ tokenizer (Zhu et al. 2025): the codes are C W + b, with C a frozen random table (saved
    with the weights) and W, b a learnt D x D linear map with its bias; nearest code, straight-through (or rotation-trick)
    gradient, commitment and codebook losses. The codebook loss trains W, which moves every code at
    once, so codes do not fall out of use.
    """

    model_type = "vqtok-simvq"
    reference = QuantizerReference(
        "SimVQ", "simvq", (SIMVQ_PAPER,),
        "A frozen random codebook times one learnt linear map: every gradient step moves the whole codebook, "
        "which keeps large codebooks in use.",
    )


class SimVQModel(VQTokenizerPreTrainedModel):
    """SimVQ tokenizer (`SimVQConfig`)."""

    config_class = SimVQConfig
