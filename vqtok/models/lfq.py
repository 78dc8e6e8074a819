"""LFQ tokenizer (Yu et al. 2024, MAGVIT-v2): lookup-free quantization, one bit per latent dimension."""

from __future__ import annotations

from ..configuration import VQTokenizerConfig
from ..hub.references import ICLR, Paper, QuantizerReference
from ..modeling import VQTokenizerPreTrainedModel
from ..options import document_options
from ..quantizers import LFQuantizer

MAGVIT2_PAPER = Paper(
    "yu2024language", "Language Model Beats Diffusion -- Tokenizer is Key to Visual Generation",
    ("Yu, Lijun", "Lezama, José", "Gundavarapu, Nitesh B.", "Versari, Luca", "Sohn, Kihyuk", "Minnen, David",
     "Cheng, Yong", "Gupta, Agrim", "Gu, Xiuye", "Hauptmann, Alexander G.", "Gong, Boqing", "Yang, Ming-Hsuan",
     "Essa, Irfan", "Ross, David A.", "Jiang, Lu"), 2024, ICLR, arxiv_id="2310.05737",
)


@document_options
class LFQConfig(VQTokenizerConfig, quantizer=LFQuantizer):
    r"""LFQ tokenizer (Yu et al. 2024, MAGVIT-v2): bit i of a position's id is [z_i > 0] and its code
    is sign(z), so K = 2^latent_dim (filled in) and there is no table; an entropy loss makes each
    position's bits confident and spreads the batch over all codes. The entropy terms are exact and
    never form the `[N, K]` probabilities (see `vqtok.quantizers.lfq.code_entropies`).
    """

    model_type = "vqtok-lfq"
    paper_settings = dict(entropy_weight=0.1)
    reference = QuantizerReference(
        "LFQ", "lfq", (MAGVIT2_PAPER,),
        "Lookup-free quantization: each latent dimension is one bit (q = sign(z)), the codes are the corners of "
        "the cube; an entropy loss keeps the bits confident and the codes used.",
    )


class LFQModel(VQTokenizerPreTrainedModel):
    """LFQ tokenizer (`LFQConfig`): lookup-free quantization."""

    config_class = LFQConfig
