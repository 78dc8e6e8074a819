"""HyperVQ tokenizer (Goswami et al. 2024): codes are hyperplanes of the Poincaré ball, chosen by
hyperbolic multinomial logistic regression; hard Gumbel samples in training, the argmax at encode."""

from __future__ import annotations

from ..configuration import VQTokenizerConfig
from ..hub.references import ARXIV, ICLR, Paper, QuantizerReference
from ..modeling import VQTokenizerPreTrainedModel
from ..options import document_options
from ..quantizers import HyperVQQuantizer

HYPERVQ_PAPER = Paper(
    "goswami2024hypervq", "HyperVQ: MLR-based Vector Quantization in Hyperbolic Space",
    ("Goswami, Nabarun", "Mukuta, Yusuke", "Harada, Tatsuya"), 2024, ARXIV, kind="article",
    arxiv_id="2403.13015",
)
HNN_PLUS_PLUS_PAPER = Paper(
    "shimizu2021hnnpp", "Hyperbolic Neural Networks++",
    ("Shimizu, Ryohei", "Mukuta, Yusuke", "Harada, Tatsuya"), 2021, ICLR, arxiv_id="2006.08210",
)


@document_options
class HyperVQConfig(VQTokenizerConfig, quantizer=HyperVQQuantizer):
    r"""HyperVQ tokenizer: each latent vector is mapped onto the Poincaré ball of curvature -c
    (`z_h = project(expmap0_c(z))`); each code k is a hyperbolic hyperplane with normal a_k and
    offset r_k, and the code logits are the scaled signed distances to those hyperplanes (the
    unidirectional hyperbolic MLR of HNN++). Training samples a hard Gumbel-softmax code
    (straight-through gradient of the soft sample) and hands the decoder the hyperplane's
    representative point in the tangent space, C_k = r_k a_k / ||a_k||; encoding takes the logits'
    argmax. All hyperbolic maths runs in fp32, also under bf16/fp16 autocast.

    The class defaults are tuned for short runs on small images (the quickstart's 300 steps on the
    bundled sample set); `HyperVQConfig.paper_preset()` gives the paper's reference settings
    (curvature 1, the slow temperature schedule, no diversity loss, the HNN++-style random
    initialisation, one learning rate; K = 512, D = 64). With those, a 300-step run uses about 1% of
    the codes at encode: the encoder's latents grow during training, expmap0 with c = 1 puts them all
    on the ball's boundary shell, and a handful of hyperplanes take every latent.
    """

    model_type = "vqtok-hypervq"
    paper_settings = dict(
        codebook_size=512, latent_dim=64, curvature=1.0, tau_max=2.0, tau_min=0.5, tau_decay=0.999995,
        diversity_weight=0.0, kmeans_init=False, quantizer_lr_multiplier=1.0,
    )
    reference = QuantizerReference(
        "HyperVQ", "hypervq", (HYPERVQ_PAPER, HNN_PLUS_PLUS_PAPER),
        "Codes are hyperplanes of the Poincaré ball: latents mapped onto the ball are classified by "
        "hyperbolic multinomial logistic regression (HNN++), sampled with a straight-through "
        "Gumbel-softmax in training, and decoded from each hyperplane's representative point.",
    )


class HyperVQModel(VQTokenizerPreTrainedModel):
    """HyperVQ tokenizer (`HyperVQConfig`): hyperbolic MLR over hyperplane codes, hard Gumbel samples
    in training, the logits' argmax at encode."""

    config_class = HyperVQConfig
