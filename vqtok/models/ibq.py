"""IBQ tokenizer (Shi et al. 2025): index backpropagation quantization, every code trained at every step."""

from __future__ import annotations

from ..configuration import VQTokenizerConfig
from ..hub.references import Paper, QuantizerReference
from ..modeling import VQTokenizerPreTrainedModel
from ..options import document_options
from ..quantizers import IBQuantizer
from .simvq import ICCV

IBQ_PAPER = Paper(
    "shi2025taming", "Taming Scalable Visual Tokenizer for Autoregressive Image Generation",
    ("Shi, Fengyuan", "Luo, Zhuoyan", "Ge, Yixiao", "Yang, Yujiu", "Shan, Ying", "Wang, Limin"), 2025, ICCV,
    arxiv_id="2412.02692",
)


@document_options
class IBQConfig(VQTokenizerConfig, quantizer=IBQuantizer):
    r"""IBQ tokenizer (Shi et al. 2025): a position's code is the one of largest logit z.e_k; the decoder
    receives (onehot - sg(softmax) + softmax) E, whose value is that code and whose gradient reaches
    every code through the softmax, so the whole codebook follows the encoder; the reference's
    quantization terms and entropy penalty (weights from its configs) train it. Memory stays bounded
    at large K: the softmax is recomputed in chunks of rows in the backward pass.
    """

    model_type = "vqtok-ibq"
    reference = QuantizerReference(
        "IBQ", "ibq", (IBQ_PAPER,),
        "Index backpropagation quantization: a straight-through estimator on the softmax over all codes, so every "
        "code gets a gradient at every step.",
    )


class IBQModel(VQTokenizerPreTrainedModel):
    """IBQ tokenizer (`IBQConfig`)."""

    config_class = IBQConfig
