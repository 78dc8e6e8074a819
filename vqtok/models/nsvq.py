"""NSVQ tokenizer (Vali & Bäckström 2022): noise substitution in training, nearest code at encode."""

from __future__ import annotations

from ..configuration import VQTokenizerConfig
from ..modeling import VQTokenizerPreTrainedModel
from ..quantizers import NSVQuantizer
from ..references import Paper, QuantizerReference

NSVQ_PAPER = Paper(
    "vali2022nsvq", "NSVQ: Noise Substitution in Vector Quantization for Machine Learning",
    ("Vali, Mohammad Hassan", "Bäckström, Tom"), 2022, "IEEE Access", kind="article",
    volume="10", pages="13598--13610", doi="10.1109/ACCESS.2022.3147670",
)


class NSVQConfig(VQTokenizerConfig):
    r"""NSVQ tokenizer (Vali & Baeckstroem 2022): in training the quantization error is replaced by
    Gaussian noise of the same length, `x + (||x - q|| / ||v||) v`, so no straight-through estimator
    and no VQ loss are needed; encoding takes the nearest code. Codes that fall out of use are
    periodically replaced by jittered copies of used ones.

    Args:
        replace_every (`int`, defaults to 100):
            Training batches between codebook replacements (0 disables replacement).
        replace_fraction (`float`, defaults to 0.01):
            Codes used in fewer than this fraction of the last `replace_every` batches are replaced.
        stop_replacing_after (`int`, defaults to 0):
            No replacement after this many training batches (0: never stop). Set it near the end of
            training so the last steps tune a fixed set of codes.
        replacement_jitter (`float`, defaults to 0.01):
            Standard deviation of the jitter added to a replacement, relative to the spread of the
            used codes (per coordinate); large enough that a copy never ties with its source in fp32.
        kmeans_init (`bool`, defaults to `True`):
            Initialise the codebook with k-means on the first training batch.
        kmeans_iters (`int`, defaults to 10):
            Lloyd iterations of that k-means.
    """

    model_type = "vqtok-nsvq"
    quantizer_class = NSVQuantizer
    reference = QuantizerReference(
        "NSVQ", "nsvq", (NSVQ_PAPER,),
        "Noise-substitution vector quantization: in training the quantization error is replaced by a random "
        "direction of the same norm, so gradients reach encoder and codebook without a straight-through estimator.",
    )

    replace_every: int = 100
    replace_fraction: float | int = 0.01
    stop_replacing_after: int = 0
    replacement_jitter: float | int = 0.01
    kmeans_init: bool = True
    kmeans_iters: int = 10


class NSVQModel(VQTokenizerPreTrainedModel):
    """NSVQ tokenizer (`NSVQConfig`): noise substitution in training, nearest code at encode."""

    config_class = NSVQConfig
