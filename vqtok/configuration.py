"""Configuration classes: one shared backbone config and one subclass per quantizer type.

Every config is a `transformers.PreTrainedConfig`, so it saves to and loads from `config.json`
and is registered with `AutoConfig`. Values are checked when the config is built: a wrong type
raises `TypeError`, an out-of-range value or an unknown key raises `ValueError`.
"""

from __future__ import annotations

import math

from transformers import PreTrainedConfig

# Keys that transformers itself passes through `__post_init__` when it builds or loads a config.
_TRANSFORMERS_KEYS = frozenset(
    {
        "model_type",
        "name_or_path",
        "_name_or_path",
        "torch_dtype",
        "_commit_hash",
        "output_attentions",
        "attn_implementation",
        "experts_implementation",
        "per_layer_config",
        "num_labels",
        "_attn_implementation_autoset",
    }
)

SUPPORTED_DOWNSAMPLING_FACTORS = (2, 4, 8, 16)


def _check_type(name: str, value, expected: type | tuple[type, ...]) -> None:
    # bool is an int subclass; a flag passed where a number is expected is almost always a mistake.
    is_bool = isinstance(value, bool)
    if not isinstance(value, expected) or (is_bool and bool not in _as_tuple(expected)):
        names = " or ".join(t.__name__ for t in _as_tuple(expected))
        raise TypeError(f"config field `{name}` must be {names}, got {type(value).__name__} ({value!r})")


def _as_tuple(expected):
    return expected if isinstance(expected, tuple) else (expected,)


def _check_range(name: str, value, low=None, high=None, low_open=False, high_open=False) -> None:
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        bounds = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ValueError(f"config field `{name}` must lie in {bounds}, got {value!r}")


def _check_fields(config: VQTokenizerConfig, specs: dict) -> None:
    """Check several fields at once: `specs` maps a field name to `(expected types, bounds)`, where
    `bounds` holds `_check_range` keyword arguments (or is None for no range)."""
    for name, (expected, bounds) in specs.items():
        value = getattr(config, name)
        _check_type(name, value, expected)
        if bounds is not None:
            _check_range(name, value, **bounds)


_NUMBER = (float, int)
_KMEANS_INIT_FIELDS = {"kmeans_init": (bool, None), "kmeans_iters": (int, {"low": 0})}
# The EMA codebook and commitment options shared by VQ-VAE and soft EM.
_EMA_FIELDS = {
    "commitment_cost": (_NUMBER, {"low": 0}),
    "ema_decay": (_NUMBER, {"low": 0, "high": 1, "high_open": True}),
    "ema_epsilon": (_NUMBER, {"low": 0, "low_open": True}),
}



