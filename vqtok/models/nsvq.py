"""NSVQ tokenizer (Vali & Bäckström 2022): noise substitution in training, nearest code at encode."""

from __future__ import annotations

from ..configuration import VQTokenizerConfig
from ..hub.references import Paper, QuantizerReference
from ..modeling import VQTokenizerPreTrainedModel
from ..options import document_options
from ..quantizers import NSVQuantizer

NSVQ_PAPER = Paper(
    "vali2022nsvq", "NSVQ: Noise Substitution in Vector Quantization for Machine Learning",
    ("Vali, Mohammad Hassan", "Bäckström, Tom"), 2022, "IEEE Access", kind="article",
    volume="10", pages="13598--13610", doi="10.1109/ACCESS.2022.3147670",
)


@document_options
class NSVQConfig(VQTokenizerConfig, quantizer=NSVQuantizer):
    r"""NSVQ tokenizer (Vali & Baeckstroem 2022): in training the quantization error is replaced by
    Gaussian noise of the same length, `x + (||x - q|| / ||v||) v`, so no straight-through estimator
    and no VQ loss are needed; encoding takes the nearest code. Codes that fall out of use are
    periodically replaced by jittered copies of used ones.

    The class defaults are tuned for short runs on small images (the quickstart's 300 steps on the
    bundled sample set: held-out MSE 0.0064, 93% of the codes used);
    `NSVQConfig.paper_preset()` gives the reference settings (replacement every 1000 batches below
    1% use, one learning rate for everything, a random initial codebook).
    """

    model_type = "vqtok-nsvq"
    paper_settings = dict(replace_every=1000, replace_fraction=0.01, kmeans_init=False, quantizer_lr_multiplier=1.0)
    reference = QuantizerReference(
        "NSVQ", "nsvq", (NSVQ_PAPER,),
        "Noise-substitution vector quantization: in training the quantization error is replaced by a random "
        "direction of the same norm, so gradients reach encoder and codebook without a straight-through estimator.",
    )


class NSVQModel(VQTokenizerPreTrainedModel):
    """NSVQ tokenizer (`NSVQConfig`): noise substitution in training, nearest code at encode."""

    config_class = NSVQConfig
