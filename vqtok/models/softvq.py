"""Soft VQ tokenizer trained by EM (Roy et al. 2018): sampled soft assignments in training, the
nearest code at encode."""

from __future__ import annotations

from ..configuration import VQTokenizerConfig
from ..modeling import VQTokenizerPreTrainedModel
from ..quantizers import SoftVQQuantizer
from ..hub.references import ARXIV, Paper, QuantizerReference

SOFT_EM_PAPER = Paper(
    "roy2018theory", "Theory and Experiments on Vector Quantized Autoencoders",
    ("Roy, Aurko", "Vaswani, Ashish", "Neelakantan, Arvind", "Parmar, Niki"), 2018, ARXIV, kind="article",
    arxiv_id="1805.11063",
)


class SoftVQConfig(VQTokenizerConfig):
    r"""Soft VQ tokenizer trained by EM (Roy et al. 2018): in training each latent vector is
    replaced by the mean of `num_samples` codes drawn from the posterior
    p(k|z) = softmax(-||z - e_k||^2 / temperature) (straight-through to the encoder), and the
    codebook follows the soft assignments by a Laplace-smoothed EMA (soft M-step). Encoding takes
    the nearest code (the posterior's mode).

    The class defaults are tuned for short runs on small images (the quickstart's 300 steps on the
    bundled sample set: held-out MSE 0.0057, 99.8% of the codes used);
    `SoftVQConfig.paper_preset()` gives the reference settings (gamma = 0.999, T = 1, no restarts,
    random initial codes).

    Args:
        num_samples (`int`, defaults to 10):
            S, posterior samples per latent vector.
        commitment_cost (`float`, defaults to 0.25):
            beta, the weight of the commitment loss `mean((z_e - sg z_bar)^2)`.
        ema_decay (`float`, defaults to 0.95):
            gamma of the soft EMA M-step. Lower than the reference's 0.999 so that the codes follow
            the encoder's fast-moving output in a short run, and the counts of codes that lost their
            vectors fall below `dead_code_threshold` within a few dozen steps.
        ema_epsilon (`float`, defaults to 1e-5):
            Laplace smoothing of the EMA cluster sizes.
        temperature (`float`, defaults to 0.03):
            Divides the negative squared distances before the softmax; larger is softer. How soft
            the posterior is depends on the latents' scale: on the quickstart's latents (squared
            distances between neighbouring codes about 0.1) the reference's T = 1 spreads each
            vector over nearly all the codes, which the soft M-step then pulls together; 0.03 keeps a
            few codes in each posterior.
        dead_code_threshold (`float`, defaults to 1.0):
            Codes whose EMA soft count falls below this many assignments per batch are restarted on
            random latent vectors of the batch (their EMA statistics are reset to match). 0 disables
            restarts, as in the reference.
        kmeans_init (`bool`, defaults to `True`):
            Initialise the codebook and its EMA statistics with k-means on the first training batch.
        kmeans_iters (`int`, defaults to 10):
            Lloyd iterations of that k-means.
    """

    model_type = "vqtok-softvq"
    quantizer_class = SoftVQQuantizer
    paper_settings = dict(ema_decay=0.999, temperature=1.0, dead_code_threshold=0.0, kmeans_init=False)
    reference = QuantizerReference(
        "Soft (EM) VQ-VAE", "soft-vq-vae", (SOFT_EM_PAPER,),
        "Soft expectation-maximisation quantization: codes are sampled from a softmax over negative distances "
        "and the codebook follows soft EMA (M-step) updates.",
    )

    num_samples: int = 10
    commitment_cost: float | int = 0.25
    ema_decay: float = 0.95
    ema_epsilon: float = 1e-5
    temperature: float | int = 0.03
    dead_code_threshold: float | int = 1.0
    kmeans_init: bool = True
    kmeans_iters: int = 10


class SoftVQModel(VQTokenizerPreTrainedModel):
    """Soft VQ tokenizer trained by EM (`SoftVQConfig`): sampled soft assignments in training,
    nearest code at encode."""

    config_class = SoftVQConfig
