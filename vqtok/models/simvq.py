"""SimVQ tokenizer (Zhu et al. 2025): a frozen random codebook reparameterised by one learnt linear map."""

from __future__ import annotations

from ..configuration import VQTokenizerConfig
from ..modeling import VQTokenizerPreTrainedModel
from ..quantizers import SimVQuantizer
from ..hub.references import ROTATION_TRICK_PAPER, Paper, QuantizerReference

ICCV = "IEEE/CVF International Conference on Computer Vision"

SIMVQ_PAPER = Paper(
    "zhu2025addressing", "Addressing Representation Collapse in Vector Quantized Models with One Linear Layer",
    ("Zhu, Yongxin", "Li, Bocheng", "Xin, Yifei", "Xia, Zhihua", "Xu, Linli"), 2025, ICCV, arxiv_id="2411.02038",
)


class SimVQConfig(VQTokenizerConfig):
    r"""SimVQ tokenizer (Zhu et al. 2025): the codes are C W + b, with C a frozen random table (saved
    with the weights) and W, b a learnt D x D linear map with its bias; nearest code, straight-through (or rotation-trick)
    gradient, commitment and codebook losses. The codebook loss trains W, which moves every code at
    once, so codes do not fall out of use.
    """

    model_type = "vqtok-simvq"
    quantizer_class = SimVQuantizer
    option_papers = {"rotation_trick": ROTATION_TRICK_PAPER}
    reference = QuantizerReference(
        "SimVQ", "simvq", (SIMVQ_PAPER,),
        "A frozen random codebook times one learnt linear map: every gradient step moves the whole codebook, "
        "which keeps large codebooks in use.",
    )

    commitment_cost: float | int = 0.25
    rotation_trick: bool = False


class SimVQModel(VQTokenizerPreTrainedModel):
    """SimVQ tokenizer (`SimVQConfig`)."""

    config_class = SimVQConfig
