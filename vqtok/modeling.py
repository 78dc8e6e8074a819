"""The base of every tokenizer model: encoder -> quantizer -> decoder, and the training loss.

Each tokenizer type (under `vqtok/models/`) subclasses `VQTokenizerPreTrainedModel` and sets
`config_class`; the encoder and decoder come from the config's backbone (`backbone_config`), the
quantizer from the config's own fields. A type may override the hooks `reconstruction_losses`
(SQ-VAE trains with its own likelihood, not MSE), `build_decoder` with `images_from_decoder_output`
(a likelihood over categories decodes one channel per category) and `check_images`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration import VQTokenizerConfig
from .hub import SafeHubMixin
from .quantizers import Quantizer, QuantizerOutput
from .regularizers import RegularizerInputs, build_regularizers
from .validation import check_pixel_values, check_token_grid


@dataclass
class VQTokenizerOutput(ModelOutput):
    """Output of a tokenizer's training forward.

    Attributes:
        loss: total loss, the sum of every term in `losses`.
        losses: every named loss term: the reconstruction objective's (`reconstruction_loss` by
            default), the quantizer's (`commitment_loss`, `codebook_loss`, ...) and each
            regulariser's.
        stats: every named diagnostic of the quantizer (`perplexity`, `usage`, ...) and of the
            regularisers.
        reconstruction: the decoder's output (not clamped): images `[B, C, H, W]` unless the type
            decodes otherwise (see `images_from_decoder_output`).
        input_ids: token ids chosen in this forward `[B, h, w]` (`[B, h, w, R]` with R codes per position).
        quantized: the vectors the decoder received `[B, D, h, w]`.
    """

    loss: torch.Tensor | None = None
    losses: dict | None = None
    stats: dict | None = None
    reconstruction: torch.Tensor | None = None
    input_ids: torch.Tensor | None = None
    quantized: torch.Tensor | None = None


def merge_named_terms(into: dict[str, torch.Tensor], terms: dict[str, torch.Tensor], source: str) -> None:
    """Add `terms` to `into`; a name already there is an error, since the trainer logs terms by name."""
    clashes = sorted(set(into) & set(terms))
    if clashes:
        raise ValueError(f"{source} reports {clashes}, which another part of the tokenizer already reports")
    into.update(terms)


class MissingDecoder(nn.Module):
    """The decoder of a tokenizer imported from an encoder-only checkpoint (`has_decoder=False`): no
    weights, and a clear error wherever a decoder would run (`decode`, training)."""

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(
            "this tokenizer has no decoder (config `has_decoder=False`): it was imported from an encoder-only "
            "checkpoint, so it can encode images to ids but not decode ids or train. Convert a checkpoint that "
            "holds the decoder's weights to decode (for Chameleon, the original vqgan.ckpt)."
        )


FREEZABLE_PARTS = ("encoder", "quantizer", "decoder")
"""The parts of a tokenizer that `freeze` (and `training.freeze`) can keep as they are."""


def image_size_for(config: VQTokenizerConfig) -> dict:
    """The keywords a backbone's builders take beyond the widths: `image_size` for a backbone that
    `needs_image_size`."""
    return {"image_size": config.image_size} if config.backbone_config.needs_image_size else {}


class VQTokenizerPreTrainedModel(SafeHubMixin, PreTrainedModel):
    """Base of every vqtok tokenizer: encoder -> quantizer -> decoder.

    `encode` and `decode` are deterministic; `forward` is the training path and returns every named
    loss term and statistic. Saving and loading (safetensors only) and publishing with a model card
    come from `SafeHubMixin`. A backbone that recomputes its blocks (`gradient_checkpointing`) is
    switched on by its config or by `gradient_checkpointing_enable()`.
    """

    config_class = VQTokenizerConfig
    base_model_prefix = "vqtok"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    frozen_parts: tuple[str, ...] = ()
    """The parts `freeze` keeps as they are."""

    def __init__(self, config: VQTokenizerConfig):
        super().__init__(config)
        self.encoder = self.build_encoder(config)
        self.quantizer: Quantizer = self.build_quantizer(config)
        self.decoder = self.build_decoder(config)
        self.regularizers = build_regularizers(config.regularizers)
        self.post_init()

    # --- hooks a type may override ------------------------------------------------------------
    def build_encoder(self, config: VQTokenizerConfig) -> nn.Module:
        """The backbone's encoder, images `[B, C, H, W]` -> latents `[B, D, *token_grid]`."""
        return config.backbone_config.build_encoder(config.in_channels, config.latent_dim, **image_size_for(config))

    def build_quantizer(self, config: VQTokenizerConfig) -> Quantizer:
        """`config.quantizer_class` with the codebook size, the latent dimension and every option it
        declares, from the config's fields."""
        if config.quantizer_class is None:
            raise TypeError(f"{type(config).__name__} names no quantizer; use a tokenizer type's config")
        return config.quantizer_class(codebook_size=config.codebook_size, dim=config.latent_dim, **config.quantizer_kwargs())

    def build_decoder(self, config: VQTokenizerConfig) -> nn.Module:
        """The backbone's decoder, latents `[B, D, h, w]` -> `[B, C, H, W]`; its output is what
        `reconstruction_losses` scores and `images_from_decoder_output` turns into images.
        A config with `has_decoder=False` (an encoder-only import) gets `MissingDecoder`."""
        if not config.has_decoder:
            return MissingDecoder()
        return config.backbone_config.build_decoder(config.latent_dim, config.in_channels, **image_size_for(config))

    def images_from_decoder_output(self, output: torch.Tensor) -> torch.Tensor:
        """The images `decode` returns, in [-1, 1], from the decoder's output (clamped by default)."""
        return output.clamp(-1.0, 1.0)

    def check_images(self, pixel_values: torch.Tensor) -> None:
        """Raise `TypeError`/`ValueError` naming what is wrong with images for `encode` / `forward`
        (shape, dtype, channels, size, finiteness), before any state changes. A type whose images
        carry more rules (categorical grey levels) extends this."""
        check_pixel_values(pixel_values, self.config.in_channels, self.config.downsampling_factor,
                           exact_size=self.config.image_size if self.config.is_sequence else None)

    def reconstruction_losses(
        self, reconstruction: torch.Tensor, pixel_values: torch.Tensor, quantized: QuantizerOutput
    ) -> dict[str, torch.Tensor]:
        """The reconstruction objective's named terms: `reconstruction_loss_weight` x the pixel MSE
        (in fp32). A type whose method trains with another likelihood overrides this."""
        mse = F.mse_loss(reconstruction.float(), pixel_values.float())
        return {"reconstruction_loss": self.config.reconstruction_loss_weight * mse}

    def build_optimizer(self, learning_rate: float, weight_decay: float = 0.0,
                        betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
        """The optimizer the trainer steps: AdamW (with `betas`) over every parameter that takes a
        gradient. Weight decay applies to the weight matrices and convolution kernels outside the
        quantizer only, never to biases, norms or codebooks; the quantizer's `parameter_groups` learn
        in groups of their own, at their multiple of the learning rate."""
        own = [[p for p in group.params if p.requires_grad] for group in self.quantizer.parameter_groups()]
        chosen = {id(p) for params in own for p in params}
        others = [p for p in self.parameters() if p.requires_grad and id(p) not in chosen]
        if weight_decay:
            quantizer = {id(p) for p in self.quantizer.parameters()}
            decayed = [p for p in others if p.ndim >= 2 and id(p) not in quantizer]
            kept = {id(p) for p in decayed}
            groups = [{"params": decayed, "weight_decay": weight_decay},
                      {"params": [p for p in others if id(p) not in kept], "weight_decay": 0.0}]
        else:  # one group, as before decay had groups: checkpoints of earlier runs keep resuming
            groups = [{"params": others, "weight_decay": 0.0}]
        groups += [{"params": params, "lr": learning_rate * group.lr_multiplier, "weight_decay": 0.0}
                   for params, group in zip(own, self.quantizer.parameter_groups())]
        return torch.optim.AdamW([group for group in groups if group["params"]], lr=learning_rate, betas=betas)

    def freeze(self, parts) -> None:
        """Keep `parts` of the tokenizer (any of "encoder", "quantizer", "decoder") exactly as they are
        through training: their parameters take no gradient and they stay in evaluation mode whatever
        `train()` is called with, so a frozen quantizer updates no statistic, code, restart or
        schedule. With the encoder and the quantizer frozen, every image keeps its ids."""
        parts = tuple(parts)
        unknown = [part for part in parts if part not in FREEZABLE_PARTS]
        if unknown or len(set(parts)) != len(parts):
            raise ValueError(f"freeze takes distinct parts among {list(FREEZABLE_PARTS)}, got {list(parts)}")
        for part in parts:
            getattr(self, part).requires_grad_(False)
        self.frozen_parts = tuple(sorted(set(self.frozen_parts) | set(parts), key=FREEZABLE_PARTS.index))
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for part in self.frozen_parts:
            getattr(self, part).eval()
        return self

    def _init_weights(self, module):
        # PyTorch's default initialisation is kept; quantizers initialise their own codebooks.
        pass

    # --- public API ---------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """Deterministic token ids `[B, H/f, W/f]` (`[B, H/f, W/f, R]` with R codes per position;
        `torch.long`, in [0, K)) for images in [-1, 1]; a 1-D backbone's are `[B, L]` (`[B, L, R]`)."""
        self.check_images(pixel_values)
        latents = self.encoder(pixel_values.to(self.dtype))
        return self.quantizer.select(latents)

    @torch.no_grad()
    def decode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Images `[B, C, h*f, w*f]` in [-1, 1] for token ids `[B, h, w]` or `[B, h*w]` (with R codes per
        position: `[B, h, w, R]` or `[B, h*w*R]`); for a 1-D backbone, ids `[B, L]` (`[B, L, R]` or
        `[B, L*R]`) give images of the config's size."""
        grid_ids = check_token_grid(input_ids, self.config.token_grid, self.config.codes_per_position)
        latents = self.quantizer.embed(grid_ids.to(self.device))
        return self.images_from_decoder_output(self.decoder(latents.to(self.dtype)))

    def forward(self, pixel_values: torch.Tensor, return_dict: bool = True) -> VQTokenizerOutput:
        """Training path: stochastic where the quantizer is. The loss is the sum of the
        reconstruction objective's terms, the quantizer's terms and every regulariser's terms.

        When the latents are not finite on some process (`quantizer_output.skipped_update`), the
        quantizer leaves its state as it was, the regularisers are not run (their state and terms
        stay out of this step) and the loss is NaN: the trainer skips such a step."""
        self.check_images(pixel_values)
        latents = self.encoder(pixel_values)
        quantized = self.quantizer(latents)
        reconstruction = self.decoder(quantized.quantized)

        losses = dict(self.reconstruction_losses(reconstruction, pixel_values, quantized))
        merge_named_terms(losses, quantized.losses, type(self.quantizer).__name__)
        stats = dict(quantized.stats)
        if len(self.regularizers) and not quantized.skipped_update:
            inputs = RegularizerInputs(pixel_values, latents, quantized, reconstruction, self.quantizer)
            for name, regularizer in self.regularizers.items():
                terms = regularizer(inputs)
                merge_named_terms(losses, terms.losses, f"regulariser {name!r}")
                merge_named_terms(stats, terms.stats, f"regulariser {name!r}")

        output = VQTokenizerOutput(
            loss=sum(losses.values()),
            losses=losses,
            stats=stats,
            reconstruction=reconstruction,
            input_ids=quantized.indices,
            quantized=quantized.quantized,
        )
        return output if return_dict else output.to_tuple()
