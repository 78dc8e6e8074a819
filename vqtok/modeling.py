"""Tokenizer models: a `PreTrainedModel` base holding encoder, quantizer and decoder, one thin
model class per quantizer config, and the `VQTokenizer` auto class that loads any of them."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from .backbone import Decoder, Encoder
from .configuration import VQConfig, VQTokenizerConfig
from .quantizers import Quantizer, VectorQuantizer
from .validation import check_pixel_values, check_token_grid


@dataclass
class VQTokenizerOutput(ModelOutput):
    """Output of a tokenizer's training forward.

    Attributes:
        loss: total loss, the sum of every term in `losses`.
        reconstruction: decoded images `[B, C, H, W]` (not clamped).
        input_ids: token ids chosen in this forward `[B, h, w]`.
        quantized: the vectors the decoder received `[B, D, h, w]`.
        losses: every named loss term (`reconstruction_loss`, `commitment_loss`, ...).
        reconstruction_loss / commitment_loss / codebook_loss: the common terms, for convenience
            (None when the quantizer has no such term).
        perplexity: exp(entropy) of this batch's code histogram.
        usage: fraction of codes used in this batch.
        stats: every diagnostic the quantizer reported.
    """

    loss: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None
    input_ids: torch.Tensor | None = None
    quantized: torch.Tensor | None = None
    losses: dict | None = None
    reconstruction_loss: torch.Tensor | None = None
    commitment_loss: torch.Tensor | None = None
    codebook_loss: torch.Tensor | None = None
    perplexity: torch.Tensor | None = None
    usage: torch.Tensor | None = None
    stats: dict | None = None


class VQTokenizerPreTrainedModel(PreTrainedModel):
    """Base of every vqtok tokenizer: encoder -> quantizer -> decoder.

    Subclasses set `config_class` and implement `build_quantizer(config)`; everything else
    (encode/decode/forward, input checks, safetensors-only loading) lives here.
    """

    config_class = VQTokenizerConfig
    base_model_prefix = "vqtok"
    main_input_name = "pixel_values"

    def __init__(self, config: VQTokenizerConfig):
        super().__init__(config)
        self.encoder = Encoder(config)
        self.quantizer: Quantizer = self.build_quantizer(config)
        self.decoder = Decoder(config)
        self.post_init()

    def build_quantizer(self, config: VQTokenizerConfig) -> Quantizer:
        raise NotImplementedError(f"{type(self).__name__} must implement build_quantizer(config)")

    def _init_weights(self, module):
        # PyTorch's default initialisation is kept; quantizers initialise their own codebooks.
        pass

    # --- public API ---------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """Deterministic token ids `[B, H/f, W/f]` (`torch.long`, in [0, K)) for images in [-1, 1]."""
        check_pixel_values(pixel_values, self.config.in_channels, self.config.downsampling_factor)
        z_e = self.encoder(pixel_values.to(self.dtype))
        return self.quantizer.select(z_e)

    @torch.no_grad()
    def decode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Images `[B, C, h*f, w*f]` in [-1, 1] for token ids `[B, h, w]` or `[B, h*w]`."""
        grid_ids = check_token_grid(input_ids, self.config.token_grid)
        latents = self.quantizer.embed(grid_ids.to(self.device))
        return self.decoder(latents.to(self.dtype)).clamp(-1.0, 1.0)

    def forward(self, pixel_values: torch.Tensor, return_dict: bool = True) -> VQTokenizerOutput:
        """Training path: stochastic where the quantizer is; returns every named loss term."""
        check_pixel_values(pixel_values, self.config.in_channels, self.config.downsampling_factor)
        z_e = self.encoder(pixel_values)
        quantized = self.quantizer(z_e)
        reconstruction = self.decoder(quantized.quantized)
        losses = {
            "reconstruction_loss": self.config.reconstruction_loss_weight
            * F.mse_loss(reconstruction.float(), pixel_values.float()),
            **quantized.losses,
        }
        output = VQTokenizerOutput(
            loss=sum(losses.values()),
            reconstruction=reconstruction,
            input_ids=quantized.indices,
            quantized=quantized.quantized,
            losses=losses,
            reconstruction_loss=losses["reconstruction_loss"],
            commitment_loss=losses.get("commitment_loss"),
            codebook_loss=losses.get("codebook_loss"),
            perplexity=quantized.stats.get("perplexity"),
            usage=quantized.stats.get("usage"),
            stats=quantized.stats,
        )
        return output if return_dict else output.to_tuple()

    # --- loading ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load from a directory or Hub repo: safetensors weights only (never pickle).

        A missing or corrupt weights file raises `OSError` naming the file.
        """
        if kwargs.get("use_safetensors") is False:
            raise ValueError("vqtok loads safetensors weights only; use_safetensors=False is not supported")
        kwargs["use_safetensors"] = True
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except (SafetensorError, RuntimeError) as error:
            if "safetensor" not in f"{type(error).__name__} {error}".lower() and not isinstance(error, SafetensorError):
                raise
            raise OSError(
                f"could not read the safetensors weights of {pretrained_model_name_or_path!s}: "
                f"the file is corrupt or truncated ({error})"
            ) from error


class VQModel(VQTokenizerPreTrainedModel):
    """VQ-VAE tokenizer (`VQConfig`): nearest-code quantization with straight-through gradients."""

    config_class = VQConfig

    def build_quantizer(self, config: VQConfig) -> VectorQuantizer:
        return VectorQuantizer(
            codebook_size=config.codebook_size,
            dim=config.latent_dim,
            commitment_cost=config.commitment_cost,
            use_ema=config.use_ema,
            ema_decay=config.ema_decay,
            ema_epsilon=config.ema_epsilon,
            kmeans_init=config.kmeans_init,
            kmeans_iters=config.kmeans_iters,
            dead_code_threshold=config.dead_code_threshold,
            use_cosine=config.use_cosine,
        )


# model_type -> (config class, model class); filled by `register_tokenizer`.
TOKENIZER_REGISTRY: dict[str, tuple[type[VQTokenizerConfig], type[VQTokenizerPreTrainedModel]]] = {}


def register_tokenizer(config_class: type[VQTokenizerConfig], model_class: type[VQTokenizerPreTrainedModel]) -> None:
    """Make a tokenizer type loadable by `VQTokenizer`, `AutoConfig` and `AutoModel`."""
    model_type = config_class.model_type
    TOKENIZER_REGISTRY[model_type] = (config_class, model_class)
    AutoConfig.register(model_type, config_class, exist_ok=True)
    AutoModel.register(config_class, model_class, exist_ok=True)


class VQTokenizer:
    """Auto class: builds or loads the right tokenizer for a config's `model_type`.

    >>> tokenizer = VQTokenizer.from_pretrained("path/or/repo-id")
    >>> ids = tokenizer.encode(pixel_values)          # [B, h, w] torch.long
    >>> images = tokenizer.decode(ids)                # [B, C, H, W] in [-1, 1]
    """

    def __init__(self, *args, **kwargs):
        raise TypeError("VQTokenizer is an auto class: use VQTokenizer.from_pretrained(...) or VQTokenizer.from_config(...)")

    @staticmethod
    def model_class_for(model_type: str) -> type[VQTokenizerPreTrainedModel]:
        """The registered model class for `model_type` (ValueError naming the known types otherwise)."""
        if model_type not in TOKENIZER_REGISTRY:
            raise ValueError(
                f"unknown vqtok model_type {model_type!r}; registered types: {sorted(TOKENIZER_REGISTRY)}"
            )
        return TOKENIZER_REGISTRY[model_type][1]

    @classmethod
    def from_config(cls, config: VQTokenizerConfig) -> VQTokenizerPreTrainedModel:
        """A freshly initialised tokenizer for `config`."""
        if not isinstance(config, VQTokenizerConfig):
            raise TypeError(f"config must be a VQTokenizerConfig subclass, got {type(config).__name__}")
        return cls.model_class_for(config.model_type)(config)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> VQTokenizerPreTrainedModel:
        """Load any vqtok tokenizer saved with `save_pretrained` or pushed to the Hub.

        Keyword arguments (`revision`, `cache_dir`, `token`, `local_files_only`, ...) pass through to
        `transformers.PreTrainedModel.from_pretrained`.
        """
        hub_kwargs = {k: kwargs[k] for k in ("revision", "cache_dir", "token", "local_files_only", "force_download") if k in kwargs}
        config = AutoConfig.from_pretrained(pretrained_model_name_or_path, **hub_kwargs)
        model_class = cls.model_class_for(getattr(config, "model_type", None))
        return model_class.from_pretrained(pretrained_model_name_or_path, config=config, **kwargs)


register_tokenizer(VQConfig, VQModel)
