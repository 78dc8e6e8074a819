"""VQ-VAE tokenizer (van den Oord et al. 2017): nearest code with a straight-through gradient; the
codebook is learnt by EMA (default) or by gradient."""

from __future__ import annotations

from ..configuration import VQTokenizerConfig
from ..modeling import VQTokenizerPreTrainedModel
from ..quantizers import VectorQuantizer
from ..hub.references import NEURIPS, Paper, QuantizerReference

VQ_VAE_PAPER = Paper(
    "vandenoord2017neural", "Neural Discrete Representation Learning",
    ("van den Oord, Aaron", "Vinyals, Oriol", "Kavukcuoglu, Koray"), 2017, NEURIPS, volume="30",
    arxiv_id="1711.00937",
)


class VQConfig(VQTokenizerConfig):
    r"""VQ-VAE tokenizer (van den Oord et al. 2017) with straight-through gradients, optionally with
    EMA codebook updates. Defaults keep the codebook healthy: k-means initialisation on the first
    training batch, EMA updates, and restart of codes that fall out of use.

    Args:
        commitment_cost (`float`, defaults to 0.25):
            beta, the weight of the commitment loss `mean((z_e - sg z_q)^2)`.
        use_ema (`bool`, defaults to `True`):
            Update the codebook by exponential moving averages (no codebook gradient) instead of the
            codebook loss `mean((z_q - sg z_e)^2)`.
        ema_decay (`float`, defaults to 0.99):
            gamma of the EMA updates.
        ema_epsilon (`float`, defaults to 1e-5):
            Laplace smoothing of the EMA cluster sizes.
        kmeans_init (`bool`, defaults to `True`):
            Initialise the codebook with k-means on the first training batch.
        kmeans_iters (`int`, defaults to 10):
            Lloyd iterations of that k-means.
        dead_code_threshold (`float`, defaults to 1.0):
            A code whose moving-average use falls below this many assignments per batch is restarted
            on a random latent vector of the current batch (its EMA statistics are reset too).
            0 disables restarts.
        use_cosine (`bool`, defaults to `False`):
            l2-normalise latents and codes, so the nearest code is the one of largest cosine similarity.
    """

    model_type = "vqtok-vq"
    quantizer_class = VectorQuantizer
    reference = QuantizerReference(
        "VQ-VAE", "vq-vae", (VQ_VAE_PAPER,),
        "Nearest-code vector quantization with a straight-through gradient and a commitment loss; the codebook "
        "is learnt by gradient or by exponential moving averages.",
    )

    commitment_cost: float | int = 0.25
    use_ema: bool = True
    ema_decay: float = 0.99
    ema_epsilon: float = 1e-5
    kmeans_init: bool = True
    kmeans_iters: int = 10
    dead_code_threshold: float | int = 1.0
    use_cosine: bool = False


class VQModel(VQTokenizerPreTrainedModel):
    """VQ-VAE tokenizer (`VQConfig`): nearest-code quantization with straight-through gradients."""

    config_class = VQConfig