class VQTokenizerConfig(PreTrainedConfig):
    r"""Shared configuration of every vqtok image tokenizer: the convolutional backbone, the latent
    grid and the codebook size. Quantizer-specific options live in the subclasses
    (`VQConfig`, ...), one per quantizer type, each with its own `model_type`.

    Args:
        in_channels (`int`, defaults to 3):
            Image channels: 1 (grey) or 3 (RGB).
        image_size (`int`, defaults to 32):
            Side of the square training images. Used to recover the token grid when `decode`
            receives flattened ids `[B, h*w]`; `encode` accepts any size divisible by
            `downsampling_factor`.
        base_channels (`int`, defaults to 64):
            Width of the first convolution; level `i` has `base_channels * channel_multipliers[i]`.
        channel_multipliers (`list[int]`, *optional*):
            One width multiplier per downsampling level; its length must be
            `log2(downsampling_factor)`. Defaults to `[1, 2, 4, 4][:log2(downsampling_factor)]`.
        num_res_blocks (`int`, defaults to 1):
            Residual blocks per level, in the encoder and the decoder.
        downsampling_factor (`int`, defaults to 4):
            Spatial reduction f in {2, 4, 8, 16}: an H x W image gives an (H/f) x (W/f) token grid.
            Images whose sides are not multiples of f are rejected (resize or crop them first).
        norm_groups (`int`, defaults to 8):
            GroupNorm groups (reduced to a divisor of each layer's width where needed).
        latent_dim (`int`, defaults to 64):
            Dimension D of the latent vectors and codebook entries.
        codebook_size (`int`, defaults to 512):
            Number of codes K; token ids lie in [0, K).
        reconstruction_loss_weight (`float`, defaults to 1.0):
            Weight of the pixel MSE in the total loss.
        training_metadata (`dict`, *optional*):
            Written by `training/train_tokenizer.py` at the final `save_pretrained`; None for an
            untrained config. What a user of the tokenizer needs to feed it and judge it:
            `image_size`, `in_channels`, `pixel_range` ([-1, 1]) and `pixel_normalization`
            (`x / 127.5 - 1` on uint8 pixels), `resize`, `dataset` (source, splits, image count,
            augmentation), the run (`steps`, `seed`, batch sizes, processes, learning rate,
            precision), `final_metrics` on the held-out split (mse, psnr, perplexity, codes_used,
            bits_per_image) and `vqtok_version`. Informational only: nothing reads it to build the model.
    """

    model_type = "vqtok"

    in_channels: int = 3
    image_size: int = 32
    base_channels: int = 64
    channel_multipliers: list[int] | tuple[int, ...] | None = None
    num_res_blocks: int = 1
    downsampling_factor: int = 4
    norm_groups: int = 8
    latent_dim: int = 64
    codebook_size: int = 512
    reconstruction_loss_weight: float | int = 1.0
    training_metadata: dict | None = None

    def __post_init__(self, **kwargs):
        unknown = sorted(k for k in kwargs if k not in _TRANSFORMERS_KEYS)
        if unknown:
            known = sorted(set(self.__dataclass_fields__) - set(PreTrainedConfig.__dataclass_fields__))
            raise ValueError(
                f"unknown config key(s) {unknown} for {type(self).__name__}; known keys: {known}"
            )
        if self.channel_multipliers is None and isinstance(self.downsampling_factor, int):
            levels = max(self.downsampling_factor.bit_length() - 1, 0)
            self.channel_multipliers = [min(2**i, 4) for i in range(levels)]
        if isinstance(self.channel_multipliers, tuple):
            self.channel_multipliers = list(self.channel_multipliers)
        super().__post_init__(**kwargs)
        self.check()

    def check(self) -> None:
        """Raise `TypeError`/`ValueError` naming the first invalid field. Subclasses extend it."""
        for name in ("in_channels", "image_size", "base_channels", "num_res_blocks", "downsampling_factor",
                     "norm_groups", "latent_dim", "codebook_size"):
            _check_type(name, getattr(self, name), int)
            _check_range(name, getattr(self, name), low=1)
        if self.in_channels not in (1, 3):
            raise ValueError(f"config field `in_channels` must be 1 or 3, got {self.in_channels}")
        if self.codebook_size < 2:
            raise ValueError(f"config field `codebook_size` must be at least 2, got {self.codebook_size}")
        if self.downsampling_factor not in SUPPORTED_DOWNSAMPLING_FACTORS:
            raise ValueError(
                f"config field `downsampling_factor` must be one of {SUPPORTED_DOWNSAMPLING_FACTORS}, "
                f"got {self.downsampling_factor}"
            )
        _check_type("channel_multipliers", self.channel_multipliers, list)
        for m in self.channel_multipliers:
            _check_type("channel_multipliers[i]", m, int)
            _check_range("channel_multipliers[i]", m, low=1)
        if len(self.channel_multipliers) != self.num_levels:
            raise ValueError(
                f"config field `channel_multipliers` needs one entry per downsampling level: "
                f"log2({self.downsampling_factor}) = {self.num_levels}, got {len(self.channel_multipliers)} "
                f"({self.channel_multipliers})"
            )
        if self.image_size % self.downsampling_factor:
            raise ValueError(
                f"config field `image_size` ({self.image_size}) must be a multiple of "
                f"`downsampling_factor` ({self.downsampling_factor})"
            )
        _check_type("reconstruction_loss_weight", self.reconstruction_loss_weight, (float, int))
        _check_range("reconstruction_loss_weight", self.reconstruction_loss_weight, low=0)
        if self.training_metadata is not None:
            _check_type("training_metadata", self.training_metadata, dict)

    @property
    def num_levels(self) -> int:
        """Number of stride-2 stages in the encoder (and upsampling stages in the decoder)."""
        return int(math.log2(self.downsampling_factor))

    @property
    def token_grid(self) -> tuple[int, int]:
        """(h, w) of the token grid for a square `image_size` image."""
        side = self.image_size // self.downsampling_factor
        return side, side


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

    commitment_cost: float | int = 0.25
    use_ema: bool = True
    ema_decay: float = 0.99
    ema_epsilon: float = 1e-5
    kmeans_init: bool = True
    kmeans_iters: int = 10
    dead_code_threshold: float | int = 1.0
    use_cosine: bool = False

    def check(self) -> None:
        super().check()
        _check_fields(
            self,
            {
                "use_ema": (bool, None),
                "use_cosine": (bool, None),
                "dead_code_threshold": (_NUMBER, {"low": 0}),
                **_EMA_FIELDS,
                **_KMEANS_INIT_FIELDS,
            },
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

    replace_every: int = 100
    replace_fraction: float | int = 0.01
    stop_replacing_after: int = 0
    replacement_jitter: float | int = 0.01
    kmeans_init: bool = True
    kmeans_iters: int = 10

    def check(self) -> None:
        super().check()
        _check_fields(
            self,
            {
                "replace_every": (int, {"low": 0}),
                "replace_fraction": (_NUMBER, {"low": 0, "high": 1}),
                "stop_replacing_after": (int, {"low": 0}),
                "replacement_jitter": (_NUMBER, {"low": 0, "low_open": True}),
                **_KMEANS_INIT_FIELDS,
            },
        )


class SoftVQConfig(VQTokenizerConfig):
    r"""Soft VQ tokenizer trained by EM (Roy et al. 2018): in training each latent vector is
    replaced by the mean of `num_samples` codes drawn from the posterior
    p(k|z) = softmax(-||z - e_k||^2 / temperature) (straight-through to the encoder), and the
    codebook follows the soft assignments by a Laplace-smoothed EMA (soft M-step). Encoding takes
    the nearest code (the posterior's mode).

    Args:
        num_samples (`int`, defaults to 10):
            S, posterior samples per latent vector.
        commitment_cost (`float`, defaults to 0.25):
            beta, the weight of the commitment loss `mean((z_e - sg z_bar)^2)`.
        ema_decay (`float`, defaults to 0.999):
            gamma of the soft EMA M-step.
        ema_epsilon (`float`, defaults to 1e-5):
            Laplace smoothing of the EMA cluster sizes.
        temperature (`float`, defaults to 1.0):
            Divides the negative squared distances before the softmax; larger is softer.
        kmeans_init (`bool`, defaults to `True`):
            Initialise the codebook and its EMA statistics with k-means on the first training batch.
        kmeans_iters (`int`, defaults to 10):
            Lloyd iterations of that k-means.
    """

    model_type = "vqtok-softvq"

    num_samples: int = 10
    commitment_cost: float | int = 0.25
    ema_decay: float = 0.999
    ema_epsilon: float = 1e-5
    temperature: float | int = 1.0
    kmeans_init: bool = True
    kmeans_iters: int = 10

    def check(self) -> None:
        super().check()
        _check_fields(
            self,
            {
                "num_samples": (int, {"low": 1}),
                "temperature": (_NUMBER, {"low": 0, "low_open": True}),
                **_EMA_FIELDS,
                **_KMEANS_INIT_FIELDS,
            },
        )


class GumbelVQConfig(VQTokenizerConfig):
    r"""Gumbel-softmax VQ tokenizer (the vq-wav2vec baseline): a linear layer maps each latent vector
    to code logits; training samples a hard Gumbel-softmax code (straight-through gradient of the
    soft sample) and hands its learned code vector to the decoder; encoding takes the logits' argmax.

    Args:
        tau_max (`float`, defaults to 2.0):
            Gumbel-softmax temperature at the first training step.
        tau_min (`float`, defaults to 0.5):
            Floor of the temperature; must not exceed `tau_max`.
        tau_decay (`float`, defaults to 0.999995):
            delta: the temperature at training forward j is `max(tau_max * delta**j, tau_min)`. The
            step j is saved with the weights, so a resumed run continues the schedule.
        diversity_weight (`float`, defaults to 0.0):
            Weight of the diversity loss `(K - perplexity(batch-mean softmax)) / K`, which spreads
            the use over the codebook (0 leaves it out).
    """

    model_type = "vqtok-gumbel"

    tau_max: float | int = 2.0
    tau_min: float | int = 0.5
    tau_decay: float = 0.999995
    diversity_weight: float | int = 0.0

    def check(self) -> None:
        super().check()
        _check_fields(
            self,
            {
                "tau_max": (_NUMBER, {"low": 0, "low_open": True}),
                "tau_min": (_NUMBER, {"low": 0, "low_open": True, "high": self.tau_max}),
                "tau_decay": (_NUMBER, {"low": 0, "high": 1, "low_open": True}),
                "diversity_weight": (_NUMBER, {"low": 0}),
            },
        )
